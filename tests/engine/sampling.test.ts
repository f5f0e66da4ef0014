/** Seeded sampling and the numeric helpers it relies on. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { klDivergence, klDivergenceFromLogits, maxAbsDiff, top1Agrees } from '../../engine/metrics/kl.ts';
import { logSoftmax, logSumExp, softmax, topK } from '../../engine/metrics/softmax.ts';
import { Sampler, Xoshiro128, argmax } from '../../engine/sampling.ts';

const LOGITS = Float32Array.from([2.0, 1.0, 0.5, 3.0, -1.0, 3.0, 0.0, 1.5]);

function draws(sampler: Sampler, n: number, logits: ArrayLike<number> = LOGITS): number[] {
  return Array.from({ length: n }, () => sampler.sample(logits).token);
}

describe('Xoshiro128', () => {
  it('is deterministic per seed, differs across seeds, and round-trips its state', () => {
    const a = new Xoshiro128(1);
    const b = new Xoshiro128(1);
    const seq = Array.from({ length: 5 }, () => a.nextUint32());
    expect(Array.from({ length: 5 }, () => b.nextUint32())).toEqual(seq);
    expect(Array.from({ length: 5 }, () => new Xoshiro128(2).nextUint32())).not.toEqual(seq);
    const state = a.getState();
    const next = a.nextFloat();
    const c = new Xoshiro128(999);
    c.setState(state);
    expect(c.nextFloat()).toBe(next);
  });

  it('produces roughly uniform floats in [0, 1)', () => {
    const rng = new Xoshiro128(7);
    const buckets = new Array(10).fill(0);
    for (let i = 0; i < 20000; i++) {
      const x = rng.nextFloat();
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
      buckets[Math.floor(x * 10)]++;
    }
    for (const count of buckets) expect(Math.abs(count - 2000)).toBeLessThan(200);
  });
});

describe('Sampler', () => {
  it('greedy picks the argmax, lowest id on ties, and ignores the seed', () => {
    expect(new Sampler({ temperature: 0, seed: 1 }).sample(LOGITS)).toEqual({ token: 3, sampleProb: 1 });
    expect(draws(new Sampler({ seed: 5 }), 4)).toEqual([3, 3, 3, 3]);
  });

  it('same seed ⇒ same tokens; another seed at T > 0 ⇒ different tokens', () => {
    const a = draws(new Sampler({ temperature: 1, seed: 11 }), 50);
    expect(draws(new Sampler({ temperature: 1, seed: 11 }), 50)).toEqual(a);
    expect(draws(new Sampler({ temperature: 1, seed: 12 }), 50)).not.toEqual(a);
  });

  it('top-k draws only among the k most likely tokens (ties by lower id)', () => {
    const tokens = new Set(draws(new Sampler({ temperature: 5, topK: 2, seed: 3 }), 300));
    expect([...tokens].sort()).toEqual([3, 5]);
    expect(new Set(draws(new Sampler({ temperature: 5, topK: 1, seed: 3 }), 50))).toEqual(new Set([3]));
  });

  it('top-p keeps the smallest prefix reaching p', () => {
    const probs = softmax(LOGITS);
    // sorted: 3 (tie with 5, lower id first), 5, 0, 7, ...
    const p = probs[3] + probs[5] + probs[0] * 0.5;
    const tokens = new Set(draws(new Sampler({ temperature: 1, topP: p, seed: 9 }), 500));
    expect([...tokens].sort()).toEqual([0, 3, 5]);
  });

  it('matches the distribution at temperature 1', () => {
    const sampler = new Sampler({ temperature: 1, seed: 21 });
    const counts = new Array(LOGITS.length).fill(0);
    const n = 20000;
    for (const t of draws(sampler, n)) counts[t]++;
    softmax(LOGITS).forEach((p, i) => expect(Math.abs(counts[i] / n - p)).toBeLessThan(0.015));
  });

  it('reports the probability under the filtered distribution', () => {
    const { token, sampleProb } = new Sampler({ temperature: 1, topK: 2, seed: 1 }).sample(LOGITS);
    expect([3, 5]).toContain(token);
    expect(sampleProb).toBeCloseTo(0.5, 10);
  });

  it('state round-trips: a restored sampler continues identically', () => {
    const sampler = new Sampler({ temperature: 0.7, topP: 0.9, seed: 4 });
    draws(sampler, 7);
    const state = sampler.getState();
    const rest = draws(sampler, 20);
    expect(draws(Sampler.fromState(JSON.parse(JSON.stringify(state))), 20)).toEqual(rest);
  });

  it('a temperature so small that logits / T overflows (1e-320, subnormal) is greedy: argmax, sampleProb 1', () => {
    // a model-sized row whose argmax is not the last id (the old failure emitted token 4095)
    const rng = new Xoshiro128(3);
    const row = Float32Array.from({ length: 4096 }, () => 20 * rng.nextFloat() - 10);
    const best = argmax(row);
    expect(best).not.toBe(4095);
    for (const temperature of [1e-320, Number.MIN_VALUE, 1e-310]) {
      const sampler = new Sampler({ temperature, seed: 1 });
      for (let i = 0; i < 5; i++) expect(sampler.sample(row)).toEqual({ token: best, sampleProb: 1 });
    }
    // ties go to the lowest id, as in greedy; all-negative logits overflow to −∞ and are greedy too
    expect(new Sampler({ temperature: 1e-320 }).sample(LOGITS)).toEqual({ token: 3, sampleProb: 1 });
    expect(new Sampler({ temperature: 1e-320 }).sample([-3, -1, -2])).toEqual({ token: 1, sampleProb: 1 });
  });

  it('just above the overflow threshold the softmax already puts all mass on the argmax', () => {
    const unique = [2, 1, 3.5, -1];
    expect(new Sampler({ temperature: 1e-300, seed: 2 }).sample(unique)).toEqual({ token: 2, sampleProb: 1 });
    // exact ties share the limit distribution there (LOGITS: ids 3 and 5 tie at 3.0)
    const tied = new Set(draws(new Sampler({ temperature: 1e-300, seed: 2 }), 50));
    expect([...tied].sort()).toEqual([3, 5]);
    expect(new Sampler({ temperature: 1e-300, seed: 2 }).sample(LOGITS).sampleProb).toBe(0.5);
  });

  it('every step at T > 0 draws one random number, tiny T included', () => {
    const tiny = new Sampler({ temperature: 1e-320, seed: 8 });
    const warm = new Sampler({ temperature: 1, seed: 8 });
    draws(tiny, 6);
    draws(warm, 6);
    expect(tiny.getState().rng).toEqual(warm.getState().rng);
  });

  it('rejects invalid options', () => {
    expect(() => new Sampler({ temperature: -1 })).toThrow('temperature must be ≥ 0, got -1');
    expect(() => new Sampler({ topK: 1.5 })).toThrow('topK must be an integer ≥ 0, got 1.5');
    expect(() => new Sampler({ topP: 0 })).toThrow('topP must be in (0, 1], got 0');
  });
});

describe('softmax, KL, top-k helpers', () => {
  it('logsumexp is stable and softmax sums to 1', () => {
    expect(logSumExp([1000, 1000])).toBeCloseTo(1000 + Math.log(2), 10);
    expect(logSumExp([-Infinity, -Infinity])).toBe(-Infinity);
    fc.assert(
      fc.property(fc.array(fc.double({ min: -50, max: 50, noNaN: true }), { minLength: 1, maxLength: 40 }), (xs) => {
        const p = softmax(xs);
        expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 10);
        const lp = logSoftmax(xs);
        lp.forEach((v, i) => expect(Math.exp(v)).toBeCloseTo(p[i], 10));
      }),
    );
  });

  it('KL is 0 for equal distributions, positive otherwise, shift-invariant in logits', () => {
    expect(klDivergenceFromLogits(LOGITS, LOGITS)).toBe(0);
    const shifted = Array.from(LOGITS, (x) => x + 7);
    expect(klDivergenceFromLogits(LOGITS, shifted)).toBeCloseTo(0, 10);
    const other = Float32Array.from(LOGITS).reverse();
    const kl = klDivergenceFromLogits(LOGITS, other);
    expect(kl).toBeGreaterThan(0);
    expect(kl).toBeCloseTo(klDivergence(softmax(LOGITS), softmax(other)), 10);
    expect(klDivergence([0.5, 0.5], [1, 0])).toBe(Infinity);
    expect(klDivergence([1, 0], [0.5, 0.5])).toBeCloseTo(Math.log(2), 12);
    expect(top1Agrees(LOGITS, shifted)).toBe(true);
    expect(top1Agrees(LOGITS, other)).toBe(false);
    expect(maxAbsDiff([1, 2], [1.5, 2])).toBe(0.5);
    expect(maxAbsDiff([NaN], [1])).toBe(Infinity);
  });

  it('topK equals a full sort (descending, ties by lower index)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 30 }), fc.integer({ min: 1, max: 8 }), (xs, k) => {
        const expected = xs
          .map((value, index) => ({ index, value }))
          .sort((a, b) => b.value - a.value || a.index - b.index)
          .slice(0, k);
        expect(topK(xs, k)).toEqual(expected);
      }),
    );
    expect(argmax([1, 3, 3])).toBe(1);
  });
});
