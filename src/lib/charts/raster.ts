/**
 * Fast raster drawing of attention history: rows = decode steps (oldest first, newest at the
 * bottom), columns = token indices. Everything is written into one Uint32Array view of an
 * ImageData and put on the canvas at once; a token range wider than the pixels is max-pooled so
 * that a single sharp peak never disappears.
 */
import { EMPTY_COLORS, packColor, VIRIDIS_LUT } from './colors.ts';

/** One step's attention over the cache (AttentionGrid) as the charts use it. */
export interface HistoryRow {
  step: number;
  /** tokens (columns) of this row */
  tokens: number;
  heads: number;
  /** [layer][queryHead][token] */
  weights: Float32Array;
}

export interface RasterStyle {
  excludeSink: boolean;
  /** weight → LUT index 0…255 */
  index: (w: number) => number;
}

const NOT_HELD = packColor(EMPTY_COLORS.notHeld);
const SINK = packColor(EMPTY_COLORS.sink);
const BACKGROUND = packColor(EMPTY_COLORS.background);

/** Largest weight over the rows for the given heads and token range (sink excluded if asked). */
export function maxWeight(rows: readonly HistoryRow[], heads: readonly [number, number][], from: number, to: number, excludeSink: boolean): number {
  let max = 0;
  for (const row of rows) {
    const end = Math.min(to, row.tokens);
    const start = Math.max(from, excludeSink ? 1 : 0);
    for (const [layer, head] of heads) {
      const base = (layer * row.heads + head) * row.tokens;
      const w = row.weights;
      for (let t = start; t < end; t++) {
        const v = w[base + t];
        if (v > max) max = v; // NaN compares false
      }
    }
  }
  return max;
}

/**
 * Draws one head's history into `pixels` (an ImageData's Uint32Array, `stride` pixels per line)
 * at the device-pixel rectangle (x, y, width, height), token columns [from, to).
 */
export function rasterizeHead(
  pixels: Uint32Array,
  stride: number,
  x: number,
  y: number,
  width: number,
  height: number,
  rows: readonly HistoryRow[],
  layer: number,
  head: number,
  from: number,
  to: number,
  style: RasterStyle,
): void {
  if (width <= 0 || height <= 0) return;
  const span = Math.max(1, to - from);
  const line = new Uint32Array(width);
  // column → token range, computed once
  const t0s = new Int32Array(width);
  const t1s = new Int32Array(width);
  for (let c = 0; c < width; c++) {
    const a = from + Math.floor((c * span) / width);
    t0s[c] = a;
    t1s[c] = Math.max(a + 1, from + Math.floor(((c + 1) * span) / width));
  }
  const { excludeSink, index } = style;
  const R = rows.length;
  let drawnRow = -1;
  for (let py = 0; py < height; py++) {
    const offset = (y + py) * stride + x;
    if (R === 0) {
      pixels.fill(BACKGROUND, offset, offset + width);
      continue;
    }
    const r = Math.min(R - 1, Math.floor((py * R) / height));
    if (r !== drawnRow) {
      const row = rows[r];
      const base = (layer * row.heads + head) * row.tokens;
      const w = row.weights;
      for (let c = 0; c < width; c++) {
        const a = t0s[c];
        if (a >= row.tokens) {
          line[c] = BACKGROUND;
          continue;
        }
        const b = Math.min(t1s[c], row.tokens);
        let max = -1;
        let sinkOnly = false;
        for (let t = a; t < b; t++) {
          if (excludeSink && t === 0) {
            sinkOnly = b - a === 1;
            continue;
          }
          const v = w[base + t];
          if (v > max) max = v;
        }
        line[c] = sinkOnly ? SINK : max < 0 ? NOT_HELD : VIRIDIS_LUT[index(max)];
      }
      drawnRow = r;
    }
    pixels.set(line, offset);
  }
}

/** Canvas backing-store size for a CSS size at the device pixel ratio. */
export function fitCanvas(canvas: HTMLCanvasElement, cssWidth: number, cssHeight: number): { width: number; height: number; ratio: number } {
  const ratio = Math.max(1, Math.min(2, globalThis.devicePixelRatio || 1));
  const width = Math.max(1, Math.round(cssWidth * ratio));
  const height = Math.max(1, Math.round(cssHeight * ratio));
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  canvas.style.width = `${cssWidth}px`;
  canvas.style.height = `${cssHeight}px`;
  return { width, height, ratio };
}
