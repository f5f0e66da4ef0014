/**
 * Asymmetric group quantization (KIVI's quantizer, shared by KIVI, GEAR, MiKV, CSKV, CacheGen):
 * per group, `scale = (max − min) / (2^b − 1)`, `q = clamp(round((x − min) / scale), 0, 2^b − 1)`,
 * `x̂ = q · scale + min`. Scale and zero point (= min) are stored in fp16 (half.ts) and the
 * dequantization uses the stored values, so x̂ is exactly what a decoder of the stored bits gets.
 * A group whose values are all equal stores scale 0 and reconstructs its (fp16) min.
 *
 * Layout: a block is `rows × cols` row-major (rows = tokens, cols = channels).
 * - `axis: 'channel'`: each channel is quantized on its own over groups of `groupSize` tokens
 *   (KIVI's keys): groups are [token run of groupSize] × [one channel].
 * - `axis: 'token'`: each token on its own over groups of `groupSize` channels (KIVI's values).
 * `groupSize` ≥ the run length means one group for the whole run.
 */
import { relativeError } from '../pipeline/slerp.ts';
import { HALF_BYTES, roundHalf } from './half.ts';

export type QuantAxis = 'channel' | 'token';

export interface QuantizeOptions {
  bits: number;
  axis: QuantAxis;
  groupSize: number;
}

export interface QuantizedBlock {
  rows: number;
  cols: number;
  bits: number;
  axis: QuantAxis;
  groupSize: number;
  /** one code per element, row-major, in [0, 2^bits − 1] */
  codes: Uint8Array;
  /** per group (group order: see groupIndex), fp16 values held as numbers */
  scales: Float32Array;
  zeros: Float32Array;
  /** x̂, row-major */
  dequantized: Float32Array;
}

export function checkBits(bits: number): void {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) throw new RangeError(`quantization bits must be an integer in 1…8, got ${bits}`);
}

/** Groups of a rows × cols block: per channel, ⌈rows / G⌉ token runs; per token, ⌈cols / G⌉ channel runs. */
export function groupCount(rows: number, cols: number, axis: QuantAxis, groupSize: number): number {
  return axis === 'channel' ? cols * Math.ceil(rows / groupSize) : rows * Math.ceil(cols / groupSize);
}

/** Index of the group holding element (row, col): channel-major for 'channel', token-major for 'token'. */
export function groupIndex(row: number, col: number, rows: number, cols: number, axis: QuantAxis, groupSize: number): number {
  return axis === 'channel' ? col * Math.ceil(rows / groupSize) + Math.floor(row / groupSize) : row * Math.ceil(cols / groupSize) + Math.floor(col / groupSize);
}

/** Bytes of the per-group metadata: an fp16 scale and an fp16 zero point per group. */
export function metadataBytes(groups: number): number {
  return groups * 2 * HALF_BYTES;
}

/** Bytes of `elements` codes of `bits` bits, packed. */
export function packedBytes(elements: number, bits: number): number {
  return Math.ceil((elements * bits) / 8);
}

/** Quantizes a rows × cols row-major block. */
export function quantizeBlock(x: ArrayLike<number>, rows: number, cols: number, options: QuantizeOptions): QuantizedBlock {
  const { bits, axis, groupSize } = options;
  checkBits(bits);
  if (!Number.isInteger(groupSize) || groupSize < 1) throw new RangeError(`quantization group size must be an integer ≥ 1, got ${groupSize}`);
  if (x.length !== rows * cols) throw new RangeError(`block of ${rows} × ${cols} needs ${rows * cols} values, got ${x.length}`);
  const groups = groupCount(rows, cols, axis, groupSize);
  const block: QuantizedBlock = {
    rows,
    cols,
    bits,
    axis,
    groupSize,
    codes: new Uint8Array(rows * cols),
    scales: new Float32Array(groups),
    zeros: new Float32Array(groups),
    dequantized: new Float32Array(rows * cols),
  };
  const levels = 2 ** bits - 1;
  // one group = a run of `length` elements starting at `start` with stride `stride`
  const quantizeRun = (g: number, start: number, length: number, stride: number) => {
    let min = Infinity;
    let max = -Infinity;
    for (let k = 0, i = start; k < length; k++, i += stride) {
      const v = x[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const zero = roundHalf(min);
    const scale = roundHalf((max - min) / levels);
    block.scales[g] = scale;
    block.zeros[g] = zero;
    for (let k = 0, i = start; k < length; k++, i += stride) {
      const q = scale > 0 ? Math.min(levels, Math.max(0, Math.round((x[i] - zero) / scale))) : 0;
      block.codes[i] = q;
      block.dequantized[i] = q * scale + zero;
    }
  };
  if (axis === 'channel') {
    const runs = Math.ceil(rows / groupSize);
    for (let c = 0; c < cols; c++) {
      for (let r = 0; r < runs; r++) {
        const first = r * groupSize;
        quantizeRun(c * runs + r, first * cols + c, Math.min(groupSize, rows - first), cols);
      }
    }
  } else {
    const runs = Math.ceil(cols / groupSize);
    for (let t = 0; t < rows; t++) {
      for (let r = 0; r < runs; r++) {
        const first = r * groupSize;
        quantizeRun(t * runs + r, t * cols + first, Math.min(groupSize, cols - first), 1);
      }
    }
  }
  return block;
}

/** x̂ from codes and the stored metadata (what a decoder computes); equals `block.dequantized`. */
export function dequantizeBlock(block: Pick<QuantizedBlock, 'rows' | 'cols' | 'axis' | 'groupSize' | 'codes' | 'scales' | 'zeros'>): Float32Array {
  const { rows, cols, axis, groupSize, codes, scales, zeros } = block;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const g = groupIndex(r, c, rows, cols, axis, groupSize);
      out[r * cols + c] = codes[r * cols + c] * scales[g] + zeros[g];
    }
  }
  return out;
}

/**
 * Relative L2 error ‖x − x̂‖ / ‖x‖ over `length` values from `start` in x and `hatStart` in x̂
 * (0 for a zero row reconstructed exactly): the per-entry kError / vError of every codec, with
 * defaults for whole rows over pipeline/slerp.ts's `relativeError`.
 */
export function relativeL2(x: ArrayLike<number>, xHat: ArrayLike<number>, start = 0, length = x.length - start, hatStart = start): number {
  return relativeError(x, start, xHat, hatStart, length);
}
