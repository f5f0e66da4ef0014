/**
 * Attention sinks (Xiao et al. 2024, "Efficient Streaming Language Models with Attention Sinks"):
 * the share of attention every query puts on the first token (BOS, position 0), per layer and
 * query head, averaged over query positions ≥ minQueryPosition of held-out windows.
 *
 * The windows are prefilled in chunks straight through the graph (the engine's cache store builds
 * the feeds; no policy, no trace), reading the graph's attn_l rows. For comparison the report
 * also gives what uniform attention would put on token 0: the mean of 1/(position + 1).
 */
import { KVCacheStore } from '../cache/store.ts';
import type { Forward } from '../runtime/forward.ts';

export interface SinkOptions {
  /** only query rows at positions ≥ this count (default 16) */
  minQueryPosition?: number;
  /** prefill chunk (default 128) */
  chunk?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface SinkReport {
  windows: number;
  windowTokens: number;
  minQueryPosition: number;
  /** query rows averaged per head */
  queries: number;
  /** [layer] mean attention on token 0 over heads and queries */
  layers: number[];
  /** [layer][queryHead] mean attention on token 0 */
  heads: number[][];
  /** mean over layers */
  mean: number;
  /** what uniform attention would give: mean of 1/(position+1) over the same queries */
  uniform: number;
}

/**
 * Adds, for each query head, the attention that rows at positions ≥ minPosition of one forward put
 * on token 0, and returns the number of rows counted. `attn` is [H, q, slots + q] over a full cache
 * (slot 0 is token 0; with an empty cache the first new token is).
 */
export function addSinkMass(
  attn: Float32Array,
  nHeads: number,
  q: number,
  slots: number,
  firstPosition: number,
  minPosition: number,
  sums: Float64Array,
): number {
  const rowLength = slots + q;
  // Token 0 is column 0 either way: cache slot 0 of a full cache, or the first new token of the first chunk.
  const column = 0;
  let rows = 0;
  for (let row = 0; row < q; row++) {
    if (firstPosition + row < minPosition) continue;
    rows++;
    for (let h = 0; h < nHeads; h++) sums[h] += attn[(h * q + row) * rowLength + column];
  }
  return rows;
}

/** Measures attention on token 0 over `windows` (each a token sequence that starts with BOS). */
export async function attentionSinks(forward: Forward, windows: readonly (readonly number[])[], options: SinkOptions = {}): Promise<SinkReport> {
  const dims = forward.dims;
  const { nLayers, nHeads } = dims;
  const minPosition = options.minQueryPosition ?? 16;
  const chunk = options.chunk ?? 128;
  const sums = Array.from({ length: nLayers }, () => new Float64Array(nHeads));
  let queries = 0;
  let uniform = 0;
  for (let w = 0; w < windows.length; w++) {
    const ids = windows[w];
    if (ids.length > dims.contextLength) throw new RangeError(`window ${w} has ${ids.length} tokens, the context is ${dims.contextLength}`);
    const cache = new KVCacheStore(dims, null, ids.length);
    for (let start = 0; start < ids.length; start += chunk) {
      const q = Math.min(chunk, ids.length - start);
      const positions = Array.from({ length: q }, (_, i) => start + i);
      const result = await forward.run({ inputIds: ids.slice(start, start + q), positionIds: positions, layers: cache.buildFeeds(q), attention: true, queries: false });
      let rows = 0;
      for (let l = 0; l < nLayers; l++) rows = addSinkMass(result.attention![l], nHeads, q, result.pastLengths[l], start, minPosition, sums[l]);
      queries += rows;
      for (let i = 0; i < q; i++) if (start + i >= minPosition) uniform += 1 / (start + i + 1);
      cache.appendForward(result.keys, result.values, q, positions, start);
    }
    options.onProgress?.(w + 1, windows.length);
  }
  const heads = sums.map((row) => Array.from(row, (s) => (queries ? s / queries : 0)));
  const layers = heads.map((row) => row.reduce((a, b) => a + b, 0) / nHeads);
  return {
    windows: windows.length,
    windowTokens: windows[0]?.length ?? 0,
    minQueryPosition: minPosition,
    queries,
    layers,
    heads,
    mean: layers.reduce((a, b) => a + b, 0) / Math.max(1, nLayers),
    uniform: queries ? uniform / queries : 0,
  };
}
