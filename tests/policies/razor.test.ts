/** RazorAttention: retrieval-head choice, exact keep sets, the compensation token, and a tiny-model run. */
import { describe, expect, it } from 'vitest';
import type { KVCacheStore } from '../../engine/cache/store.ts';
import { razorRetrievalHeads, reduceToKvHeads, topHeadShare } from '../../engine/policies/razor.ts';
import { createPolicy } from '../../engine/policies/spec.ts';
import { fillCache } from '../engine/helpers/cache.ts';
import { calibratedContext, calibratedRun, handCalibration, tinyCalibration } from './helpers/calibration.ts';
import { cacheOf, DIMS, keepOf, prefillObservation, range, stepObservation } from './helpers/policy.ts';

// Layer 1, query head 1 (KV head 0) is a strong induction head; nothing echoes.
const calibration = handCalibration(DIMS, {
  echo: [
    [0.01, 0.02, 0.01, 0.0],
    [0.0, 0.03, 0.02, 0.01],
  ],
  induction: [
    [0.05, 0.01, 0.02, 0.04],
    [0.1, 0.9, 0.2, 0.3],
  ],
});
const context = calibratedContext(calibration);
const noPrefill = prefillObservation(0);

function key(cache: KVCacheStore, l: number, h: number, i: number): number {
  return cache.keys(l, h)[i * DIMS.headDim];
}
function value(cache: KVCacheStore, l: number, h: number, i: number): number {
  return cache.values(l, h)[i * DIMS.headDim];
}

describe('razor: retrieval heads', () => {
  it('reduces query heads to KV heads (max or mean) and takes round(N·pct) heads of each score', () => {
    expect(reduceToKvHeads(calibration.razor!.induction, 2, 'max')).toEqual([
      [0.05, 0.04],
      [0.9, 0.3],
    ]);
    expect(reduceToKvHeads(calibration.razor!.induction, 2, 'mean')[1]).toEqual([0.5, 0.25]);
    // Golden-Stick's rounding: 16 KV heads → 1 % selects none, 14 % selects 2
    const sixteen = Array.from({ length: 8 }, (_, l) => [l, 10 + l]);
    expect(topHeadShare(sixteen, 0.01)).toEqual([]);
    expect(topHeadShare(sixteen, 0.14)).toEqual([15, 13]);
    // 4 KV heads here: induction 25 % → 1 head (L1/kv0); echo 50 % → 2 heads (L1/kv0 and, tie-broken, L0/kv0)
    expect(razorRetrievalHeads(calibration.razor!, 2, 0.01, 0.25, 'max')).toEqual([
      [false, false],
      [true, false],
    ]);
    expect(razorRetrievalHeads(calibration.razor!, 2, 0.5, 0.25, 'max')).toEqual([
      [true, false],
      [true, false],
    ]);
  });
});

