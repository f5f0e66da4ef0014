/**
 * Verification rules of speculative decoding (Leviathan, Kalman & Matias 2023, "Fast Inference from
 * Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model
 * Decoding with Speculative Sampling"). Pure functions over whole distributions (Float64Array over
 * the vocabulary, as engine/sampling.ts samplingDistribution gives them).
 *
 * A drafted token x drawn from q is accepted with probability min(1, p(x) / q(x)); at the first
 * rejection the target draws from the residual norm(max(0, p − q)). This makes every output token
 * distributed exactly as the target's p. A one-hot drafter (prompt lookup, n-gram) has q(x) = 1:
 * accept with probability p(x), residual p without x (vLLM's rejection sampler does the same).
 * Greedy targets have a one-hot p, so the rule reduces to "accept while x is the target's argmax"
 * and draws no random number.
 */
import { Xoshiro128 } from '../sampling.ts';

export interface TokenVerdict {
  accepted: boolean;
  /** the target's replacement when rejected (drawn from the residual) */
  correction?: number;
}

/** Whether `p` is a one-hot (greedy) distribution, and at which token. */
export function oneHotIndex(p: Float64Array): number {
  let index = -1;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0) continue;
    if (p[i] !== 1 || index >= 0) return -1;
    index = i;
  }
  return index;
}

/** norm(max(0, p − q)); q null = one-hot at `token`. Falls back to p when the residual has no mass (p = q). */
export function residualDistribution(p: Float64Array, q: Float64Array | null, token: number): Float64Array {
  const out = new Float64Array(p.length);
  let total = 0;
  for (let i = 0; i < p.length; i++) {
    const qi = q ? q[i] : i === token ? 1 : 0;
    const r = p[i] - qi;
    if (r > 0) {
      out[i] = r;
      total += r;
    }
  }
  if (!(total > 0)) return p.slice();
  for (let i = 0; i < out.length; i++) out[i] /= total;
  return out;
}

/** Inverse-CDF draw from a distribution with u in [0, 1); the last token with mass when rounding overshoots. */
export function drawToken(distribution: Float64Array, u: number): number {
  let total = 0;
  for (let i = 0; i < distribution.length; i++) total += distribution[i];
  const target = u * total;
  let cumulative = 0;
  let last = -1;
  for (let i = 0; i < distribution.length; i++) {
    if (distribution[i] <= 0) continue;
    cumulative += distribution[i];
    last = i;
    if (cumulative > target) return i;
  }
  if (last < 0) throw new RangeError('cannot draw from a distribution without mass');
  return last;
}

/** A target draw from p: the argmax of a one-hot p (no random number), else one draw. */
export function drawFromTarget(p: Float64Array, rng: Xoshiro128): number {
  const hot = oneHotIndex(p);
  return hot >= 0 ? hot : drawToken(p, rng.nextFloat());
}

/**
 * Verifies one drafted token against the target's distribution p at its position. q is the
 * distribution the drafter drew it from (null = one-hot at the token). Greedy p draws nothing.
 */
export function verifyToken(p: Float64Array, q: Float64Array | null, token: number, rng: Xoshiro128): TokenVerdict {
  const hot = oneHotIndex(p);
  if (hot >= 0) return hot === token ? { accepted: true } : { accepted: false, correction: hot };
  const qx = q ? q[token] : 1;
  const ratio = qx > 0 ? p[token] / qx : p[token] > 0 ? Infinity : 0;
  if (rng.nextFloat() < Math.min(1, ratio)) return { accepted: true };
  return { accepted: false, correction: drawToken(residualDistribution(p, q, token), rng.nextFloat()) };
}
