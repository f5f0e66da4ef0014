/**
 * MiKV's outlier balancer (Yang et al., 2024, "No Token Left Behind", arXiv:2402.18096, §3.2):
 * per channel c, b_c = sqrt(max|q_c| / max|k_c|). Quantizing k ⊙ b instead of k shrinks the key
 * channels whose outliers the queries do not amplify and widens the others, so a per-token
 * quantizer's range is spent where q·k is sensitive; the graph sees dequantize(k ⊙ b) ⊘ b.
 * b is stored in fp16 (half.ts), so the value used is the value stored.
 */
import { roundHalf } from './half.ts';

/**
 * b_c = sqrt(max|q_c| / max|k_c|), rounded to fp16 (what is stored); 1 where either maximum is 0
 * or the ratio leaves the fp16 range. `queries` rows of head_dim, `keys` rows of head_dim.
 */
export function balancerOf(queries: ArrayLike<number>, keys: ArrayLike<number>, d: number): Float32Array {
  const maxQ = new Float64Array(d);
  const maxK = new Float64Array(d);
  for (let i = 0; i < queries.length; i++) maxQ[i % d] = Math.max(maxQ[i % d], Math.abs(queries[i]));
  for (let i = 0; i < keys.length; i++) maxK[i % d] = Math.max(maxK[i % d], Math.abs(keys[i]));
  const b = new Float32Array(d);
  for (let c = 0; c < d; c++) {
    const value = roundHalf(Math.sqrt(maxQ[c] / maxK[c]));
    b[c] = value > 0 && Number.isFinite(value) ? value : 1;
  }
  return b;
}
