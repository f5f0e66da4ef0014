/**
 * IEEE 754 half precision (fp16): how quantizers store their scales and zero points, so the
 * dequantized values the graph sees carry exactly the rounding the stored metadata would.
 * (Node 20 has no Math.f16round.)
 */

export const HALF_BYTES = 2;
const HALF_MAX = 65504;
const MIN_NORMAL_EXPONENT = -14;
const MANTISSA_BITS = 10;

/** x rounded to the nearest fp16 value (ties to even); ±Infinity beyond the fp16 range. */
export function roundHalf(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  // halfway between 65504 and the next step (65536) rounds to infinity
  if (a >= HALF_MAX + 16) return x > 0 ? Infinity : -Infinity;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const quantum = 2 ** (Math.max(e, MIN_NORMAL_EXPONENT) - MANTISSA_BITS);
  const m = a / quantum;
  let r = Math.floor(m);
  const frac = m - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  return Math.sign(x) * r * quantum;
}
