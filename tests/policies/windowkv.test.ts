/** WindowKV: window scores, dropping whole windows, suffix kept, layer groups. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePolicySpec } from '../../engine/policies/spec.ts';
import { selectWindows, windowkvDecision, windowkvReviewBudgets, windowScores } from '../../engine/policies/windowkv.ts';
import { cacheOf, DIMS, integrationRun, keepOf, keptOrAll, policyFor, prefillObservation, range, stepObservation } from './helpers/policy.ts';

/** Window rows over n entries: review votes v(l, qh) split over `rows` rows, causal filler in the suffix. */
function windowOf(n: number, rows: number, votes: (l: number, qh: number) => number[]) {
  return Array.from({ length: DIMS.nLayers }, (_, l) =>
    Array.from({ length: DIMS.nHeads }, (_, qh) => {
      const v = votes(l, qh);
      return Array.from({ length: rows }, (_, r) => range(0, n).map((j) => (j < n - rows ? v[j] / rows : j <= n - rows + r ? 0.1 : 0)));
    }),
  );
}

// review 16 (n = 20, suffix 4), windows of 4: means 0.5, 0, 0.4, 0.75; top-2 means 0.5, 0, 0.8, 1.5
const VOTES = [0.5, 0.5, 0.5, 0.5, 0, 0, 0, 0, 1.6, 0, 0, 0, 3, 0, 0, 0];

