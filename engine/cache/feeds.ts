/**
 * Graph feeds and the attention-bias layout (docs/model-format.md), in one place.
 *
 * Per layer l the graph gets T_l = the longest head's length slots per KV head:
 *   past_key_l / past_value_l  [Hkv, T_l, D]   head h fills slots [0, n_h) with its entries, the
 *                                              rest is zero padding
 *   attn_bias_l                [H, q, T_l + q] query head qh reads KV head ⌊qh / group⌋; a row is
 *                                              [cache slots | new tokens 0..q−1]
 * Bias values: 0 for a visible entry, log(count) for a merged one, MASK_BIAS for padding, for an
 * entry hidden from this forward and for new tokens later in the chunk (causal). Slot j of two
 * heads need not be the same token — each KV head's keys are a separate block — so padding is
 * all the alignment the graph needs.
 */
import type { LayerFeed } from '../runtime/forward.ts';
import type { HeadStore } from './head.ts';

/**
 * Additive bias that removes a slot from attention. A large finite negative rather than -Infinity:
 * exp underflows to exactly 0 either way, but a finite value cannot turn into NaN if a graph ever
 * scales or adds biases (−∞ · 0, −∞ + ∞). Every row always sees at least the new token itself,
 * so no row is fully masked.
 */
export const MASK_BIAS = -1e9;

/** Per-layer reusable feed buffers (grown by doubling, handed to the graph as exact-size views). */
export interface FeedScratch {
  keys: Float32Array;
  values: Float32Array;
  bias: Float32Array;
}

function ensureSize(buffer: Float32Array, size: number): Float32Array {
  if (buffer.length >= size) return buffer;
  let capacity = Math.max(16, buffer.length);
  while (capacity < size) capacity *= 2;
  return new Float32Array(capacity);
}

export interface FeedLayout {
  nKvHeads: number;
  nHeads: number;
  headDim: number;
  groupSize: number;
}

/** Slots the graph gets for a layer: its longest head. */
export function slotCount(heads: readonly HeadStore[]): number {
  let t = 0;
  for (const head of heads) t = Math.max(t, head.length);
  return t;
}

/** Whether two layers need identical attention biases (same head lengths, nothing merged or hidden). */
export function sameBias(a: readonly HeadStore[], b: readonly HeadStore[]): boolean {
  for (let h = 0; h < a.length; h++) {
    const x = a[h];
    const y = b[h];
    if (x.length !== y.length || x.mergedEntries !== 0 || y.mergedEntries !== 0 || x.hiddenEntries !== 0 || y.hiddenEntries !== 0) return false;
  }
  return true;
}

/** One layer's feed for q new tokens; `sharedBias` is an identical bias another layer built. */
export function buildLayerFeed(heads: readonly HeadStore[], layout: FeedLayout, scratch: FeedScratch, q: number, sharedBias: Float32Array | null): LayerFeed {
  const d = layout.headDim;
  const t = slotCount(heads);
  const kvSize = layout.nKvHeads * t * d;
  scratch.keys = ensureSize(scratch.keys, kvSize);
  scratch.values = ensureSize(scratch.values, kvSize);
  const keys = scratch.keys.subarray(0, kvSize); // [Hkv, T, D]
  const values = scratch.values.subarray(0, kvSize);
  for (let h = 0; h < layout.nKvHeads; h++) {
    const head = heads[h];
    const n = head.length;
    keys.set(head.data.keys.subarray(0, n * d), h * t * d);
    values.set(head.data.values.subarray(0, n * d), h * t * d);
    if (n < t) {
      // padding slots are masked, but keep them finite and deterministic
      keys.fill(0, (h * t + n) * d, (h + 1) * t * d);
      values.fill(0, (h * t + n) * d, (h + 1) * t * d);
    }
  }

  const rowLength = t + q;
  const biasSize = layout.nHeads * q * rowLength; // [H, q, T + q]
  if (sharedBias) return { length: t, keys, values, bias: sharedBias };
  scratch.bias = ensureSize(scratch.bias, biasSize);
  const bias = scratch.bias.subarray(0, biasSize);
  for (let qh = 0; qh < layout.nHeads; qh++) {
    const head = heads[Math.floor(qh / layout.groupSize)];
    const n = head.length;
    const { count, hidden } = head.data;
    for (let row = 0; row < q; row++) {
      const base = (qh * q + row) * rowLength;
      if (head.mergedEntries === 0) bias.fill(0, base, base + n);
      else for (let j = 0; j < n; j++) bias[base + j] = count[j] === 1 ? 0 : Math.log(count[j]);
      if (head.hiddenEntries > 0 && hidden) for (let j = 0; j < n; j++) if (hidden[j]) bias[base + j] = MASK_BIAS;
      bias.fill(MASK_BIAS, base + n, base + t);
      // causal among the new tokens: row sees new tokens 0..row
      bias.fill(0, base + t, base + t + row + 1);
      bias.fill(MASK_BIAS, base + t + row + 1, base + rowLength);
    }
  }
  return { length: t, keys, values, bias };
}

/**
 * Attention of query head `queryHead`, new-token row `row`, mapped onto its KV head's entries:
 * the `before` entries held when the graph was fed, then the new tokens 0..row.
 * `attn` is the graph's attn_l output [H, q, T + q] for a feed of T slots.
 */
export function entryAttention(attn: Float32Array, queryHead: number, row: number, q: number, slots: number, before: number, out?: Float32Array): Float32Array {
  const rowLength = slots + q;
  const base = (queryHead * q + row) * rowLength;
  const size = before + row + 1;
  const result = out && out.length === size ? out : new Float32Array(size);
  result.set(attn.subarray(base, base + before), 0);
  result.set(attn.subarray(base + slots, base + slots + row + 1), before);
  return result;
}
