/**
 * IEEE 754 half precision (fp16): how quantizers store their scales and zero points, so the
 * dequantized values the graph sees carry exactly the rounding the stored metadata would.
 * (Node 20 has no Math.f16round.) Also the fp16 element size the codecs' byte counts use (fp32's is
 * cache/memory.ts's BYTES_PER_FLOAT32).
 */

export const HALF_BYTES = 2;
/** |x| from here on rounds to infinity: halfway between 65504 (the largest fp16) and 65536 */
const HALF_OVERFLOW = 65504 + 16;
const MIN_NORMAL_EXPONENT = -14;
const MAX_EXPONENT = 15;
const MANTISSA_BITS = 10;

/**
 * ROUNDER[e + 14] = 2^52 · (the fp16 step at binary exponent e): adding it to |x| < 2^(e+1) and
 * subtracting it again rounds |x| to a multiple of that step, ties to even, in one float64 addition
 * (the sum lies in [2^52 · step, 2^53 · step), where the float64 ulp is the step). Exponents below
 * −14 share the subnormal step 2^−24.
 */
const ROUNDER = Float64Array.from({ length: MAX_EXPONENT - MIN_NORMAL_EXPONENT + 1 }, (_, i) => 2 ** (i + MIN_NORMAL_EXPONENT - MANTISSA_BITS + 52));
/** |x|'s binary exponent read from its float64 bits (Math.log2 costs ~0.3 µs a call) */
const bits = new Float64Array(1);
const words = new Uint32Array(bits.buffer);
const HIGH_WORD = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;

/** x rounded to the nearest fp16 value (ties to even); ±Infinity beyond the fp16 range. */
export function roundHalf(x: number): number {
  const a = x < 0 ? -x : x;
  if (!(a < HALF_OVERFLOW)) return a >= HALF_OVERFLOW ? (x > 0 ? Infinity : -Infinity) : x; // NaN stays NaN
  if (a === 0) return x; // keeps −0
  bits[0] = a;
  const e = ((words[HIGH_WORD] >>> 20) & 0x7ff) - 1023;
  const rounder = ROUNDER[e < MIN_NORMAL_EXPONENT ? 0 : e - MIN_NORMAL_EXPONENT];
  const r = a + rounder - rounder;
  return x < 0 ? -r : r;
}
