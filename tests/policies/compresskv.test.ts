/** CompressKV: layer budgets, semantic-head SnapKV selection on hand-made attention, and a tiny-model run. */
import { describe, expect, it } from 'vitest';
import { errorAwareBudgets, snapKeep, topHeads, windowScores } from '../../engine/policies/compresskv.ts';
import { createPolicy } from '../../engine/policies/spec.ts';
import { calibratedContext, calibratedRun, handCalibration, tinyCalibration } from './helpers/calibration.ts';
import { cacheOf, DIMS, keepOf, prefillObservation, stepObservation } from './helpers/policy.ts';

describe('compresskv: error-aware layer budgets', () => {
  it('B_l = clip(m + round(e_l·(L·B − m·L)), m, 3B), then ±1 by error order until the total is L·B', () => {
    expect(errorAwareBudgets([0.5, 0.3, 0.2], 64)).toEqual([80, 61, 51]); // 32 + round(48 | 28.8 | 19.2), sum 192
    // rounding leaves one short: the largest error gets it
    expect(errorAwareBudgets([0.97, 0.01, 0.01, 0.01], 64)).toEqual([157, 33, 33, 33]);
    // the cap (1.5·B = 96) clips layer 0; the 64 left go round-robin to the others (ties → lower layer)
    expect(errorAwareBudgets([1, 0, 0, 0], 64, 32, 1.5)).toEqual([96, 54, 53, 53]);
    // m is capped at B
    expect(errorAwareBudgets([0.5, 0.5], 16)).toEqual([16, 16]);
    for (const e of [
      [0.1, 0.2, 0.3, 0.4],
      [0.7, 0.1, 0.1, 0.1],
    ]) {
      expect(errorAwareBudgets(e, 100).reduce((a, b) => a + b, 0)).toBe(400);
    }
  });

  it('top semantic heads: k best, ties to the lower head, ascending', () => {
    expect(topHeads([0.5, 0.9, 0.9, 0.1], 2)).toEqual([1, 2]);
    expect(topHeads([0.5, 0.9, 0.9, 0.1], 3)).toEqual([0, 1, 2]);
    expect(topHeads([0, 0, 0, 0], 9)).toEqual([0, 1, 2, 3]);
  });

  it('window scores average the chosen heads’ window rows; the keep set is top (B − W) + the window', () => {
    const rows = 2;
    const head = (a: number[], b: number[]) => Float32Array.from([...a, ...b]);
    const attention = [
      head([0.5, 0.1, 0.1, 0.1, 0.1, 0.1], [0.4, 0.1, 0.1, 0.1, 0.1, 0.2]), // head 0: entry 0
      head([0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0]), // head 1 (not chosen): entry 3
      head([0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0.5, 0.5]),
      head([0.1, 0.6, 0.1, 0.1, 0.1, 0], [0.1, 0.5, 0.2, 0.1, 0.05, 0.05]), // head 3: entry 1
    ];
    const scores = windowScores(attention, [0, 3], rows, 4, 1, 'avg');
    expect(Array.from(scores).map((x) => +x.toFixed(4))).toEqual([0.55, 0.65, 0.25, 0.2]);
    expect(Array.from(snapKeep(scores, 6, 4, 2))).toEqual([0, 1, 4, 5]);
    expect(Array.from(snapKeep(scores, 6, 6, 2))).toEqual([0, 1, 2, 3, 4, 5]);
    // pooled (avg, kernel 3, padding ignored): [0.6, 0.4833, 0.3667, 0.225]
    expect(Array.from(windowScores(attention, [0, 3], rows, 4, 3, 'avg')).map((x) => +x.toFixed(4))).toEqual([0.6, 0.4833, 0.3667, 0.225]);
  });
});

