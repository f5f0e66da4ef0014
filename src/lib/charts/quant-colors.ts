/**
 * Colours of the quantization error view (QuantView.svelte): a diverging scale for signed error
 * (ColorBrewer RdBu, colour-blind safe: blue = the stored value is above the exact one, red = below,
 * white = no error) and Okabe–Ito categories for an entry's precision.
 */
import { interpolateRdBu } from 'd3';
import { OKABE_ITO, packColor } from './colors.ts';

/** 256 RdBu colours as packed RGBA, index 0 = most negative error (blue) … 255 = most positive (red). */
export const DIVERGING_LUT: Uint32Array = (() => {
  const lut = new Uint32Array(256);
  for (let i = 0; i < 256; i++) lut[i] = packColor(interpolateRdBu(1 - i / 255));
  return lut;
})();

export function divergingCss(t: number): string {
  return interpolateRdBu(1 - Math.min(1, Math.max(0, t)));
}

/** Maps a signed error to a LUT index for the symmetric domain [−max, max]; NaN → −1. */
export function divergingIndexer(max: number): (e: number) => number {
  const top = max > 0 ? max : 1;
  return (e) => {
    if (Number.isNaN(e)) return -1;
    const t = (e / top + 1) / 2;
    return t <= 0 ? 0 : t >= 1 ? 255 : (t * 255 + 0.5) | 0;
  };
}

/** Cells of the heat map that are not an error value. */
export const QUANT_CELL_COLORS = {
  /** a channel stored exactly beside the codes (outlier) */
  outlier: OKABE_ITO.yellow,
  /** the exact vector was all zero but the stored one is not: no relative error */
  undefined: '#9e9e9e',
} as const;

export const PLAIN_COLOR = '#d9d9d9';
export const UNKNOWN_BITS_COLOR = OKABE_ITO.orange;

const BITS_COLORS: Record<number, string> = {
  1: OKABE_ITO.vermillion,
  2: OKABE_ITO.orange,
  3: OKABE_ITO.yellow,
  4: OKABE_ITO.skyBlue,
  8: OKABE_ITO.green,
  16: OKABE_ITO.blue,
};

/** The colour of an entry stored at `bits` per element: grey for plain fp32, NaN (not in the trace) orange. */
export function bitsColor(bits: number): string {
  if (Number.isNaN(bits)) return UNKNOWN_BITS_COLOR;
  if (bits >= 32) return PLAIN_COLOR;
  return BITS_COLORS[bits] ?? OKABE_ITO.purple;
}
