/**
 * Key / value vector arithmetic shared by the merge methods (Chelsea, KVMerger, EMS, MiniCache):
 * norms, cosine similarities between entries of one head, the tokens an entry stands for, and
 * the selector a merge method uses when its transform, not a selector, decides what leaves a head.
 *
 * Vectors are rows of a [length, d] Float32Array (CacheView keys / values). Sums run in float64
 * and in channel order, so every method computing the same similarity gets the same number.
 */
import type { PolicyCache } from '../cache/view.ts';
import { indexRange } from '../policies/types.ts';
import type { Selector } from './stages.ts';

/** Euclidean norm of row `i`. */
export function rowNorm(rows: ArrayLike<number>, i: number, d: number): number {
  let s = 0;
  for (let c = 0, o = i * d; c < d; c++, o++) s += rows[o] * rows[o];
  return Math.sqrt(s);
}

/** Norm of every row of a [n, d] matrix. */
export function rowNorms(rows: ArrayLike<number>, n: number, d: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = rowNorm(rows, i, d);
  return out;
}

/** Dot product of rows i and j. */
export function rowDot(rows: ArrayLike<number>, i: number, j: number, d: number): number {
  let s = 0;
  for (let c = 0, a = i * d, b = j * d; c < d; c++, a++, b++) s += rows[a] * rows[b];
  return s;
}

/** Cosine similarity of rows i and j given their norms (0 when either row is zero). */
export function rowCosine(rows: ArrayLike<number>, i: number, j: number, d: number, norms: ArrayLike<number>): number {
  const product = norms[i] * norms[j];
  return product > 0 ? rowDot(rows, i, j, d) / product : 0;
}

/** Cosine similarity of two vectors (0 when either is zero). */
export function vectorCosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let c = 0; c < a.length; c++) {
    dot += a[c] * b[c];
    na += a[c] * a[c];
    nb += b[c] * b[c];
  }
  const product = Math.sqrt(na * nb);
  return product > 0 ? dot / product : 0;
}

/** Squared Euclidean distance of rows i and j. */
export function rowDistanceSquared(rows: ArrayLike<number>, i: number, j: number, d: number): number {
  let s = 0;
  for (let c = 0, a = i * d, b = j * d; c < d; c++, a++, b++) {
    const x = rows[a] - rows[b];
    s += x * x;
  }
  return s;
}

/**
 * Tokens each of `indices` (entries of one head) stands for: the length of its origin, aligned
 * with `indices`. Not its count: a merged entry whose attention bias was left alone (count 1)
 * still stands for all of its members' tokens.
 */
export function originSizes(cache: PolicyCache, layer: number, kvHead: number, indices: ArrayLike<number>): Float64Array {
  const sizes = new Float64Array(indices.length);
  for (let k = 0; k < indices.length; k++) sizes[k] = cache.origin(layer, kvHead, indices[k]).length;
  return sizes;
}

/**
 * The selector of a method whose transform decides what merges or leaves: a head over its budget
 * starts from "keep everything" and the transform takes entries out of `keep` into merge groups.
 */
export const keepAllSelector: Selector = {
  select: (_env, head) => indexRange(0, head.length),
};
