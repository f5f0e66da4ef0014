/**
 * Seeded sampling: greedy (temperature 0), temperature, top-k, top-p. Everything random goes
 * through Xoshiro128** seeded from a 32-bit seed, so the same seed, model, prompt and settings
 * always give the same tokens (no unseeded randomness anywhere).
 *
 * Tiny temperatures. Any finite T > 0 is accepted (subnormals such as 1e-320 included) and
 * samples from softmax(logits / T). As T shrinks that distribution concentrates on the argmax;
 * once the largest logit / T overflows float64 (|logit| / T > ~1.8e308, e.g. T = 1e-320) the
 * softmax would be NaN, so the draw is its T → 0 limit instead: greedy's token (argmax, lowest id
 * on ties) with sampleProb 1. Just above that threshold every other token's probability has
 * already underflowed to 0, so the switch changes no token (only exact ties differ: above it they
 * share the draw, below it the lowest id wins). Every step at T > 0 still draws one random number,
 * so the random stream advances the same whatever the temperature.
 */
import { softmax } from './metrics/softmax.ts';

/** splitmix32: spreads a 32-bit seed over the 128-bit xoshiro state (never all zero). */
function splitmix32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** Xoshiro128** (Blackman & Vigna): small, fast, good 32-bit output, 128-bit serialisable state. */
export class Xoshiro128 {
  private s: Uint32Array;

  constructor(seed: number) {
    const next = splitmix32(seed);
    this.s = new Uint32Array([next(), next(), next(), next()]);
  }

  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  nextFloat(): number {
    return this.nextUint32() / 4294967296;
  }

  getState(): [number, number, number, number] {
    return [this.s[0], this.s[1], this.s[2], this.s[3]];
  }

  setState(state: readonly number[]): void {
    if (state.length !== 4 || state.every((x) => x === 0)) throw new RangeError('xoshiro128 state must be 4 uint32 values, not all zero');
    this.s = new Uint32Array(state);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export interface SamplerOptions {
  /** 0 = greedy (argmax, lowest id on ties) */
  temperature?: number;
  /** keep the k most likely tokens (0 = off) */
  topK?: number;
  /** keep the smallest set of most likely tokens whose probability reaches p (1 = off) */
  topP?: number;
  seed?: number;
}

export interface SamplerState {
  options: Required<SamplerOptions>;
  rng: [number, number, number, number];
}

export interface SampleResult {
  token: number;
  /** probability of the token under the sampling distribution (after temperature/top-k/top-p) */
  sampleProb: number;
}

export const DEFAULT_SAMPLER: Required<SamplerOptions> = { temperature: 0, topK: 0, topP: 1, seed: 0 };

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

export class Sampler {
  readonly options: Required<SamplerOptions>;
  private rng: Xoshiro128;

  constructor(options: SamplerOptions = {}) {
    const merged = { ...DEFAULT_SAMPLER, ...options };
    if (!(merged.temperature >= 0) || !Number.isFinite(merged.temperature)) throw new RangeError(`temperature must be ≥ 0, got ${merged.temperature}`);
    if (!Number.isInteger(merged.topK) || merged.topK < 0) throw new RangeError(`topK must be an integer ≥ 0, got ${merged.topK}`);
    if (!(merged.topP > 0 && merged.topP <= 1)) throw new RangeError(`topP must be in (0, 1], got ${merged.topP}`);
    if (!Number.isInteger(merged.seed)) throw new RangeError(`seed must be an integer, got ${merged.seed}`);
    this.options = merged;
    this.rng = new Xoshiro128(merged.seed);
  }

  /** Draws one token from logits (one row of V values). Greedy draws no random number. */
  sample(logits: ArrayLike<number>): SampleResult {
    const { temperature } = this.options;
    if (temperature === 0) return { token: argmax(logits), sampleProb: 1 };
    const probs = temperedProbabilities(logits, temperature);
    if (!probs) {
      // logits / T overflowed (see the header): the T → 0 limit, greedy, keeping the one draw
      this.rng.nextFloat();
      return { token: argmax(logits), sampleProb: 1 };
    }
    const candidates = filteredCandidates(probs, this.options);
    return drawFrom(probs, candidates, this.rng.nextFloat());
  }

  getState(): SamplerState {
    return { options: { ...this.options }, rng: this.rng.getState() };
  }

  setState(state: SamplerState): void {
    Object.assign(this.options, state.options);
    this.rng.setState(state.rng);
  }

  static fromState(state: SamplerState): Sampler {
    const sampler = new Sampler(state.options);
    sampler.rng.setState(state.rng);
    return sampler;
  }
}

/** softmax(logits / T) in float64, or null when logits / T overflows (the greedy limit). */
function temperedProbabilities(logits: ArrayLike<number>, temperature: number): Float64Array | null {
  const scaled = new Float64Array(logits.length);
  let maxScaled = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    scaled[i] = logits[i] / temperature;
    if (scaled[i] > maxScaled) maxScaled = scaled[i];
  }
  return Number.isFinite(maxScaled) ? softmax(scaled) : null;
}

/** Top-k / top-p candidates in descending probability (ties: lower id first); null when no filter applies. */
function filteredCandidates(probs: Float64Array, options: Required<SamplerOptions>): number[] | null {
  const { topK, topP } = options;
  if (!((topK > 0 && topK < probs.length) || topP < 1)) return null;
  const candidates = Array.from({ length: probs.length }, (_, i) => i);
  candidates.sort((a, b) => probs[b] - probs[a] || a - b);
  if (topK > 0 && topK < candidates.length) candidates.length = topK;
  if (topP < 1) {
    let mass = 0;
    let keep = 0;
    while (keep < candidates.length) {
      mass += probs[candidates[keep++]];
      if (mass >= topP) break;
    }
    candidates.length = keep;
  }
  return candidates;
}

/**
 * The whole distribution Sampler.sample draws from, over the vocabulary: softmax(logits / T) kept
 * to the top-k / top-p candidates and renormalised; one-hot at the argmax for greedy (and where
 * logits / T overflows). Speculative sampling needs it whole: p and q of every token.
 */
export function samplingDistribution(logits: ArrayLike<number>, options: SamplerOptions = {}): Float64Array {
  const merged = { ...DEFAULT_SAMPLER, ...options };
  const probs = merged.temperature === 0 ? null : temperedProbabilities(logits, merged.temperature);
  if (!probs) {
    const oneHot = new Float64Array(logits.length);
    oneHot[argmax(logits)] = 1;
    return oneHot;
  }
  const candidates = filteredCandidates(probs, merged);
  if (!candidates) return probs;
  const out = new Float64Array(probs.length);
  let total = 0;
  for (const id of candidates) total += probs[id];
  for (const id of candidates) out[id] = probs[id] / total;
  return out;
}

/** Inverse-CDF draw over `candidates` (or all ids), renormalised to their total mass. */
function drawFrom(probs: Float64Array, candidates: number[] | null, u: number): SampleResult {
  const ids = candidates ?? null;
  const count = ids ? ids.length : probs.length;
  let total = 0;
  for (let k = 0; k < count; k++) total += probs[ids ? ids[k] : k];
  const target = u * total;
  let cumulative = 0;
  let last = ids ? ids[0] : 0;
  for (let k = 0; k < count; k++) {
    const id = ids ? ids[k] : k;
    if (probs[id] <= 0) continue;
    cumulative += probs[id];
    last = id;
    if (cumulative > target) return { token: id, sampleProb: probs[id] / total };
  }
  // rounding left u·total just above the cumulative sum: the last token with mass is the draw
  return { token: last, sampleProb: probs[last] / total };
}
