/**
 * What the trace learns about a merge (issue 8 §2: the merge view renders from the trace alone):
 * per merged entry its count (the log-count bias), each member's first token and the cosine of
 * each member's key to the merged key; and the per-layer measures a decision carries. Both survive
 * a trace file's round trip through engine/trace/read.ts.
 */
import { describe, expect, it } from 'vitest';
import { KVCacheStore } from '../../engine/cache/store.ts';
import { PolicyDecisionError } from '../../engine/errors.ts';
import { Session } from '../../engine/session.ts';
import { readTrace } from '../../engine/trace/read.ts';
import { exportTraceJson } from '../../engine/trace/schema.ts';
import { fillCache, smallDims } from './helpers/cache.ts';
import { fixtureModel, tokenSequence } from './helpers/fixture.ts';

const dims = smallDims(); // 2 layers, 2 KV heads, head dim 4

/** One head whose keys are given rows; other heads as fillCache makes them. */
function cacheWithKeys(rows: number[][]): KVCacheStore {
  const cache = fillCache(new KVCacheStore(dims), rows.length);
  const keys = cache.keys(0, 0) as unknown as Float32Array;
  rows.forEach((row, i) => keys.set(row, i * dims.headDim));
  return cache;
}

describe('applied merges for the trace', () => {
  it('record the count, member tokens and member-to-merged cosine', () => {
    const cache = cacheWithKeys([
      [1, 0, 0, 0],
      [0, 1, 0, 0],
      [1, 1, 0, 0],
      [0, 0, 1, 0],
    ]);
    const applied = cache.apply({
      layers: [[{ keep: [1, 3], merge: [{ members: [2, 0], weights: [0.5, 0.5], anchor: 0 }] }, null], null],
    });
    const [merged] = applied.heads[0].merged;
    // merged key = ½(1,1,0,0) + ½(1,0,0,0) = (1, ½, 0, 0)
    const norm = Math.hypot(1, 0.5);
    expect(merged.into).toBe(0);
    expect(merged.origins).toEqual([0, 2]);
    expect(merged.count).toBe(2);
    expect(merged.memberTokens).toEqual([2, 0]);
    expect(merged.similarity![0]).toBeCloseTo(1.5 / (Math.SQRT2 * norm), 6);
    expect(merged.similarity![1]).toBeCloseTo(1 / norm, 6);
    expect(cache.keys(0, 0).slice(0, 4)).toEqual(Float32Array.from([1, 0.5, 0, 0]));
  });

  it('record the count the method gave (1 = no bias) and the similarity to keys it computed', () => {
    const cache = cacheWithKeys([
      [1, 0, 0, 0],
      [0, 1, 0, 0],
      [0, 0, 1, 0],
    ]);
    const applied = cache.apply({
      layers: [[{ keep: [2], merge: [{ members: [0, 1], weights: [0.5, 0.5], count: 1, keys: Float32Array.from([0, 1, 0, 0]) }] }, null], null],
    });
    const [merged] = applied.heads[0].merged;
    expect(merged.count).toBe(1);
    expect(merged.similarity).toEqual([0, 1]);
  });
});

describe('decision measures', () => {
  it('are copied into the applied decision, one number per layer', () => {
    const cache = fillCache(new KVCacheStore(dims), 3);
    const applied = cache.apply({ layers: null, measures: { layer_similarity: [Number.NaN, 0.75] } });
    expect(applied.measures).toEqual({ layer_similarity: [Number.NaN, 0.75] });
  });

  it('with the wrong number of layers are refused before anything changes', () => {
    const cache = fillCache(new KVCacheStore(dims), 3);
    expect(() => cache.apply({ layers: [[{ keep: [0] }, null], null], measures: { layer_similarity: [1] } })).toThrow(PolicyDecisionError);
    expect(cache.length(0, 0)).toBe(3);
  });
});

describe('a trace file keeps them', () => {
  it('merges of a real run (D2O with the log-count bias) read back with count, member tokens and similarity', async () => {
    const model = await fixtureModel();
    const session = new Session(model, { policy: 'd2o:heavy=6,recent=6,merge_bias=log_count', sampler: { seed: 1, temperature: 1 } });
    await session.prefill([1, ...tokenSequence(39, 4)]);
    for (let i = 0; i < 4; i++) await session.step();
    const read = readTrace(exportTraceJson(session.trace));
    const merges = read.events.flatMap((e) => ('decision' in e && e.decision ? e.decision.heads.flatMap((h) => h.merged) : []));
    expect(merges.length).toBeGreaterThan(0);
    for (const m of merges) {
      expect(m.memberTokens).toHaveLength(m.weights.length);
      expect(m.similarity).toHaveLength(m.weights.length);
      for (const s of m.similarity!) expect(Math.abs(s)).toBeLessThanOrEqual(1 + 1e-6);
      expect(m.count).toBe(m.origins.length);
    }
  });
});