describe('razor: keep sets and the compensation token', () => {
  it('retrieval heads keep all; others keep sinks + recent and one mean entry with count N_D (bias log N_D)', () => {
    const cache = cacheOf(10);
    const policy = createPolicy('razor:induction_pct=0.25,sinks=2,recent=3', context);
    const decision = policy.afterPrefill(cache, noPrefill);
    expect(decision.layers![1]![0]).toBeNull(); // the retrieval head
    for (const [l, h] of [
      [0, 0],
      [0, 1],
      [1, 1],
    ]) {
      expect(keepOf(decision, l, h)).toEqual([0, 1, 7, 8, 9]);
      expect(decision.layers![l]![h]!.merge).toEqual([{ members: [2, 3, 4, 5, 6], weights: [0.2, 0.2, 0.2, 0.2, 0.2], anchor: 2, count: 5 }]);
    }
    cache.apply(decision);
    expect(cache.length(1, 0)).toBe(10);
    expect(Array.from(cache.tokens(0, 1))).toEqual([0, 1, 2, 7, 8, 9]);
    expect(Array.from(cache.counts(0, 1))).toEqual([1, 1, 5, 1, 1, 1]);
    expect(cache.origin(0, 1, 2)).toEqual([2, 3, 4, 5, 6]);
    // fillCache: key = token + 0.25 + 100·kvHead, value = token + 0.5 → means of tokens 2..6
    expect(key(cache, 0, 1, 2)).toBeCloseTo(4.25 + 100, 5);
    expect(value(cache, 0, 1, 2)).toBeCloseTo(4.5, 5);
    expect(key(cache, 0, 0, 2)).toBeCloseTo(4.25, 5);
    // bias log 5 on the compensation slot (layer 0 feed, query head 2 → KV head 1)
    const feed = cache.buildFeeds(1)[0];
    const rowLength = feed.length + 1;
    expect(feed.bias[2 * rowLength + 2]).toBeCloseTo(Math.log(5), 6);
    expect(feed.bias[2 * rowLength + 3]).toBe(0);

    // one more token: the oldest recent entry (token 7) folds into the running mean, weights 5/6, 1/6
    fillCache(cache, 1);
    const step = policy.afterStep(cache, stepObservation(null));
    expect(keepOf(step, 0, 0)).toEqual([0, 1, 4, 5, 6]);
    expect(step.layers![0]![0]!.merge![0].members).toEqual([2, 3]);
    expect(step.layers![0]![0]!.merge![0].weights[0]).toBeCloseTo(5 / 6, 12);
    expect(step.layers![0]![0]!.merge![0].count).toBe(6);
    cache.apply(step);
    expect(Array.from(cache.tokens(0, 0))).toEqual([0, 1, 2, 8, 9, 10]);
    expect(cache.origin(0, 0, 2)).toEqual([2, 3, 4, 5, 6, 7]);
    expect(key(cache, 0, 0, 2)).toBeCloseTo(4.75, 5); // exact mean of tokens 2..7
    expect(value(cache, 0, 0, 2)).toBeCloseTo(5, 5);
    expect(cache.length(1, 0)).toBe(11);
    // within budget (one entry between sinks and recent is its own mean): no change
    expect(policy.afterStep(cache, stepObservation(null)).layers).toBeNull();
  });

  it('plain gives the mean entry count 1 (no bias); none just evicts', () => {
    const plain = cacheOf(10);
    plain.apply(createPolicy('razor:induction_pct=0.25,sinks=2,recent=3,compensation=plain', context).afterPrefill(plain, noPrefill));
    expect(Array.from(plain.counts(0, 0))).toEqual([1, 1, 1, 1, 1, 1]);
    expect(plain.origin(0, 0, 2)).toEqual([2, 3, 4, 5, 6]);
    expect(key(plain, 0, 0, 2)).toBeCloseTo(4.25, 5);
    expect(plain.buildFeeds(1)[0].bias[2]).toBe(0);
    const none = cacheOf(10);
    const decision = createPolicy('razor:induction_pct=0.25,sinks=2,recent=3,compensation=none', context).afterPrefill(none, noPrefill);
    expect(decision.layers![0]![0]).toEqual({ keep: [0, 1, 7, 8, 9] });
    none.apply(decision);
    expect(Array.from(none.tokens(0, 0))).toEqual([0, 1, 7, 8, 9]);
  });

  it('a ratio recent window grows with the tokens, never below recent_min', () => {
    const policy = createPolicy('razor:induction_pct=0.25,sinks=1,recent=0.5,recent_min=3', context);
    expect(keepOf(policy.afterPrefill(cacheOf(10), noPrefill), 0, 0)).toEqual([0, ...range(5, 10)]); // R = max(3, 5)
    expect(keepOf(policy.afterPrefill(cacheOf(6), noPrefill), 0, 0)).toEqual([0, 3, 4, 5]); // R = max(3, 3)
    expect(policy.afterPrefill(cacheOf(5), noPrefill).layers).toBeNull(); // R = max(3, 2) = 3: one entry between is its own mean
  });

  it('refuses to start without calibration, with a message that says how to get one', () => {
    expect(() => createPolicy('razor', { ...context, calibration: null })).toThrow(/razor needs calibration data \(razor\)/);
  });
});

describe('razor on the tiny fixture', () => {
  it('prefill 100 + 20 steps: non-retrieval heads hold sinks + compensation + recent; snapshot/restore is exact', async () => {
    const cal = await tinyCalibration();
    const retrieval = razorRetrievalHeads(cal.razor!, 2, 0.01, 0.14, 'max');
    expect(retrieval.flat().filter(Boolean).length).toBe(1); // round(4 · 0.14) = 1 KV head
    const session = await calibratedRun('razor:recent=16', (step, l, h) => (retrieval[l][h] ? 121 : 4 + 1 + 16), cal);
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        if (retrieval[l][h]) {
          expect(session.cache.length(l, h)).toBe(120);
          continue;
        }
        expect(session.cache.length(l, h)).toBe(21);
        expect(session.cache.counts(l, h)[4]).toBe(120 - 4 - 16); // the compensation token stands for the rest
        expect(session.cache.origin(l, h, 4)).toEqual(range(4, 104));
      }
    }
  });
});
