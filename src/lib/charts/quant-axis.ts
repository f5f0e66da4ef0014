/**
 * The entry axis shared by the quantization error view's charts (QuantEntries, QuantErrorMap,
 * QuantAttention): one column per held entry in cache order, so the charts line up above each other;
 * ticks are labelled with the entry's first token (entries skip evicted tokens).
 */

/** Left and right margins of every entry chart (px), so their columns align. */
export const ENTRY_LEFT = 46;
export const ENTRY_RIGHT = 12;

export interface EntryTick {
  index: number;
  /** centre of the entry's column (px from the plot's left) */
  x: number;
  /** its first token */
  token: number;
}

/** Ticks every ~70 px, at round entry indices. */
export function entryTicks(tokens: ArrayLike<number>, plotW: number): EntryTick[] {
  const n = tokens.length;
  if (n === 0) return [];
  const wanted = Math.max(2, Math.floor(plotW / 70));
  const raw = Math.max(1, n / wanted);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const every = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  const out: EntryTick[] = [];
  for (let i = 0; i < n; i += every) out.push({ index: i, x: ((i + 0.5) * plotW) / n, token: tokens[i] });
  return out;
}

/** Which entry a pixel x (from the plot's left) falls on; −1 outside. */
export function entryAt(x: number, n: number, plotW: number): number {
  const i = Math.floor((x / plotW) * n);
  return i >= 0 && i < n ? i : -1;
}
