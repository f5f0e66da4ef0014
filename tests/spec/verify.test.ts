/** verify.ts on hand-made distributions: the Leviathan/Chen accept-or-residual rule, exactly. */
import { describe, expect, it } from 'vitest';
import { Xoshiro128 } from '../../engine/sampling.ts';
import { drawFromTarget, drawToken, oneHotIndex, residualDistribution, verifyToken } from '../../engine/spec/verify.ts';
import { chiSquare, histogram } from './helpers/stats.ts';

const f64 = (values: number[]) => Float64Array.from(values);

/** p and q over 5 tokens: q over-proposes 0 and 3, under-proposes 1 and 2, and gives token 4 no mass. */
const P = f64([0.1, 0.4, 0.3, 0.05, 0.15]);
const Q = f64([0.35, 0.1, 0.2, 0.35, 0]);

function expectClose(actual: Float64Array, expected: number[], digits = 12): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((value, i) => expect(value).toBeCloseTo(expected[i], digits));
}

describe('the chi-square helper', () => {
  it('matches tabulated critical values', () => {
    // two equiprobable categories, n = 100, 60/40: χ² = 4, df 1 → p = 0.0455
    expect(chiSquare([60, 40], [0.5, 0.5]).pValue).toBeCloseTo(0.0455, 3);
    // four equiprobable categories, n = 400: [130, 70, 100, 100] → χ² = 18, df 3 → p = 0.000440
    expect(chiSquare([130, 70, 100, 100], [0.25, 0.25, 0.25, 0.25]).pValue).toBeCloseTo(0.00044, 5);
    // a perfect fit → p = 1; an observation where the probability is 0 → p = 0
    expect(chiSquare([25, 75], [0.25, 0.75]).pValue).toBeCloseTo(1, 12);
    expect(chiSquare([1, 99, 0], [0, 0.5, 0.5]).pValue).toBe(0);
    // df 10, χ² = 29.588 is the 0.001 critical value (the continued-fraction branch)
    const counts = [...new Array(10).fill(100), 1100];
    const probs = new Array(11).fill(1 / 11);
    const statistic = chiSquare(counts, probs).statistic;
    expect(statistic).toBeGreaterThan(29.588);
    expect(chiSquare(counts, probs).pValue).toBeLessThan(0.001);
  });
});

describe('oneHotIndex', () => {
  it('finds a one-hot distribution and refuses anything else', () => {
    expect(oneHotIndex(f64([0, 0, 1, 0]))).toBe(2);
    expect(oneHotIndex(f64([1]))).toBe(0);
    expect(oneHotIndex(f64([0, 0.5, 0.5]))).toBe(-1);
    expect(oneHotIndex(f64([0, 0, 0]))).toBe(-1);
    expect(oneHotIndex(f64([1, 1]))).toBe(-1);
    expect(oneHotIndex(P)).toBe(-1);
  });
});

describe('greedy verification draws no random number', () => {
  it('accepts the argmax and corrects anything else to it, leaving the generator untouched', () => {
    const p = f64([0, 0, 0, 1, 0]);
    const rng = new Xoshiro128(7);
    const before = rng.getState();
    expect(verifyToken(p, null, 3, rng)).toEqual({ accepted: true });
    expect(verifyToken(p, Q, 3, rng)).toEqual({ accepted: true });
    expect(verifyToken(p, null, 1, rng)).toEqual({ accepted: false, correction: 3 });
    expect(verifyToken(p, Q, 0, rng)).toEqual({ accepted: false, correction: 3 });
    expect(drawFromTarget(p, rng)).toBe(3);
    expect(rng.getState()).toEqual(before);
  });

  it('a non-greedy p draws one number to accept, two to reject', () => {
    const p = f64([0.5, 0.5, 0, 0, 0]);
    // token 2 has p = 0: always rejected, always corrected inside p's support
    const rng = new Xoshiro128(1);
    const reference = new Xoshiro128(1);
    const verdict = verifyToken(p, null, 2, rng);
    expect(verdict.accepted).toBe(false);
    expect([0, 1]).toContain(verdict.correction);
    reference.nextFloat();
    reference.nextFloat();
    expect(rng.getState()).toEqual(reference.getState());
    // q(x) ≤ p(x): ratio ≥ 1, always accepted with exactly one draw
    const q = f64([0.25, 0.75, 0, 0, 0]);
    expect(verifyToken(p, q, 0, rng)).toEqual({ accepted: true });
    reference.nextFloat();
    expect(rng.getState()).toEqual(reference.getState());
  });
});

