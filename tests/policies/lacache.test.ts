/** LaCache: ladder shape, hand-worked ladder offsets and start-over, P2 positions, a tiny-model run. */
import { describe, expect, it } from 'vitest';
import { ladderPlan, ladderShape } from '../../engine/policies/lacache.ts';
import { createPolicy } from '../../engine/policies/spec.ts';
import { fillCache } from '../engine/helpers/cache.ts';
import { calibratedRun } from './helpers/calibration.ts';
import { cacheOf, contextFor, keepOf, prefillObservation, range, stepObservation } from './helpers/policy.ts';

describe('lacache: ladder shape', () => {
  it('before = 1 + ⌈(L−S)/(S−O)⌉, after = min(⌈S/(S−O)⌉, before); S clamped to L − 1', () => {
    // the paper's setting: 32 layers, S = 16, O = 0 → blocks of 2, keep 1: each token in 16 of 32 layers
    expect(ladderShape(32, 16, 0)).toEqual({ span: 16, overlap: 0, before: 2, after: 1, reduce: 1 });
    // 8 layers with the card default S = 16: clamped to 7 → the same ladder (each token in 4 of 8 layers)
    expect(ladderShape(8, 16, 0)).toEqual({ span: 7, overlap: 0, before: 2, after: 1, reduce: 1 });
    // L = 8, S = 2, O = 0: before = 1 + ⌈6/2⌉ = 4, after = 1 → each token in 2 of 8 layers
    expect(ladderShape(8, 2, 0)).toEqual({ span: 2, overlap: 0, before: 4, after: 1, reduce: 3 });
    // L = 8, S = 4, O = 2: before = 1 + ⌈4/2⌉ = 3, after = min(⌈4/2⌉, 3) = 2
    expect(ladderShape(8, 4, 2)).toEqual({ span: 4, overlap: 2, before: 3, after: 2, reduce: 1 });
    // L = 5, S = 4: O = 3, 2 and 1 all give before = after = 2 (nothing to drop) → the overlap is lowered to 0
    expect(ladderShape(5, 4, 3)).toEqual({ span: 4, overlap: 0, before: 2, after: 1, reduce: 1 });
  });
});

describe('lacache: ladder plans worked by hand', () => {
  // L = 4 layers, S = 2, O = 0 → before 2, after 1, reduce 1 (offset i mod 2); C = 10, start = 2.
  const shape = ladderShape(4, 2, 0);

  it('first ladder: n = 11, cursor 2 → one block [2, 3]; layer i keeps 2 + (i mod 2)', () => {
    // toReduce = 1, room = C − cursor − L = 4 → no start-over; blocks = ⌈1/1⌉ = 1
    const plan = ladderPlan(11, 10, 2, 2, 4, shape);
    expect(plan.startover).toBe(false);
    expect(plan.keep(0)).toEqual([0, 1, 2, ...range(4, 11)]);
    expect(plan.keep(1)).toEqual([0, 1, 3, ...range(4, 11)]);
    expect(plan.keep(2)).toEqual(plan.keep(0));
    expect(plan.keep(3)).toEqual(plan.keep(1));
    expect(plan.cursor).toBe(3);
    // two tokens over: blocks [2,3] and [4,5] → layer 0 keeps 2 and 4, layer 1 keeps 3 and 5
    const two = ladderPlan(12, 10, 2, 2, 4, shape);
    expect(two.keep(0)).toEqual([0, 1, 2, 4, ...range(6, 12)]);
    expect(two.keep(1)).toEqual([0, 1, 3, 5, ...range(6, 12)]);
    expect(two.cursor).toBe(4);
  });

  it('start-over: no room left past the cursor → the cache is laddered again from the sinks', () => {
    // cursor 6: room = 10 − 6 − 4 = 0 → start-over; per start-over ⌊(10−2−4)/1⌋·1 = 4 tokens
    // n = 11: remaining 1 → t = 1, before_t = 2: layer i keeps 2 + (i mod 2) of the block [2, 3]
    const once = ladderPlan(11, 10, 6, 2, 4, shape);
    expect(once.startover).toBe(true);
    expect(once.keep(0)).toEqual([0, 1, 2, ...range(4, 11)]);
    expect(once.keep(1)).toEqual([0, 1, 3, ...range(4, 11)]);
    expect(once.cursor).toBe(3);
    // n = 16: remaining 6 → t = ⌈6/4⌉ = 2, before_t = 2 + 1·1 = 3, reduce_t = 2, blocks ⌈6/2⌉ = 3;
    // layer i keeps 2 + (i mod 3) + 3b for b < 3, then 11..15
    const twice = ladderPlan(16, 10, 6, 2, 4, shape);
    expect(twice.keep(0)).toEqual([0, 1, 2, 5, 8, 11, 12, 13, 14, 15]);
    expect(twice.keep(1)).toEqual([0, 1, 3, 6, 9, 11, 12, 13, 14, 15]);
    expect(twice.keep(2)).toEqual([0, 1, 4, 7, 10, 11, 12, 13, 14, 15]);
    expect(twice.keep(3)).toEqual(twice.keep(0));
    expect(twice.cursor).toBe(5);
  });

  it('property: every plan is ascending, unique, keeps the sinks and the newest token, and fits C', () => {
    for (const [L, S, O] of [
      [4, 2, 0],
      [8, 16, 0],
      [8, 2, 0],
      [8, 4, 2],
      [6, 3, 1],
    ]) {
      const sh = ladderShape(L, S, O);
      for (let cursor = 2; cursor < 30; cursor += 3) {
        for (let n = 41; n < 120; n += 7) {
          const plan = ladderPlan(n, 40, cursor, 2, L, sh);
          for (let i = 0; i < L; i++) {
            const keep = plan.keep(i);
            expect(keep.length).toBeLessThanOrEqual(40);
            expect(keep.slice(0, 2)).toEqual([0, 1]);
            expect(keep[keep.length - 1]).toBe(n - 1);
            for (let k = 1; k < keep.length; k++) expect(keep[k]).toBeGreaterThan(keep[k - 1]);
            expect(keep.length).toBe(plan.keep(0).length); // every layer the same size
          }
        }
      }
    }
  });
});

