/**
 * SLERP merging of two vectors into one shared direction plus their norms, and its restoration —
 * MiniCache's reparameterisation (Liu et al., 2024, "MiniCache: KV Cache Compression in Depth
 * Dimension for Large Language Models", https://arxiv.org/abs/2405.14490), reusable by any method
 * that shares a direction between two states (policies/minicache.ts).
 *
 * With u = x/‖x‖ and Ω = arccos(u¹·u²):
 *
 *   e = [sin((1−t)Ω)·u¹ + sin(tΩ)·u²] / sin Ω      (a unit vector: the point at t on the great arc)
 *   x̂ = ‖x‖·e                                      (restoration: each state keeps its own norm)
 *
 * t = 0 gives u¹, t = 1 gives u². Degenerate cases (the formula divides by sin Ω):
 *  - Ω ≈ 0 (sin Ω < `SLERP_EPSILON`, parallel): the normalised linear interpolation (1−t)u¹ + t·u²,
 *    the formula's limit;
 *  - Ω ≈ π (antipodal): no unique arc; the nearer endpoint, u¹ for t < ½, else u²;
 *  - a zero vector has no direction: e is the other's direction (0 when both are zero); its own
 *    restoration is 0·e = 0, exact.
 *
 * Vectors are rows of [n, d] arrays (CacheView keys / values) addressed by row index, so nothing is
 * copied out of the cache; sums run in float64 and in channel order (deterministic). The stored
 * direction and norm are float32 (what a cache would keep); `restoreRow` rebuilds from exactly those.
 */
import { rowNorm } from './similarity.ts';

/** Below this sin Ω the two directions count as parallel (or antipodal). */
export const SLERP_EPSILON = 1e-6;

/** Dot product of row i of `a` and row j of `b` (two different matrices). */
export function crossRowDot(a: ArrayLike<number>, i: number, b: ArrayLike<number>, j: number, d: number): number {
  let s = 0;
  for (let c = 0, x = i * d, y = j * d; c < d; c++, x++, y++) s += a[x] * b[y];
  return s;
}

/** Cosine of row i of `a` and row j of `b` given their norms (0 when either row is zero), clamped to [−1, 1]. */
export function crossRowCosine(a: ArrayLike<number>, i: number, normA: number, b: ArrayLike<number>, j: number, normB: number, d: number): number {
  const product = normA * normB;
  if (!(product > 0)) return 0;
  return Math.max(-1, Math.min(1, crossRowDot(a, i, b, j, d) / product));
}

/** Ω = arccos(cos), the angle between the two directions, in [0, π]. */
export function angleOf(cos: number): number {
  return Math.acos(Math.max(-1, Math.min(1, cos)));
}

/** Angular distance Ω/π in [0, 1] (MiniCache's retention measure). */
export function angularDistance(cos: number): number {
  return angleOf(cos) / Math.PI;
}

/**
 * The interpolation weights on x¹ and x² themselves (not on u): e = w¹·x¹ + w²·x², with the
 * degenerate cases of the header. `normalise` is true where the weights give a non-unit vector
 * that has to be divided by its norm (the parallel case).
 */
function slerpWeights(normA: number, normB: number, omega: number, t: number): { wa: number; wb: number; normalise: boolean } {
  if (!(normA > 0) && !(normB > 0)) return { wa: 0, wb: 0, normalise: false };
  if (!(normA > 0)) return { wa: 0, wb: 1 / normB, normalise: false };
  if (!(normB > 0)) return { wa: 1 / normA, wb: 0, normalise: false };
  const sin = Math.sin(omega);
  if (sin < SLERP_EPSILON) {
    if (omega < Math.PI / 2) return { wa: (1 - t) / normA, wb: t / normB, normalise: true };
    return t < 0.5 ? { wa: 1 / normA, wb: 0, normalise: false } : { wa: 0, wb: 1 / normB, normalise: false };
  }
  return { wa: Math.sin((1 - t) * omega) / sin / normA, wb: Math.sin(t * omega) / sin / normB, normalise: false };
}

/**
 * Writes the SLERP direction e of row i of `a` and row j of `b` into `out` (d floats from
 * `outOffset`), given both rows' norms and the angle Ω between them (angleOf(crossRowCosine(…))).
 */
export function slerpRows(
  a: ArrayLike<number>,
  i: number,
  normA: number,
  b: ArrayLike<number>,
  j: number,
  normB: number,
  omega: number,
  d: number,
  t: number,
  out: Float32Array,
  outOffset = 0,
): void {
  const { wa, wb, normalise } = slerpWeights(normA, normB, omega, t);
  let scale = 1;
  if (normalise) {
    let s = 0;
    for (let c = 0, x = i * d, y = j * d; c < d; c++, x++, y++) {
      const v = wa * a[x] + wb * b[y];
      s += v * v;
    }
    scale = s > 0 ? 1 / Math.sqrt(s) : 0;
  }
  for (let c = 0, x = i * d, y = j * d; c < d; c++, x++, y++) out[outOffset + c] = scale * (wa * a[x] + wb * b[y]);
}

/** x̂ = ‖x‖·e from the stored (float32) norm and direction, into `out` (d floats from `outOffset`). */
export function restoreRow(direction: ArrayLike<number>, directionOffset: number, norm: number, d: number, out: Float32Array, outOffset = 0): void {
  const n = Math.fround(norm);
  for (let c = 0; c < d; c++) out[outOffset + c] = n * direction[directionOffset + c];
}

/** One merged pair: the shared direction (float32, unit), both norms and the angle between the inputs. */
export interface SlerpMerge {
  direction: Float32Array;
  normA: number;
  normB: number;
  /** Ω in [0, π] */
  omega: number;
}

/** Merges two vectors (same length) into one direction + two norms. */
export function slerpMerge(a: ArrayLike<number>, b: ArrayLike<number>, t: number): SlerpMerge {
  if (a.length !== b.length) throw new RangeError(`slerpMerge: vectors of ${a.length} and ${b.length} elements`);
  const d = a.length;
  const normA = rowNorm(a, 0, d);
  const normB = rowNorm(b, 0, d);
  const omega = angleOf(crossRowCosine(a, 0, normA, b, 0, normB, d));
  const direction = new Float32Array(d);
  slerpRows(a, 0, normA, b, 0, normB, omega, d, t, direction);
  return { direction, normA, normB, omega };
}

/** The two restored vectors ‖x¹‖·e and ‖x²‖·e of a merge. */
export function slerpRestore(merge: SlerpMerge): [Float32Array, Float32Array] {
  const d = merge.direction.length;
  const a = new Float32Array(d);
  const b = new Float32Array(d);
  restoreRow(merge.direction, 0, merge.normA, d, a);
  restoreRow(merge.direction, 0, merge.normB, d, b);
  return [a, b];
}

/** ‖x̂ − x‖ / ‖x‖ of a restored row against the original (0 for a zero original restored to 0). */
export function relativeError(original: ArrayLike<number>, originalOffset: number, restored: ArrayLike<number>, restoredOffset: number, d: number): number {
  let err = 0;
  let ref = 0;
  for (let c = 0; c < d; c++) {
    const x = original[originalOffset + c];
    const e = restored[restoredOffset + c] - x;
    err += e * e;
    ref += x * x;
  }
  return ref > 0 ? Math.sqrt(err / ref) : Math.sqrt(err);
}
