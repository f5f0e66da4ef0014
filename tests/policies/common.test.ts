/** Shared policy helpers: budgets, GQA reduction, top-k, pooling, keep sets. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { budgetParam, columnSums, gather, isRatio, perHeadBudgets, pool1d, pyramidBudgets, resolveBudget, sinksRecentTopK, topK, uniformBudgets } from '../../engine/policies/common.ts';
import { gqaGroup, reduceGqa, reduceGqaHead } from '../../engine/pipeline/gqa.ts';

describe('budgets', () => {
  it('absolute values are entries, ratios are fractions of the reference, always ≥ 1', () => {
    expect(resolveBudget(64, 1000)).toBe(64);
    expect(resolveBudget(64.9, 10)).toBe(64);
    expect(resolveBudget(1, 1000)).toBe(1);
    expect(resolveBudget(0.25, 100)).toBe(25);
    expect(resolveBudget(0.25, 3)).toBe(1);
    expect(resolveBudget(0.5, 0)).toBe(1);
    expect(() => resolveBudget(0, 10)).toThrow(RangeError);
    expect(() => resolveBudget(-1, 10)).toThrow(RangeError);
    expect(() => resolveBudget(Number.NaN, 10)).toThrow(RangeError);
    expect(isRatio(0.3)).toBe(true);
    expect(isRatio(1)).toBe(false);
    expect(budgetParam('budget', 128, 'x')).toMatchObject({ kind: 'float', default: 128 });
  });

  it('uniform and per-head arrays', () => {
    expect(uniformBudgets(3, 7)).toEqual([7, 7, 7]);
    expect(perHeadBudgets([5, 6], 2)).toEqual([
      [5, 5],
      [6, 6],
    ]);
  });

  it('pyramid: linear from bottom (max) to top (min), mean ≈ C', () => {
    // C=128, W=8, β=20: middle 120, min 6, max 234, step 32.571…
    const b = pyramidBudgets(8, 128, 8, 20);
    expect(b[0]).toBe(8 + 234);
    expect(b[7]).toBe(8 + 6);
    for (let l = 1; l < 8; l++) expect(b[l]).toBeLessThan(b[l - 1]);
    const mean = b.reduce((s, v) => s + v, 0) / b.length;
    expect(Math.abs(mean - 128)).toBeLessThanOrEqual(1);
    expect(pyramidBudgets(1, 50, 8)).toEqual([50]);
    // the reference's clamp: a short prompt caps the bottom layer at promptLength − W, mean kept
    const c = pyramidBudgets(8, 128, 8, 20, 200);
    expect(c[0]).toBe(200);
    expect(c[7]).toBe(8 + (240 - 192));
    expect(Math.abs(c.reduce((s, v) => s + v, 0) / 8 - 128)).toBeLessThanOrEqual(1);
  });
});

describe('GQA reduction', () => {
  const rows = [
    [1, 2, 3],
    [3, 2, 1],
    [0, 0, 9],
    [2, 4, 6],
  ];
  it('mean / max / sum over the query heads of each KV head (q → ⌊q/group⌋)', () => {
    expect(reduceGqa(rows, 2, 'mean').map((a) => Array.from(a))).toEqual([
      [2, 2, 2],
      [1, 2, 7.5],
    ]);
    expect(reduceGqa(rows, 2, 'max').map((a) => Array.from(a))).toEqual([
      [3, 2, 3],
      [2, 4, 9],
    ]);
    expect(reduceGqa(rows, 2, 'sum').map((a) => Array.from(a))).toEqual([
      [4, 4, 4],
      [2, 4, 15],
    ]);
    expect(reduceGqa(rows, 1, 'mean').map((a) => Array.from(a))).toEqual([[1.5, 2, 4.75]]);
    expect(Array.from(reduceGqaHead(rows, 1, 2, 'max'))).toEqual([2, 4, 9]);
    expect(gqaGroup(8, 2)).toBe(4);
    expect(() => gqaGroup(6, 4)).toThrow(RangeError);
    expect(() => reduceGqa([[1, 2], [1]], 1)).toThrow(RangeError);
  });
});

describe('topK', () => {
  it('returns the k largest as ascending indices', () => {
    expect(Array.from(topK([5, 1, 9, 3, 7], 3))).toEqual([0, 2, 4]);
    expect(Array.from(topK([5, 1, 9], 0))).toEqual([]);
    expect(Array.from(topK([5, 1, 9], 10))).toEqual([0, 1, 2]);
  });
  it('breaks ties by age, documented direction', () => {
    expect(Array.from(topK([1, 1, 1, 1], 2, 'older'))).toEqual([0, 1]);
    expect(Array.from(topK([1, 1, 1, 1], 2, 'newer'))).toEqual([2, 3]);
    expect(Array.from(topK([2, 1, 2, 1, 2], 2, 'newer'))).toEqual([2, 4]);
  });
  it('NaN ranks last; sub-range', () => {
    expect(Array.from(topK([Number.NaN, 0, -1], 2))).toEqual([1, 2]);
    expect(Array.from(topK([9, 1, 5, 3, 9], 2, 'older', 1, 4))).toEqual([2, 3]);
  });
  it('property: size min(n,k), ascending unique, every kept ≥ every dropped', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 30 }), fc.nat(40), fc.boolean(), (xs, k, older) => {
        const idx = Array.from(topK(xs, k, older ? 'older' : 'newer'));
        expect(idx.length).toBe(Math.min(xs.length, k));
        for (let i = 1; i < idx.length; i++) expect(idx[i]).toBeGreaterThan(idx[i - 1]);
        const kept = new Set(idx);
        const minKept = Math.min(...idx.map((i) => xs[i]));
        for (let i = 0; i < xs.length; i++) if (!kept.has(i)) expect(xs[i]).toBeLessThanOrEqual(minKept);
      }),
    );
  });
});

describe('pool1d', () => {
  it('avg/max, stride 1, same padding (padding ignored)', () => {
    const x = [1, 5, 2, 8, 3];
    expect(Array.from(pool1d(x, 3, 'max'))).toEqual([5, 5, 8, 8, 8]);
    expect(Array.from(pool1d(x, 3, 'avg'))).toEqual([3, 8 / 3, 5, 13 / 3, 5.5].map(Math.fround));
    expect(Array.from(pool1d(x, 1, 'avg'))).toEqual(x);
    // even kernel: one more on the left
    expect(Array.from(pool1d(x, 2, 'max'))).toEqual([1, 5, 5, 8, 8]);
    expect(Array.from(pool1d([], 5, 'avg'))).toEqual([]);
    expect(Array.from(pool1d([4], 7, 'max'))).toEqual([4]);
    // zero padding (SnapKV reference, count_include_pad): ends divided by k
    expect(Array.from(pool1d(x, 3, 'avg', 'zero'))).toEqual([6 / 3, 8 / 3, 15 / 3, 13 / 3, 11 / 3].map(Math.fround));
    expect(Array.from(pool1d(x, 3, 'max', 'zero'))).toEqual([5, 5, 8, 8, 8]);
  });
  it('property: same length; max ≥ input; avg within [min, max] of the window', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -50, max: 50 }), { maxLength: 25 }), fc.integer({ min: 1, max: 9 }), (xs, k) => {
        const m = pool1d(xs, k, 'max');
        const a = pool1d(xs, k, 'avg');
        expect(m.length).toBe(xs.length);
        for (let j = 0; j < xs.length; j++) {
          expect(m[j]).toBeGreaterThanOrEqual(xs[j]);
          expect(a[j]).toBeLessThanOrEqual(m[j] + 1e-4);
        }
      }),
    );
  });
});

describe('sinksRecentTopK', () => {
  it('sinks + recent + top-k of the middle', () => {
    const scores = [0, 0, 9, 1, 8, 2, 7, 0, 0, 0];
    expect(Array.from(sinksRecentTopK(10, 2, 2, 2, scores))).toEqual([0, 1, 2, 4, 8, 9]);
    expect(Array.from(sinksRecentTopK(10, 0, 3, 0, null))).toEqual([7, 8, 9]);
    expect(Array.from(sinksRecentTopK(10, 4, 0, 0, null))).toEqual([0, 1, 2, 3]);
    expect(Array.from(sinksRecentTopK(5, 2, 2, 5, scores))).toEqual([0, 1, 2, 3, 4]);
    expect(Array.from(sinksRecentTopK(4, 3, 3, 0, null))).toEqual([0, 1, 2, 3]);
    expect(() => sinksRecentTopK(10, 1, 1, 2, null)).toThrow();
  });
  it('property: size min(n, s+r+k), sinks and recent kept, ascending unique', () => {
    fc.assert(
      fc.property(
        fc.array(fc.float({ noNaN: true }), { maxLength: 40 }),
        fc.nat(6),
        fc.nat(6),
        fc.nat(10),
        (xs, s, r, k) => {
          const n = xs.length;
          const keep = Array.from(sinksRecentTopK(n, s, r, k, xs));
          expect(keep.length).toBe(Math.min(n, s + r + k));
          for (let i = 1; i < keep.length; i++) expect(keep[i]).toBeGreaterThan(keep[i - 1]);
          for (let i = 0; i < Math.min(s, n); i++) expect(keep).toContain(i);
          for (let i = Math.max(0, n - r); i < n; i++) expect(keep).toContain(i);
        },
      ),
    );
  });
  it('columnSums', () => {
    // rows × entries = 2 × 3
    expect(Array.from(columnSums([1, 2, 3, 10, 20, 30], 2, 3))).toEqual([11, 22, 33]);
    expect(Array.from(columnSums([1, 2, 3, 10, 20, 30], 2, 3, 1, 3))).toEqual([22, 33]);
  });
  it('gather', () => {
    expect(Array.from(gather([10, 11, 12, 13], [1, 3]))).toEqual([11, 13]);
  });
});
