/**
 * Outlier extraction (GEAR's sparse part S, Kang et al., 2024, https://arxiv.org/abs/2403.05527),
 * shared by quantizers that keep a few extreme values exactly beside the codes. Reference read:
 * HaoKang-Timmy/GEAR `GEARLM/Simulated/compress_function.py` (gears_channelQ / gears_tokenQ):
 * per line, torch.topk of the largest and of the smallest values; those positions are set to the
 * line's mean before quantization and restored to their exact values after it.
 *
 * A block is rows × cols row-major (rows = tokens, cols = channels). A line is one channel over
 * the block's tokens (`axis: 'channel'`, GEAR's keys) or one token over its channels (`'token'`,
 * GEAR's values). Per line, the `perSide` largest and the `perSide` smallest values by value (not
 * magnitude, as the reference) are outliers; ties go to the lower index.
 *
 * Readings:
 * - `perSide = round(s · n / 2)` for a line of n values and fraction s (the paper's "top / bottom
 *   s/2 of each vector"). The reference derives its count from the whole tensor's size, which for
 *   keys gives a count independent of the sequence length; per line is the paper's definition.
 *   With s = 2 %: 1 per side per key channel of a 64-token block, none per 32-channel value token.
 * - `fill: 'mean'` (the reference): outlier positions hold the line's mean (of all its values) in
 *   the remainder, so they do not stretch the quantizer's min / max; `'zero'` zeroes them.
 * - Stored values are fp16 (what the 2 bytes counted store); an index is the outlier's place
 *   along its line, `indexBytes(line length)` bytes (1 byte up to 256 places, 2 up to 65536).
 */
import { HALF_BYTES, roundHalf } from './half.ts';

export type OutlierAxis = 'channel' | 'token';
export type OutlierFill = 'mean' | 'zero';

export interface OutlierOptions {
  /** s: fraction of each line's values kept exactly (half at the top, half at the bottom) */
  fraction: number;
  axis: OutlierAxis;
  fill?: OutlierFill;
}

export interface Outliers {
  rows: number;
  cols: number;
  axis: OutlierAxis;
  /** outliers per side of each line (the line has 2·perSide) */
  perSide: number;
  /** flat positions (row · cols + col) in the block, line by line, largest then smallest */
  positions: Int32Array;
  /** their values, fp16-rounded (what the stored bytes decode to) */
  values: Float32Array;
  /** the block with the outliers replaced by the fill */
  remainder: Float32Array;
}

/** Bytes of one outlier value (fp16). */
export const OUTLIER_VALUE_BYTES = HALF_BYTES;

/** Bytes of an index addressing `places` positions along a line. */
export function indexBytes(places: number): number {
  return places <= 256 ? 1 : places <= 65536 ? 2 : 4;
}

/** Bytes of `count` outliers on lines of `places` positions: fp16 value + index each. */
export function outlierBytes(count: number, places: number): number {
  return count * (OUTLIER_VALUE_BYTES + indexBytes(places));
}

/** Outliers per side of a line of `length` values at fraction s (at most half the line each side). */
export function outliersPerSide(length: number, fraction: number): number {
  if (!(fraction >= 0 && fraction <= 1)) throw new RangeError(`outlier fraction must be in [0, 1], got ${fraction}`);
  return Math.min(Math.floor(length / 2), Math.round((fraction * length) / 2));
}

export function extractOutliers(x: ArrayLike<number>, rows: number, cols: number, options: OutlierOptions): Outliers {
  if (x.length !== rows * cols) throw new RangeError(`block of ${rows} × ${cols} needs ${rows * cols} values, got ${x.length}`);
  const channel = options.axis === 'channel';
  const lines = channel ? cols : rows;
  const length = channel ? rows : cols;
  const stride = channel ? cols : 1;
  const perSide = outliersPerSide(length, options.fraction);
  const remainder = Float32Array.from(x);
  const positions = new Int32Array(lines * 2 * perSide);
  const values = new Float32Array(positions.length);
  if (perSide === 0) return { rows, cols, axis: options.axis, perSide, positions, values, remainder };
  const taken = new Uint8Array(length);
  let out = 0;
  for (let line = 0; line < lines; line++) {
    const start = channel ? line : line * cols;
    taken.fill(0);
    let sum = 0;
    for (let k = 0; k < length; k++) sum += x[start + k * stride];
    const fill = options.fill === 'zero' ? 0 : sum / length;
    for (const largest of [true, false]) {
      for (let n = 0; n < perSide; n++) {
        let best = -1;
        for (let k = 0; k < length; k++) {
          if (taken[k]) continue;
          const v = x[start + k * stride];
          if (best < 0 || (largest ? v > x[start + best * stride] : v < x[start + best * stride])) best = k;
        }
        taken[best] = 1;
        const at = start + best * stride;
        positions[out] = at;
        values[out] = roundHalf(x[at]);
        remainder[at] = fill;
        out++;
      }
    }
  }
  return { rows, cols, axis: options.axis, perSide, positions, values, remainder };
}

/** Writes the outliers' values over a reconstruction of the block (x̂ at the outliers = S). */
export function restoreOutliers(block: Float32Array | Float64Array, outliers: Pick<Outliers, 'positions' | 'values'>): void {
  for (let i = 0; i < outliers.positions.length; i++) block[outliers.positions[i]] = outliers.values[i];
}

/** Channels of row `row` that are outliers (ascending), for EntryCodec.kOutliers / vOutliers. */
export function outlierChannels(outliers: Pick<Outliers, 'positions' | 'cols'>, row: number): number[] {
  const out: number[] = [];
  const first = row * outliers.cols;
  for (const p of outliers.positions) if (p >= first && p < first + outliers.cols) out.push(p - first);
  return out.sort((a, b) => a - b);
}
