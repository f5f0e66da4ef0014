/**
 * The stored fixture trace (tests/fixtures/traces/tiny-h2o-switch.json) still is what the engine
 * records: same tokens and the same cache after every event. When the engine's decisions change on
 * purpose, regenerate it: npx tsx tests/fixtures/traces/record.ts
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readTrace } from '../../engine/trace/read.ts';
import { ReplayTimeline } from '../../engine/trace/replay-timeline.ts';
import { packCacheMap } from '../../src/lib/worker/pack.ts';
import { FIXTURE_TRACE, recordFixtureTrace } from '../fixtures/traces/record.ts';

describe('fixture trace', () => {
  it('matches a fresh recording (tokens and cache maps after every event)', async () => {
    const stored = readTrace(readFileSync(FIXTURE_TRACE, 'utf8'));
    const fresh = readTrace(await recordFixtureTrace());
    const regenerate = 'the engine records something else now: regenerate with `npx tsx tests/fixtures/traces/record.ts`';
    expect(fresh.events.map((e) => (e.kind === 'step' ? e.token.id : e.kind)), regenerate).toEqual(stored.events.map((e) => (e.kind === 'step' ? e.token.id : e.kind)));
    const dims = { layers: stored.header.model.layers, kvHeads: stored.header.model.kvHeads };
    const a = new ReplayTimeline(dims);
    const b = new ReplayTimeline(dims);
    for (let i = 1; i <= stored.events.length; i++) {
      expect(packCacheMap(b.at(fresh.events, i), null).codes, `${regenerate} (event ${i - 1})`).toEqual(packCacheMap(a.at(stored.events, i), null).codes);
    }
    expect(readFileSync(FIXTURE_TRACE).length, 'the fixture stays small').toBeLessThan(80_000);
  });
});
