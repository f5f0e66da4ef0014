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
import { readTrace, TraceFormatError } from '../../engine/trace/read.ts';
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

  it('with a name that is not lower-case letters, digits and _ are refused, naming the measure', () => {
    const cache = fillCache(new KVCacheStore(dims), 3);
    for (const name of ['__proto__', 'Layer', '1st', 'a-b', '']) {
      const measures = JSON.parse(`{${JSON.stringify(name)}: [1, 2]}`) as Record<string, number[]>;
      expect(() => cache.apply({ layers: [[{ keep: [0] }, null], null], measures })).toThrow(PolicyDecisionError);
      expect(() => cache.apply({ layers: null, measures })).toThrow(JSON.stringify(name));
    }
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

describe('a trace file with a corrupt merged entry', () => {
  type Merged = { origins: number[]; weights: number[]; count?: number; memberTokens?: number[]; similarity?: number[] };
  type Raw = { events: { decision?: { heads: { merged?: Merged[] }[] } | null }[] };
  let exported: string | null = null;
  /** A real run's trace (as above), parsed, and the path of its first merged entry with more than one member. */
  async function corruptible(): Promise<{ raw: Raw; entry: Merged; path: string }> {
    if (exported === null) {
      const model = await fixtureModel();
      const session = new Session(model, { policy: 'd2o:heavy=6,recent=6,merge_bias=log_count', sampler: { seed: 1, temperature: 1 } });
      await session.prefill([1, ...tokenSequence(39, 4)]);
      exported = exportTraceJson(session.trace);
    }
    const raw = JSON.parse(exported) as Raw;
    for (const [e, event] of raw.events.entries()) {
      for (const [h, head] of (event.decision?.heads ?? []).entries()) {
        const k = (head.merged ?? []).findIndex((m) => m.weights.length > 1);
        if (k >= 0) return { raw, entry: head.merged![k], path: `events[${e}].decision.heads[${h}].merged[${k}]` };
      }
    }
    throw new Error('the run merged nothing');
  }

  const cases: [string, string, (m: Merged) => void][] = [
    ['count 0', 'count', (m) => (m.count = 0)],
    ['count not an integer', 'count', (m) => (m.count = 1.5)],
    ['a negative member token', 'memberTokens[0]', (m) => (m.memberTokens![0] = -1)],
    ['a member token not an integer', 'memberTokens[0]', (m) => (m.memberTokens![0] = 0.5)],
    ['a member token not among the origins', 'memberTokens[1]', (m) => (m.memberTokens![1] = Math.max(...m.origins) + 1)],
    ['member tokens not one per weight', 'memberTokens', (m) => m.memberTokens!.pop()],
    ['similarity not one per weight', 'similarity', (m) => m.similarity!.push(0)],
    ['a similarity above 1', 'similarity[0]', (m) => (m.similarity![0] = 1.01)],
    ['a similarity below −1', 'similarity[1]', (m) => (m.similarity![1] = -1.5)],
    ['a similarity that is not finite (null in JSON)', 'similarity[0]', (m) => ((m.similarity as unknown[])[0] = null)],
  ];
  for (const [what, field, corrupt] of cases) {
    it(`is refused naming the field: ${what}`, async () => {
      const { raw, entry, path } = await corruptible();
      expect(() => readTrace(raw)).not.toThrow();
      corrupt(entry);
      let error: unknown = null;
      try {
        readTrace(JSON.stringify(raw));
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(TraceFormatError);
      expect((error as Error).message.startsWith(`${path}.${field}:`)).toBe(true);
    });
  }
});