describe('compresskv: the policy on a hand-made prompt', () => {
  // layer 0: semantic heads 0 and 3 (one per KV group); layer 1: heads 2 and 3 (both KV head 1)
  const calibration = handCalibration(DIMS, {
    semantic: [
      [0.9, 0.1, 0.2, 0.8],
      [0.1, 0.2, 0.3, 0.4],
    ],
    layerError: [3, 1],
  });
  const context = calibratedContext(calibration);
  const n = 12;
  /** window rows: query head qh puts weight on `favourites` (spread evenly) in both rows */
  const rowsFor = (favourites: number[]) => {
    const row = new Array<number>(n).fill(0);
    for (const f of favourites) row[f] = 1 / favourites.length;
    return [row, row];
  };
  const windowRows = [
    [rowsFor([1, 3, 5, 7, 8, 9]), rowsFor([0, 2, 4, 6]), rowsFor([0, 2, 4, 6]), rowsFor([1, 3, 5, 7, 8, 9])],
    [rowsFor([0, 1]), rowsFor([0, 1]), rowsFor([4, 6]), rowsFor([6, 7])],
  ];

  it('keeps, per layer, one index set from its semantic heads only, with error-aware budgets [8, 4]', () => {
    const policy = createPolicy('compresskv:budget=6,window=2,top_heads=2,kernel=1,min_layer=2', context);
    expect(policy.needs.prefillWindow).toBe(2);
    const decision = policy.afterPrefill(cacheOf(n), prefillObservation(n, { windowRows }));
    // budgets: total 12, m = 2: [2 + round(0.75·8), 2 + round(0.25·8)] = [8, 4]
    for (const h of [0, 1]) {
      expect(keepOf(decision, 0, h)).toEqual([1, 3, 5, 7, 8, 9, 10, 11]);
      expect(keepOf(decision, 1, h)).toEqual([4, 6, 10, 11]); // 6 (both heads: 1.0), then 4 and 7 tie at 0.5 → the older
    }
    expect(decision.note).toMatch(/budgets 8\/4/);
    // decode appends
    expect(policy.afterStep(cacheOf(n + 1), stepObservation(null)).layers).toBeNull();
    // uniform budgets: 6 each
    const uniform = createPolicy('compresskv:budget=6,window=2,top_heads=2,kernel=1,layer_budgets=uniform', context);
    const u = uniform.afterPrefill(cacheOf(n), prefillObservation(n, { windowRows }));
    expect(keepOf(u, 0, 0)!.length).toBe(6);
    expect(keepOf(u, 1, 1)!.length).toBe(6);
  });

  it('a prompt within a layer’s budget is left whole; missing sections are named', () => {
    const policy = createPolicy('compresskv:budget=12,window=2,kernel=1,layer_budgets=uniform', context);
    expect(policy.afterPrefill(cacheOf(n), prefillObservation(n, { windowRows })).layers).toBeNull();
    // error-aware: [2 + round(0.75·28), 2 + round(0.25·28)] = [23, 9] → only layer 1 is cut
    const skewed = createPolicy('compresskv:budget=16,window=2,kernel=1,min_layer=2', context).afterPrefill(cacheOf(n), prefillObservation(n, { windowRows }));
    expect(skewed.layers![0]).toEqual([null, null]);
    expect(keepOf(skewed, 1, 0)!.length).toBe(9);
    expect(() => createPolicy('compresskv', calibratedContext(handCalibration(DIMS, { semantic: windowRows.map(() => [0, 0, 0, 0]) })))).toThrow(
      /compresskv needs the calibration section\(s\) layerError/,
    );
    expect(() => createPolicy('compresskv:layer_budgets=uniform', calibratedContext(handCalibration(DIMS, { semantic: [[0, 0, 0, 0], [0, 0, 0, 0]] })))).not.toThrow();
  });
});

describe('compresskv on the tiny fixture', () => {
  it('prefill 100 + 20 steps: each layer holds its budget after prefill, then appends; snapshot/restore is exact', async () => {
    const cal = await tinyCalibration();
    const budgets = errorAwareBudgets(cal.layerError!.normalized, 48);
    expect(budgets.reduce((a, b) => a + b, 0)).toBe(96);
    const session = await calibratedRun('compresskv:budget=48', (step, l) => budgets[l] + step + 1, cal);
    for (let l = 0; l < 2; l++) {
      expect(session.cache.length(l, 0)).toBe(budgets[l] + 20);
      expect(Array.from(session.cache.tokens(l, 0))).toEqual(Array.from(session.cache.tokens(l, 1))); // one index set per layer
    }
  });
});
