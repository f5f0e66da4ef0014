/** H2O: accumulated attention, heavy + recent, sum|mean, GQA, state round-trip. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePolicySpec } from '../../engine/policies/spec.ts';
import { fillCache } from '../engine/helpers/cache.ts';
import { cacheOf, DIMS, integrationRun, keepOf, keptOrAll, perQueryHead, policyFor, prefillObservation, range, stepObservation } from './helpers/policy.ts';

/** Prefill sums where query head qh of KV head h gets `rows[h][qh % 2]`; other layer all zeros. */
function sumsFor(rows: number[][][], n: number) {
  return perQueryHead(DIMS, (l, qh) => (l === 0 ? rows[Math.floor(qh / 2)][qh % 2] : new Array(n).fill(0)));
}

describe('h2o policy', () => {
  it('parses specs with absolute and ratio budgets and enums', () => {
    expect(parsePolicySpec('h2o:heavy=64,recent=32').params).toEqual({ heavy: 64, recent: 32, accumulate: 'sum', gqa: 'sum' });
    expect(parsePolicySpec('h2o:heavy=0.1,recent=.05,accumulate=mean,gqa=max').params).toEqual({ heavy: 0.1, recent: 0.05, accumulate: 'mean', gqa: 'max' });
    expect(() => parsePolicySpec('h2o:accumulate=avg')).toThrow('accumulate must be one of sum, mean');
  });

  it('prefill: keeps the top-heavy older entries by summed attention plus the recent ones', () => {
    const cache = cacheOf(8);
    const rows = [
      [
        [5, 1, 0, 4, 0, 0, 1, 1],
        [0, 1, 3, 0, 0, 0, 1, 1],
      ],
      [
        [0, 0, 0, 0, 0, 9, 1, 1],
        [0, 0, 0, 0, 8, 0, 1, 1],
      ],
    ];
    const decision = policyFor('h2o:heavy=2,recent=2').afterPrefill(cache, prefillObservation(8, { sums: sumsFor(rows, 8) }));
    expect(keepOf(decision, 0, 0)).toEqual([0, 3, 6, 7]); // sums 5,2,3,4,0,0 → 0 and 3
    expect(keepOf(decision, 0, 1)).toEqual([4, 5, 6, 7]);
    expect(keepOf(decision, 1, 0)).toEqual([0, 1, 6, 7]); // all zero: ties keep the older
    expect(Array.from(decision.layers![0]![0]!.scores!)).toEqual([5, 2, 3, 4, 0, 0, 2, 2]);
  });

  it('GQA reduction: sum ranks like mean, max differs', () => {
    const rows = [
      [
        [3, 0, 2.5, 0, 0],
        [0, 2, 2.5, 0, 0],
      ],
      [
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
      ],
    ];
    const sums = sumsFor(rows, 5);
    expect(keepOf(policyFor('h2o:heavy=1,recent=2,gqa=sum').afterPrefill(cacheOf(5), prefillObservation(5, { sums })), 0, 0)).toEqual([2, 3, 4]);
    expect(keepOf(policyFor('h2o:heavy=1,recent=2,gqa=mean').afterPrefill(cacheOf(5), prefillObservation(5, { sums })), 0, 0)).toEqual([2, 3, 4]);
    expect(keepOf(policyFor('h2o:heavy=1,recent=2,gqa=max').afterPrefill(cacheOf(5), prefillObservation(5, { sums })), 0, 0)).toEqual([0, 3, 4]);
  });

  it('accumulate=mean divides by the number of queries that could see the entry', () => {
    // n = 8: entry k was seen by 8 − k prompt rows. 4/8 = 0.5 < 2/3 ≈ 0.67
    const rows = [
      [
        [4, 0, 0, 0, 0, 2, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
      ],
      [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
      ],
    ];
    const sums = sumsFor(rows, 8);
    expect(keepOf(policyFor('h2o:heavy=1,recent=2').afterPrefill(cacheOf(8), prefillObservation(8, { sums })), 0, 0)).toEqual([0, 6, 7]);
    const mean = policyFor('h2o:heavy=1,recent=2,accumulate=mean').afterPrefill(cacheOf(8), prefillObservation(8, { sums }));
    expect(keepOf(mean, 0, 0)).toEqual([5, 6, 7]);
    expect(mean.layers![0]![0]!.scores![5]).toBeCloseTo(2 / 3, 6);
  });

  it('decode: scores accumulate over steps, evicted scores are dropped, order preserved', () => {
    const cache = cacheOf(6);
    const policy = policyFor('h2o:heavy=1,recent=2');
    const rows = [
      [
        [1, 0.5, 0.9, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
      ],
      [
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
      ],
    ];
    const first = policy.afterPrefill(cache, prefillObservation(6, { sums: sumsFor(rows, 6) }));
    expect(keepOf(first, 0, 0)).toEqual([0, 4, 5]);
    cache.apply(first);
    fillCache(cache, 1); // token 6 enters every head
    // step attention of layer 0 query head 0 over [tok0, tok4, tok5, tok6]
    const attention = perQueryHead(DIMS, (l, qh) => (l === 0 && qh === 0 ? [0, 2, 0, 0] : [0.25, 0.25, 0.25, 0.25]));
    const state = JSON.parse(JSON.stringify(policy.getState()));
    const second = policy.afterStep(cache, stepObservation(attention));
    expect(keepOf(second, 0, 0)).toEqual([1, 2, 3]); // tok4 (2) beats tok0 (1); tok2's 0.9 was dropped
    expect(Array.from(second.layers![0]![0]!.scores!)).toEqual([1.25, 2.25, 0.25, 0.25]); // query head 1 adds 0.25 each
    cache.apply(second);
    expect(Array.from(cache.tokens(0, 0))).toEqual([4, 5, 6]);

    // state round-trip: a fresh policy restored from the JSON state decides identically
    const restored = policyFor('h2o:heavy=1,recent=2');
    restored.setState(state);
    const cache2 = cacheOf(6);
    cache2.apply(first);
    fillCache(cache2, 1);
    expect(restored.afterStep(cache2, stepObservation(attention))).toEqual(second);
  });

  it('cache within the budget is kept whole; ratio budgets resolve against the prompt; budget 1', () => {
    const zeros = perQueryHead(DIMS, () => new Array(8).fill(0));
    const within = policyFor('h2o:heavy=4,recent=4').afterPrefill(cacheOf(8), prefillObservation(8, { sums: zeros }));
    expect(keepOf(within, 0, 0)).toEqual(range(0, 8));
    const ratio = policyFor('h2o:heavy=0.25,recent=0.25').afterPrefill(cacheOf(8), prefillObservation(8, { sums: zeros }));
    expect(keepOf(ratio, 1, 1)).toEqual([0, 1, 6, 7]);
    const one = policyFor('h2o:heavy=1,recent=1').afterPrefill(cacheOf(8), prefillObservation(8, { sums: zeros }));
    expect(keepOf(one, 0, 0)).toEqual([0, 7]);
  });

  it('onAttach without history keeps the oldest heavy entries plus the recent ones', () => {
    const decision = policyFor('h2o:heavy=2,recent=3').onAttach!(cacheOf(10));
    expect(keepOf(decision, 0, 1)).toEqual([0, 1, 7, 8, 9]);
  });

  it('property: keep = min(n, heavy+recent), recent always kept, ascending; state stays aligned', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 30 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.float({ min: 0, max: 1, noNaN: true }), { minLength: 64, maxLength: 64 }),
        (n, heavy, recent, noise) => {
          const cache = cacheOf(n);
          const policy = policyFor(`h2o:heavy=${heavy},recent=${recent}`);
          const sums = perQueryHead(DIMS, (l, qh) => range(0, n).map((j) => noise[(j * 7 + qh * 3 + l) % 64]));
          let decision = policy.afterPrefill(cache, prefillObservation(n, { sums }));
          for (let step = 0; step < 3; step++) {
            for (let l = 0; l < DIMS.nLayers; l++) {
              for (let h = 0; h < DIMS.nKvHeads; h++) {
                const len = cache.length(l, h);
                const keep = keptOrAll(decision, l, h, len);
                expect(keep.length).toBe(Math.min(len, heavy + recent));
                for (let i = 1; i < keep.length; i++) expect(keep[i]).toBeGreaterThan(keep[i - 1]);
                for (let i = Math.max(0, len - recent); i < len; i++) expect(keep).toContain(i);
              }
            }
            cache.apply(decision);
            fillCache(cache, 1);
            const attention = perQueryHead(DIMS, (l, qh) => range(0, cache.length(l, Math.floor(qh / 2))).map((j) => noise[(j + step + qh) % 64]));
            decision = policy.afterStep(cache, stepObservation(attention, step));
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('integration: tiny model within heavy+recent after every step; restore reproduces', async () => {
    await integrationRun('h2o:heavy=16,recent=8', () => 24);
    await integrationRun('h2o:heavy=0.1,recent=0.1,accumulate=mean,gqa=max', () => 20);
  });
});
