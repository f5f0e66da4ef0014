/**
 * Colour-blind-safe palettes: viridis for attention (sequential, perceptually uniform, readable
 * in grey and by every common colour-vision deficiency) and Okabe–Ito for categories.
 */
import { interpolateViridis, rgb } from 'd3';
import { CELL } from '../worker/protocol.ts';

/** Okabe & Ito (2008), "Color Universal Design". */
export const OKABE_ITO = {
  black: '#000000',
  orange: '#E69F00',
  skyBlue: '#56B4E9',
  green: '#009E73',
  yellow: '#F0E442',
  blue: '#0072B2',
  vermillion: '#D55E00',
  purple: '#CC79A7',
} as const;

/** Cells that hold no value: not in the head's cache, excluded sink, no data yet. */
export const EMPTY_COLORS = {
  notHeld: '#d9d9d9',
  sink: '#9e9e9e',
  background: '#ffffff',
} as const;

export const CELL_COLORS: Record<number, string> = {
  [CELL.EMPTY]: '#ececec',
  [CELL.HELD]: OKABE_ITO.blue,
  [CELL.ENCODED]: OKABE_ITO.orange,
  [CELL.MERGED]: OKABE_ITO.green,
  [CELL.EVICTED]: OKABE_ITO.vermillion,
};

export const CELL_LABELS: Record<number, string> = {
  [CELL.HELD]: 'held (fp32)',
  [CELL.ENCODED]: 'held, re-encoded',
  [CELL.MERGED]: 'held in a merged entry',
  [CELL.EVICTED]: 'evicted at this step',
  [CELL.EMPTY]: 'not held',
};

/** Packs a CSS colour as the little-endian RGBA uint32 an ImageData's Uint32Array view expects. */
export function packColor(css: string): number {
  const c = rgb(css);
  return ((255 << 24) | (Math.round(c.b) << 16) | (Math.round(c.g) << 8) | Math.round(c.r)) >>> 0;
}

/** 256 viridis colours as packed RGBA (index 0 = lowest). */
export const VIRIDIS_LUT: Uint32Array = (() => {
  const lut = new Uint32Array(256);
  for (let i = 0; i < 256; i++) lut[i] = packColor(interpolateViridis(i / 255));
  return lut;
})();

export type ScaleMode = 'linear' | 'log';

/** Lowest weight the log scale distinguishes, relative to the maximum. */
export const LOG_RANGE = 1e-4;

/**
 * Maps an attention weight to a LUT index 0…255 for a domain [0, max] (linear) or
 * [max·1e-4, max] (log10); weights ≤ 0 map to 0.
 */
export function attentionIndexer(mode: ScaleMode, max: number): (w: number) => number {
  const top = max > 0 ? max : 1;
  if (mode === 'linear') {
    const k = 255 / top;
    return (w) => (w <= 0 ? 0 : w >= top ? 255 : (w * k + 0.5) | 0);
  }
  const lo = Math.log10(top * LOG_RANGE);
  const span = Math.log10(top) - lo;
  return (w) => {
    if (w <= 0) return 0;
    const x = (Math.log10(w) - lo) / span;
    return x <= 0 ? 0 : x >= 1 ? 255 : (x * 255 + 0.5) | 0;
  };
}

export function viridisCss(t: number): string {
  return interpolateViridis(Math.min(1, Math.max(0, t)));
}