describe('windowkv policy', () => {
  it('parses its spec', () => {
    expect(parsePolicySpec('windowkv:budget=128,suffix=16,windowSize=8,score=topmean,groupSize=4').params).toMatchObject({
      budget: 128,
      suffix: 16,
      windowSize: 8,
      score: 'topmean',
      groupSize: 4,
      decay: 'uniform',
    });
    expect(policyFor('windowkv:suffix=12').needs.prefillWindow).toBe(12);
  });

  it('window scores: mean over heads and tokens, or mean of the top w/2', () => {
    const votes = [Float64Array.from(VOTES), Float64Array.from(VOTES.map((v) => v * 3))];
    expect(Array.from(windowScores(votes, 16, 4, 'mean')).map((x) => +x.toFixed(6))).toEqual([1, 0, 0.8, 1.5]);
    expect(Array.from(windowScores(votes, 16, 4, 'topmean')).map((x) => +x.toFixed(6))).toEqual([1, 0, 1.6, 3]);
  });

  it('drops the lowest windows until the review part fits; keeps the suffix', () => {
    const obs = prefillObservation(20, { windowRows: windowOf(20, 4, () => VOTES) });
    const mean = policyFor('windowkv:budget=12,suffix=4,windowSize=4').afterPrefill(cacheOf(20), obs);
    for (let l = 0; l < 2; l++) for (let h = 0; h < 2; h++) expect(keepOf(mean, l, h)).toEqual([...range(0, 4), ...range(12, 20)]);
    const top = policyFor('windowkv:budget=12,suffix=4,windowSize=4,score=topmean').afterPrefill(cacheOf(20), obs);
    expect(keepOf(top, 0, 1)).toEqual(range(8, 20));
  });

  it('"until within budget" with a short last window; ties drop the later window', () => {
    // review 14, windows 4,4,4,2; the short one scores lowest: dropping it alone leaves 12 > 9
    expect(selectWindows(Float64Array.from([3, 2, 1, 0]), 14, 4, 9)).toEqual([0, 1]);
    expect(selectWindows(Float64Array.from([1, 1, 1, 1]), 16, 4, 8)).toEqual([0, 1]);
    expect(selectWindows(Float64Array.from([1, 1, 1, 1]), 16, 4, 0)).toEqual([]);
  });

  it('layer groups share the first layer’s selection', () => {
    const votes = (l: number) => (l === 0 ? VOTES : [...VOTES].reverse());
    const obs = prefillObservation(20, { windowRows: windowOf(20, 4, votes) });
    const shared = policyFor('windowkv:budget=12,suffix=4,windowSize=4,groupSize=8').afterPrefill(cacheOf(20), obs);
    expect(keepOf(shared, 1, 0)).toEqual([...range(0, 4), ...range(12, 20)]);
    const own = policyFor('windowkv:budget=12,suffix=4,windowSize=4,groupSize=1').afterPrefill(cacheOf(20), obs);
    // reversed votes: window means 0.75, 0.4, 0, 0.5 → its own choice is also windows 0 and 3
    expect(keepOf(own, 1, 1)).toEqual([...range(0, 4), ...range(12, 20)]);
    const obs2 = prefillObservation(20, { windowRows: windowOf(20, 4, (l) => (l === 0 ? VOTES : [0, 0, 0, 0, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 5])) });
    expect(keepOf(policyFor('windowkv:budget=12,suffix=4,windowSize=4,groupSize=1').afterPrefill(cacheOf(20), obs2), 1, 0)).toEqual([
      ...range(4, 8),
      ...range(12, 20),
    ]);
    expect(keepOf(policyFor('windowkv:budget=12,suffix=4,windowSize=4,groupSize=2').afterPrefill(cacheOf(20), obs2), 1, 0)).toEqual([
      ...range(0, 4),
      ...range(12, 20),
    ]);
  });

  it('short prompt unchanged; decode appends; C ≤ W keeps the last C; ratio budget', () => {
    const obs = prefillObservation(20, { windowRows: windowOf(20, 4, () => VOTES) });
    expect(policyFor('windowkv:budget=20,suffix=4,windowSize=4').afterPrefill(cacheOf(20), obs).layers).toBeNull();
    expect(policyFor('windowkv:budget=2').afterStep(cacheOf(50), stepObservation(null)).layers).toBeNull();
    expect(keepOf(policyFor('windowkv:budget=3,suffix=4,windowSize=4').afterPrefill(cacheOf(20), obs), 0, 0)).toEqual([17, 18, 19]);
    expect(keepOf(policyFor('windowkv:budget=0.6,suffix=4,windowSize=4').afterPrefill(cacheOf(20), obs), 0, 0)).toEqual([
      ...range(0, 4),
      ...range(12, 20),
    ]);
  });

  it('arithmetic group budgets (reference) and uniform', () => {
    expect(windowkvReviewBudgets(8, 100, 2, 'arithmetic', 20)).toEqual([190, 190, 130, 130, 70, 70, 10, 10]);
    expect(windowkvReviewBudgets(8, 100, 8, 'arithmetic', 20)).toEqual(new Array(8).fill(100));
    expect(windowkvReviewBudgets(3, 50, 8, 'uniform', 20)).toEqual([50, 50, 50]);
  });

  it('property: kept ≤ C, suffix kept, whole windows, ascending', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 40 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 30 }),
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.float({ min: 0, max: 1, noNaN: true }), { minLength: 40, maxLength: 40 }),
        (n, w, c, size, noise) => {
          const rows = Math.min(w, n);
          const obs = prefillObservation(n, { windowRows: windowOf(n, rows, (l, qh) => noise.map((x, j) => noise[(j + qh) % 40] * x)) });
          const decision = windowkvDecision(cacheOf(n), obs, { reviewBudgets: [Math.max(0, c - rows), Math.max(0, c - rows)], budget: c, windowSize: size, score: 'mean', groupSize: 8 });
          const keep = keptOrAll(decision, 1, 0, n);
          expect(keep.length).toBeLessThanOrEqual(Math.max(n <= c ? n : 0, c));
          for (let i = 1; i < keep.length; i++) expect(keep[i]).toBeGreaterThan(keep[i - 1]);
          for (let i = Math.max(0, n - Math.min(rows, c)); i < n; i++) expect(keep).toContain(i);
          if (c > rows && n > c) {
            // review part made of whole windows (the last may be short)
            const review = n - rows;
            const kept = new Set(keep);
            for (let start = 0; start < review; start += size) {
              const members = range(start, Math.min(review, start + size)).map((j) => kept.has(j));
              expect(members.every((m) => m === members[0])).toBe(true);
            }
          }
        },
      ),
    );
  });

  it('integration: tiny model, budget after prefill then append; restore reproduces', async () => {
    await integrationRun('windowkv:budget=48,suffix=8,windowSize=8', (s) => 48 + s + 1);
  });
});