describe('lacache: the policy (P2)', () => {
  const dims = { nLayers: 4, nKvHeads: 2, nHeads: 4, headDim: 4 };

  it('compacts to C, re-rotates kept keys to their cache index and puts the next query at the cache length', () => {
    // L = 4, S = 2, O = 0 → before 2, after 1; C = 15 (≥ start + L + before + 1 = 9; + ⌊reduce/2⌋ = 0)
    const policy = createPolicy('lacache:cache_size=15,start=2,span=2,overlap=0', contextFor(dims));
    const cache = cacheOf(16, dims);
    const decision = policy.afterPrefill(cache, prefillObservation(16));
    expect(keepOf(decision, 0, 0)).toEqual([0, 1, 2, ...range(4, 16)]);
    expect(keepOf(decision, 1, 1)).toEqual([0, 1, 3, ...range(4, 16)]);
    expect(decision.nextPosition).toBe(15);
    // every entry after the dropped one moves back by one position
    expect(decision.layers![0]![0]!.reposition).toEqual(range(4, 16).map((index) => ({ index, pos: index - 1 })));
    const before = Array.from(cache.keys(0, 0).subarray(15 * 4, 16 * 4));
    cache.apply(decision);
    expect(Array.from(cache.positions(0, 0))).toEqual(range(0, 15));
    expect(Array.from(cache.tokens(1, 0))).toEqual([0, 1, 3, ...range(4, 16)]);
    // the key of token 15 was rotated by −1 position (RoPE delta)
    expect(Array.from(cache.keys(0, 0).subarray(14 * 4, 15 * 4))).not.toEqual(before);
    expect(policy.getState()).toEqual({ cursor: 3 });

    // next token arrives at position 15 (index 15): one more block past the cursor
    fillCache(cache, 1);
    const step = policy.afterStep(cache, stepObservation(null));
    expect(keepOf(step, 0, 0)).toEqual([0, 1, 2, 3, ...range(5, 16)]);
    expect(keepOf(step, 1, 0)).toEqual([0, 1, 2, 4, ...range(5, 16)]);
    expect(step.nextPosition).toBe(15);
    expect(policy.getState()).toEqual({ cursor: 4 });
    // setState / reset
    policy.setState({ cursor: 7 });
    expect(policy.getState()).toEqual({ cursor: 7 });
    policy.reset();
    expect(policy.getState()).toEqual({ cursor: 2 });
  });

  it('within C nothing changes and the next position is the token index', () => {
    const policy = createPolicy('lacache:cache_size=20,start=2,span=2', contextFor(dims));
    const decision = policy.afterPrefill(cacheOf(12, dims), prefillObservation(12));
    expect(decision.layers).toBeNull();
    expect(decision.nextPosition).toBe(12);
  });

  it('a one-layer model has no ladder', () => {
    expect(() => createPolicy('lacache', contextFor({ nLayers: 1, nKvHeads: 1, nHeads: 1, headDim: 4 }))).toThrow(/lacache needs at least 2 layers/);
  });
});

describe('lacache on the tiny fixture', () => {
  it('prefill 100 + 20 steps within C = 64: positions are cache indices; snapshot/restore is exact', async () => {
    // 2 layers: S clamped to 1 → before 2, after 1; C = 64 (+ ⌊1/2⌋ = 0)
    const session = await calibratedRun('lacache:cache_size=64', () => 64, null);
    for (let l = 0; l < 2; l++) {
      expect(session.cache.length(l, 0)).toBe(64);
      expect(Array.from(session.cache.positions(l, 0))).toEqual(range(0, 64));
    }
    expect(session.position).toBe(64);
  });

  it('keeps generating past the model’s context (256) because positions stay below C', async () => {
    const session = await calibratedRun('lacache:cache_size=64', () => 64, null, 200);
    expect(session.tokens.length).toBe(300);
    expect(session.position).toBeLessThanOrEqual(64);
  });
});
