/**
 * Rotate-half RoPE (Llama / GPT-NeoX): channel i pairs with i + dim/2 for i < dim/2, rotated by
 * angle pos · θ^(−2i/dim); channels ≥ dim (partial rotary) are untouched.
 *
 * Keys are cached post-RoPE. Rotations compose, R(p + δ) = R(δ) R(p), so moving a cached key to a
 * new position is one rotation by the delta — no need to keep pre-RoPE keys. Used for
 * StreamingLLM-style cache positions and chunk reuse (docs/architecture.md, "The cache").
 */
import type { RopeConfig } from './manifest.ts';

export class Rope {
  readonly dim: number;
  readonly headDim: number;
  /** θ^(−2i/dim), i < dim/2, in float64 */
  readonly invFreq: Float64Array;

  constructor(rope: Pick<RopeConfig, 'theta' | 'dim'>, headDim: number) {
    if (rope.dim % 2 !== 0 || rope.dim > headDim) throw new RangeError(`rope dim ${rope.dim} must be even and ≤ head dim ${headDim}`);
    this.dim = rope.dim;
    this.headDim = headDim;
    const half = rope.dim / 2;
    this.invFreq = new Float64Array(half);
    for (let i = 0; i < half; i++) this.invFreq[i] = Math.pow(rope.theta, (-2 * i) / rope.dim);
  }

  /**
   * Rotates `count` consecutive head vectors (each headDim floats, starting at `offset`) in place
   * by `delta` positions. `delta` may be negative.
   */
  rotate(vectors: Float32Array, delta: number, offset = 0, count = 1): void {
    if (delta === 0) return;
    const half = this.dim / 2;
    // cos/sin once per call: the same delta applies to every vector.
    const cos = new Float64Array(half);
    const sin = new Float64Array(half);
    for (let i = 0; i < half; i++) {
      const angle = delta * this.invFreq[i];
      cos[i] = Math.cos(angle);
      sin[i] = Math.sin(angle);
    }
    for (let v = 0; v < count; v++) {
      const base = offset + v * this.headDim;
      for (let i = 0; i < half; i++) {
        const x1 = vectors[base + i];
        const x2 = vectors[base + i + half];
        vectors[base + i] = x1 * cos[i] - x2 * sin[i];
        vectors[base + i + half] = x2 * cos[i] + x1 * sin[i];
      }
    }
  }

  /** A copy of a post-RoPE vector at position `from`, re-rotated to position `to`. */
  rerotated(vector: Float32Array, from: number, to: number): Float32Array {
    const out = Float32Array.from(vector.subarray(0, this.headDim));
    this.rotate(out, to - from);
    return out;
  }
}
