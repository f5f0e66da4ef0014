/** SnapKV (+ PyramidKV budgets): window votes, pooling, GQA, prefill-only compression. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePolicySpec } from '../../engine/policies/spec.ts';
import { snapkvBudgets, snapkvDecision } from '../../engine/policies/snapkv.ts';
import { cacheOf, DIMS, integrationRun, keepOf, keptOrAll, policyFor, prefillObservation, range, stepObservation } from './helpers/policy.ts';

/**
 * Window rows for a cache of n entries: `votes(l, qh)` gives the prefix votes (split evenly over
 * `rows` rows); the window part gets causal filler.
 */
function windowOf(n: number, rows: number, votes: (l: number, qh: number) => number[]) {
  return Array.from({ length: DIMS.nLayers }, (_, l) =>
    Array.from({ length: DIMS.nHeads }, (_, qh) => {
      const v = votes(l, qh);
      return Array.from({ length: rows }, (_, r) => range(0, n).map((j) => (j < n - rows ? v[j] / rows : j <= n - rows + r ? 0.1 : 0)));
    }),
  );
}

const same = (v: number[]) => () => v;

describe('snapkv policy', () => {
  it('parses its spec (floats, enums, bool)', () => {
    expect(parsePolicySpec('snapkv:budget=256,window=32,kernel=5,pool=max').params).toEqual({
      budget: 256,
      window: 32,
      kernel: 5,
      pool: 'max',
      gqa: 'mean',
      pyramid: false,
      beta: 20,
    });
    expect(parsePolicySpec('snapkv:budget=0.3,pyramid=true,beta=10').params).toMatchObject({ budget: 0.3, pyramid: true, beta: 10 });
    expect(policyFor('snapkv:window=16').needs.prefillWindow).toBe(16);
  });

  it('keeps the top C − W prefix entries by pooled window votes plus the window', () => {
    const votes = [0, 0, 0, 2, 0, 0, 0, 1];
    const obs = prefillObservation(10, { windowRows: windowOf(10, 2, same(votes)) });
    // kernel 1: votes themselves → 3, 7, then the oldest zero
    expect(keepOf(policyFor('snapkv:budget=5,window=2,kernel=1').afterPrefill(cacheOf(10), obs), 0, 0)).toEqual([0, 3, 7, 8, 9]);
    // kernel 3 avg: [0, 0, 2/3, 2/3, 2/3, 0, 1/3, 1/3] → neighbours of the peak survive with it
    const pooled = policyFor('snapkv:budget=5,window=2,kernel=3').afterPrefill(cacheOf(10), obs);
    expect(keepOf(pooled, 1, 1)).toEqual([2, 3, 4, 8, 9]);
    expect(Array.from(pooled.layers![0]![0]!.scores!).slice(0, 8)).toEqual([0, 0, 2 / 3, 2 / 3, 2 / 3, 0, 1 / 3, 1 / 3].map(Math.fround));
  });

  it('avg and max pooling differ', () => {
    const obs = prefillObservation(10, { windowRows: windowOf(10, 2, same([3, 0, 0, 0, 0, 1, 1, 1])) });
    // avg (zero padding): [1, 1, 0, 0, 1/3, 2/3, 1, 2/3]; max: [3, 3, 0, 0, 1, 1, 1, 1]
    expect(keepOf(policyFor('snapkv:budget=5,window=2,kernel=3,pool=avg').afterPrefill(cacheOf(10), obs), 0, 0)).toEqual([0, 1, 6, 8, 9]);
    expect(keepOf(policyFor('snapkv:budget=5,window=2,kernel=3,pool=max').afterPrefill(cacheOf(10), obs), 0, 0)).toEqual([0, 1, 4, 8, 9]);
  });

  it('GQA: mean vs max over the query heads of a KV head', () => {
    const votes = (l: number, qh: number) => (qh % 2 === 0 ? [1, 0.9, 0, 0, 0, 0] : [0, 0.9, 0, 0, 0, 0]);
    const obs = prefillObservation(8, { windowRows: windowOf(8, 2, votes) });
    expect(keepOf(policyFor('snapkv:budget=3,window=2,kernel=1,gqa=mean').afterPrefill(cacheOf(8), obs), 0, 0)).toEqual([1, 6, 7]);
    expect(keepOf(policyFor('snapkv:budget=3,window=2,kernel=1,gqa=max').afterPrefill(cacheOf(8), obs), 0, 0)).toEqual([0, 6, 7]);
  });

  it('short prompts are unchanged; decoding appends; C ≤ W keeps the last C', () => {
    const obs = prefillObservation(6, { windowRows: windowOf(6, 2, same([1, 1, 1, 1])) });
    expect(policyFor('snapkv:budget=6,window=2').afterPrefill(cacheOf(6), obs).layers).toBeNull();
    expect(policyFor('snapkv:budget=2,window=2').afterStep(cacheOf(50), stepObservation(null)).layers).toBeNull();
    const tiny = prefillObservation(6, { windowRows: windowOf(6, 4, same([1, 1])) });
    expect(keepOf(policyFor('snapkv:budget=3,window=4').afterPrefill(cacheOf(6), tiny), 0, 0)).toEqual([3, 4, 5]);
    expect(keepOf(policyFor('snapkv:budget=1,window=4').afterPrefill(cacheOf(6), tiny), 0, 0)).toEqual([5]);
  });

  it('ratio budget of the prompt length', () => {
    const obs = prefillObservation(10, { windowRows: windowOf(10, 2, same([0, 0, 0, 2, 0, 0, 0, 1])) });
    expect(keepOf(policyFor('snapkv:budget=0.5,window=2,kernel=1').afterPrefill(cacheOf(10), obs), 0, 0)).toEqual([0, 3, 7, 8, 9]);
  });

  it('PyramidKV: per-layer budgets, bottom larger, only for long prompts', () => {
    expect(snapkvBudgets(2, 6, 2, true, 20, 10)).toEqual([9, 3]);
    expect(snapkvBudgets(2, 6, 2, true, 20, 7)).toEqual([6, 6]); // prompt < 2(C − W): uniform, as the reference
    expect(snapkvBudgets(8, 128, 32, false, 20, 1000)).toEqual(new Array(8).fill(128));
    const obs = prefillObservation(10, { windowRows: windowOf(10, 2, same([0, 0, 0, 2, 0, 0, 0, 1])) });
    const decision = policyFor('snapkv:budget=6,window=2,kernel=1,pyramid=true').afterPrefill(cacheOf(10), obs);
    expect(keepOf(decision, 0, 0)).toEqual([0, 1, 2, 3, 4, 5, 7, 8, 9]);
    expect(keepOf(decision, 1, 0)).toEqual([3, 8, 9]);
  });

  it('property: keep = min(n, C), window kept, ascending', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 40 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 30 }),
        fc.integer({ min: 1, max: 7 }),
        fc.array(fc.float({ min: 0, max: 1, noNaN: true }), { minLength: 40, maxLength: 40 }),
        (n, w, c, k, noise) => {
          const rows = Math.min(w, n);
          const obs = prefillObservation(n, { windowRows: windowOf(n, rows, (l, qh) => noise.map((x, j) => noise[(j + qh) % 40] * x)) });
          const decision = snapkvDecision(cacheOf(n), obs, { budgets: [c, c], kernel: k, pool: 'avg', gqa: 'mean' });
          const keep = keptOrAll(decision, 1, 1, n);
          expect(keep.length).toBe(Math.min(n, c));
          for (let i = 1; i < keep.length; i++) expect(keep[i]).toBeGreaterThan(keep[i - 1]);
          for (let i = Math.max(0, n - Math.min(rows, c)); i < n; i++) expect(keep).toContain(i);
        },
      ),
    );
  });

  it('integration: tiny model, budget after prefill then append; pyramid; restore reproduces', async () => {
    await integrationRun('snapkv:budget=40,window=8,kernel=5,pool=max', (s) => 40 + s + 1);
    await integrationRun('snapkv:budget=40,window=8,pyramid=true', (s) => 70 + s + 1);
  });
});