describe('residualDistribution', () => {
  it('is norm(max(0, p − q))', () => {
    // p − q = [−0.25, 0.3, 0.1, −0.3, 0.15] → [0, 0.3, 0.1, 0, 0.15] / 0.55
    expectClose(residualDistribution(P, Q, 0), [0, 0.3 / 0.55, 0.1 / 0.55, 0, 0.15 / 0.55]);
    // the drafted token does not matter when q is given
    expectClose(residualDistribution(P, Q, 3), [0, 0.3 / 0.55, 0.1 / 0.55, 0, 0.15 / 0.55]);
  });

  it('one-hot q (null): p without the drafted token, renormalised', () => {
    expectClose(residualDistribution(P, null, 1), [0.1 / 0.6, 0, 0.3 / 0.6, 0.05 / 0.6, 0.15 / 0.6]);
    expectClose(residualDistribution(P, null, 4), [0.1 / 0.85, 0.4 / 0.85, 0.3 / 0.85, 0.05 / 0.85, 0]);
    // an explicit one-hot q is the same as null
    expectClose(residualDistribution(P, f64([0, 1, 0, 0, 0]), 1), Array.from(residualDistribution(P, null, 1)));
  });

  it('falls back to p where the residual has no mass (p = q, or p one-hot at the token)', () => {
    expect(Array.from(residualDistribution(P, P, 2))).toEqual(Array.from(P));
    const hot = f64([0, 0, 1, 0, 0]);
    expect(Array.from(residualDistribution(hot, null, 2))).toEqual(Array.from(hot));
    // and does not alias p
    const out = residualDistribution(P, P, 2);
    out[0] = 9;
    expect(P[0]).toBe(0.1);
  });
});

describe('drawToken', () => {
  it('inverse CDF: u = 0 is the first token with mass, u → 1 the last', () => {
    const d = f64([0, 0.25, 0, 0.5, 0.25, 0]);
    expect(drawToken(d, 0)).toBe(1);
    expect(drawToken(d, 0.2499)).toBe(1);
    expect(drawToken(d, 0.25)).toBe(3);
    expect(drawToken(d, 0.7499)).toBe(3);
    expect(drawToken(d, 0.75)).toBe(4);
    expect(drawToken(d, 1 - 2 ** -32)).toBe(4);
  });

  it('works on unnormalised weights, and never returns a token without mass when rounding overshoots', () => {
    expect(drawToken(f64([2, 6]), 0.24)).toBe(0);
    expect(drawToken(f64([2, 6]), 0.26)).toBe(1);
    // u = 1 (outside [0, 1), as if rounding overshot): the last token with mass, not the zero tail
    expect(drawToken(f64([0.3, 0.7, 0, 0]), 1)).toBe(1);
    // 0.1 + 0.2 + 0.7 sums to 1.0000000000000002 > 1 in float64 — still inside the support
    expect(drawToken(f64([0.1, 0.2, 0.7, 0]), 1 - 2 ** -32)).toBe(2);
  });

  it('refuses a distribution without mass', () => {
    expect(() => drawToken(f64([0, 0, 0]), 0.5)).toThrow(new RangeError('cannot draw from a distribution without mass'));
    expect(() => drawToken(new Float64Array(0), 0)).toThrow(RangeError);
  });
});

describe('accept-or-residual reproduces p exactly (Monte Carlo, seeded)', () => {
  const N = 40_000;
  const ALPHA = 1e-3;

  /** What speculative sampling emits for one drafted token: x ~ q, kept or replaced by the residual draw. */
  function emitted(q: Float64Array | null, fixedToken: number, seed: number): { out: number[]; drafts: number[]; accepted: number } {
    const rng = new Xoshiro128(seed);
    const out: number[] = [];
    const drafts: number[] = [];
    let accepted = 0;
    for (let i = 0; i < N; i++) {
      const x = q ? drawToken(q, rng.nextFloat()) : fixedToken;
      drafts.push(x);
      const verdict = verifyToken(P, q, x, rng);
      if (verdict.accepted) accepted++;
      out.push(verdict.accepted ? x : verdict.correction!);
    }
    return { out, drafts, accepted };
  }

  it('a sampled q ≠ p (with a token q cannot propose): output ~ p, drafts ~ q (the test has power)', () => {
    const { out, drafts, accepted } = emitted(Q, -1, 20240601);
    // acceptance rate is Σ min(p, q) = 0.1 + 0.1 + 0.2 + 0.05 + 0 = 0.45
    expect(accepted / N).toBeGreaterThan(0.43);
    expect(accepted / N).toBeLessThan(0.47);
    expect(chiSquare(histogram(out, 5), P).pValue).toBeGreaterThan(ALPHA);
    // the same test rejects the raw drafts: it would notice a wrong output distribution
    expect(chiSquare(histogram(drafts, 5), P).pValue).toBeLessThan(1e-12);
    // token 4 (q = 0) only ever comes from the residual
    expect(out.filter((t) => t === 4).length).toBeGreaterThan(0);
  });

  it('a one-hot drafter (q null, always the same token): output ~ p', () => {
    for (const token of [1, 3]) {
      const { out, accepted } = emitted(null, token, 99 + token);
      expect(accepted / N).toBeCloseTo(P[token], 1);
      expect(chiSquare(histogram(out, 5), P).pValue).toBeGreaterThan(ALPHA);
    }
  });

  it('q = p accepts everything', () => {
    const rng = new Xoshiro128(5);
    for (let i = 0; i < 1000; i++) {
      const x = drawToken(P, rng.nextFloat());
      expect(verifyToken(P, P, x, rng).accepted).toBe(true);
    }
  });

  it('drawFromTarget draws from p', () => {
    const rng = new Xoshiro128(31337);
    const out = Array.from({ length: N }, () => drawFromTarget(P, rng));
    expect(chiSquare(histogram(out, 5), P).pValue).toBeGreaterThan(ALPHA);
  });
});
