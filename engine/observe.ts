/**
 * What policies observe of a forward (policies/types.ts PrefillObservation, StepObservation):
 * the graph's attention rows [H, q, T + q] mapped back onto each KV head's entries.
 *
 * A head that held n_h entries when the graph was fed occupies slots [0, n_h) of the T padded
 * slots; the new tokens follow at T..T+q−1. Entry j of KV head ⌊qh / group⌋ is slot j (j < n_h),
 * then new token k is slot T + k.
 */
import { entryAttention } from './cache/feeds.ts';
import type { CacheView } from './cache/view.ts';
import type { PolicyNeeds, PrefillObservation } from './policies/types.ts';
import type { ForwardResult, ModelDims } from './runtime/forward.ts';

/** Entries per [layer][kvHead] right now. */
export function headLengths(cache: CacheView): number[][] {
  return Array.from({ length: cache.nLayers }, (_, l) => Array.from({ length: cache.nKvHeads }, (_, h) => cache.length(l, h)));
}

export function emptyPrefillObservation(firstToken: number, tokenCount: number): PrefillObservation {
  return { firstToken, tokenCount, attentionSums: null, windowAttention: null, windowQueries: null, windowRows: 0 };
}

/** Buffers for a prefill of n tokens: attention sums per entry, and the last `window` rows in full. */
export function startPrefillObservation(dims: ModelDims, cache: CacheView, needs: PolicyNeeds, n: number, window: number, firstToken: number): PrefillObservation | null {
  if (!needs.attention && window === 0) return null;
  const { nLayers, nHeads, groupSize, headDim } = dims;
  const total = (layer: number, qh: number) => cache.length(layer, Math.floor(qh / groupSize)) + n;
  const perHead = (size: (l: number, qh: number) => number) =>
    Array.from({ length: nLayers }, (_, l) => Array.from({ length: nHeads }, (_, qh) => new Float32Array(size(l, qh))));
  return {
    firstToken,
    tokenCount: n,
    attentionSums: needs.attention ? perHead(total) : null, // [L][H][entries]
    windowAttention: window > 0 ? perHead((l, qh) => window * total(l, qh)) : null, // [L][H][window × entries]
    windowQueries: window > 0 && needs.queries ? Array.from({ length: nLayers }, () => new Float32Array(nHeads * window * headDim)) : null, // [L][H × window × D]
    windowRows: window,
  };
}

/** Adds one prefill chunk's attention rows (prompt rows start..start+q−1 of n) to the observation. */
export function observePrefillChunk(dims: ModelDims, obs: PrefillObservation, result: ForwardResult, before: number[][], start: number, n: number, window: number): void {
  const { nLayers, nHeads, groupSize, headDim } = dims;
  const q = result.q;
  const firstWindowRow = n - window;
  for (let l = 0; l < nLayers; l++) {
    const attn = result.attention![l]; // [H, q, T + q]
    const slots = result.pastLengths[l];
    const rowLength = slots + q;
    for (let qh = 0; qh < nHeads; qh++) {
      const held = before[l][Math.floor(qh / groupSize)];
      const sums = obs.attentionSums?.[l][qh];
      const entries = sums ? sums.length : obs.windowAttention![l][qh].length / window;
      for (let row = 0; row < q; row++) {
        const base = (qh * q + row) * rowLength;
        if (sums) {
          for (let j = 0; j < held; j++) sums[j] += attn[base + j];
          for (let k = 0; k <= row; k++) sums[held + k] += attn[base + slots + k];
        }
        const promptRow = start + row;
        if (obs.windowAttention && promptRow >= firstWindowRow) {
          const w = promptRow - firstWindowRow;
          const out = obs.windowAttention[l][qh];
          const offset = w * entries;
          out.set(attn.subarray(base, base + held), offset);
          out.set(attn.subarray(base + slots, base + slots + row + 1), offset + held);
          if (obs.windowQueries && result.queries) {
            obs.windowQueries[l].set(result.queries[l].subarray((qh * q + row) * headDim, (qh * q + row + 1) * headDim), (qh * window + w) * headDim);
          }
        }
      }
    }
  }
}

/** A decode step's attention per [layer][queryHead] over its KV head's entries (the cache as fed + the new token). */
export function stepAttention(dims: ModelDims, result: ForwardResult, before: number[][]): Float32Array[][] {
  const { nLayers, nHeads, groupSize } = dims;
  const out: Float32Array[][] = [];
  for (let l = 0; l < nLayers; l++) {
    const row: Float32Array[] = [];
    const attn = result.attention![l]; // [H, 1, T + 1]
    const slots = result.pastLengths[l];
    for (let qh = 0; qh < nHeads; qh++) {
      const held = before[l][Math.floor(qh / groupSize)];
      // A head without padding slots sees [its entries, the new token] contiguously: a view, no copy.
      row.push(held === slots ? attn.subarray(qh * (slots + 1), (qh + 1) * (slots + 1)) : entryAttention(attn, qh, 0, 1, slots, held));
    }
    out.push(row);
  }
  return out;
}

/**
 * Row `row` of a q-token forward as a decode step would have seen it: per [layer][queryHead] the
 * attention over its KV head's entries as fed (`before`, the lengths at the block's start), then the
 * block's tokens 0..row. Causal masking gives the later block tokens no weight, so when nothing
 * changed the cache between rows these are the step's own attention rows (Session.feedBlock).
 */
export function blockRowAttention(dims: ModelDims, result: ForwardResult, before: number[][], row: number): Float32Array[][] {
  const { nLayers, nHeads, groupSize } = dims;
  return Array.from({ length: nLayers }, (_, l) =>
    Array.from({ length: nHeads }, (_, qh) => entryAttention(result.attention![l], qh, row, result.q, result.pastLengths[l], before[l][Math.floor(qh / groupSize)])),
  );
}

/** Row `row` of per-layer blocks laid out [heads, q, D] (new keys, values, queries) as [heads, 1, D]. */
export function blockRows(blocks: readonly Float32Array[], heads: number, q: number, headDim: number, row: number): Float32Array[] {
  return blocks.map((block) => {
    const out = new Float32Array(heads * headDim);
    for (let h = 0; h < heads; h++) out.set(block.subarray((h * q + row) * headDim, (h * q + row + 1) * headDim), h * headDim);
    return out;
  });
}
