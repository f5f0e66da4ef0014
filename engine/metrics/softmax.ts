/** Numerically stable log-sum-exp, softmax and log-softmax in float64. */

export function logSumExp(values: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) if (values[i] > max) max = values[i];
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += Math.exp(values[i] - max);
  return max + Math.log(sum);
}

export function softmax(values: ArrayLike<number>): Float64Array {
  const lse = logSumExp(values);
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = Math.exp(values[i] - lse);
  return out;
}

export function logSoftmax(values: ArrayLike<number>): Float64Array {
  const lse = logSumExp(values);
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i] - lse;
  return out;
}

/** Row `row` of a row-major [rows, width] matrix as a view. */
export function rowOf(matrix: Float32Array, row: number, width: number): Float32Array {
  return matrix.subarray(row * width, (row + 1) * width);
}

/** The k largest entries (descending value, ties by lower index) without sorting the whole array. */
export function topK(values: ArrayLike<number>, k: number): { index: number; value: number }[] {
  const best: { index: number; value: number }[] = [];
  const limit = Math.min(k, values.length);
  if (limit <= 0) return best;
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (best.length === limit) {
      if (!(value > best[limit - 1].value)) continue; // ties keep the lower index already held
      best[limit - 1] = { index: i, value };
    } else {
      best.push({ index: i, value });
    }
    // bubble the new item up the small sorted list (k is small: 5–20)
    for (let at = best.length - 1; at > 0 && best[at - 1].value < best[at].value; at--) {
      const swap = best[at - 1];
      best[at - 1] = best[at];
      best[at] = swap;
    }
  }
  return best;
}

/**
 * The k largest entries written into `indices` / `weights` (descending value, ties by lower index,
 * the same order as topK) without allocating: the per-step attention summaries call this for every
 * layer × head, so it runs on plain typed arrays with one threshold compare per value. Returns the
 * number written (min(k, values.length)); the caller's slots past it are left untouched.
 */
export function topKInto(values: ArrayLike<number>, k: number, indices: Int32Array, weights: Float32Array, offset = 0): number {
  const n = values.length;
  const limit = Math.min(k, n);
  if (limit <= 0) return 0;
  let count = 0;
  let threshold = -Infinity;
  // Back to front: attention rows favour recent entries, so the threshold rises early and most
  // values are rejected by one compare. Going backwards, an equal value has the lower index and
  // wins the tie (>=, and it is placed before equal values).
  for (let i = n - 1; i >= 0; i--) {
    const value = values[i];
    if (count === limit && !(value >= threshold)) continue;
    let at = count < limit ? count++ : limit - 1;
    while (at > 0 && weights[offset + at - 1] <= value) {
      weights[offset + at] = weights[offset + at - 1];
      indices[offset + at] = indices[offset + at - 1];
      at--;
    }
    weights[offset + at] = value;
    indices[offset + at] = i;
    if (count === limit) threshold = weights[offset + limit - 1];
  }
  return count;
}

/**
 * log-sum-exp and the k largest logits of one row in two passes and without allocating a
 * probability vector: a step needs only the probabilities of the chosen and the top-k tokens,
 * p = exp(logit − lse).
 */
export function summarizeLogits(logits: Float32Array, k: number): { logSumExp: number; top: { index: number; value: number }[] } {
  const top = topK(logits, k);
  let max = top.length > 0 ? top[0].value : -Infinity;
  if (top.length === 0) for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  if (max === -Infinity) return { logSumExp: -Infinity, top };
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return { logSumExp: max + Math.log(sum), top };
}
