/**
 * The quantization error view's payload (the `quant` command's reply, protocol.ts), packed by
 * pack-quant.ts. Big per-entry and per-element columns travel as typed arrays (quantTransferables).
 *
 * Two sources: `live` — the newest step of a live session, measured against the K/V the model
 * computed (engine/quant/error-report.ts: per-element error, the current query's score error and
 * attention with and without the codec); `trace` — an older step or an imported trace, where only
 * what the trace recorded exists (each held entry's codec name and the error its method recorded
 * when it re-encoded it).
 */
import type { MergeMadeAt } from './protocol.ts';

/** One codec the head's entries are stored under. */
export interface QuantCodecView {
  name: string;
  /** entries of the head under it */
  entries: number;
  /** bits per stored key / value element; null where the trace does not say (trace source) */
  kBits: number | null;
  vBits: number | null;
  /** stored key / value elements per entry (headDim unless pruned / projected); null when unknown */
  kElements: number | null;
  vElements: number | null;
  groupSize: number | null;
  rank: number | null;
}

/** The head's entries in cache order, as columns. */
export interface QuantEntriesView {
  /** first origin token of each entry */
  tokens: Int32Array;
  /** tokens each entry stands for (1 unless merged; a trace-source view counts the replay's origin tokens) */
  counts: Int32Array;
  /** index into QuantView.codecs; −1: plain fp32 (full precision) */
  codec: Int16Array;
  /** bits per stored key / value element: 32 for plain entries, NaN where the trace does not say */
  kBits: Float32Array;
  vBits: Float32Array;
  /**
   * relative L2 error ‖x − x̂‖ / ‖x‖ of each entry's key / value: 0 for plain entries; from a trace
   * the method's record (a part without one, beside one with, counts 0: it was not re-encoded),
   * NaN where the method recorded none
   */
  kError: Float32Array;
  vError: Float32Array;
}

/** Per element of the head (live source only): what the codec changed, channel by channel. */
export interface QuantElementsView {
  headDim: number;
  /** [entries × headDim] x − x̂ (exact minus stored) */
  kAbsolute: Float32Array;
  vAbsolute: Float32Array;
  /** [entries × headDim] (x − x̂) / RMS of the entry's exact vector (the RMS of a row is the entry's relative L2 error); NaN: x all zero but not kept */
  kRelative: Float32Array;
  vRelative: Float32Array;
  /** [entries × headDim] CHANNEL_FLAG bits (engine/quant/error-report.ts): 1 key outlier, 2 value outlier, 4 key channel pruned */
  flags: Uint8Array;
}

/** The bars: one value per layer, every KV head's entries together. */
export interface QuantLayersView {
  /** mean relative L2 error of keys / values over the layer's entries (plain ones count 0; trace: entries with a recorded error only) */
  k: Float32Array;
  v: Float32Array;
  held: Int32Array;
  encoded: Int32Array;
  /** re-encoded entries whose error is not known (trace source: the method recorded none) */
  unknown: Int32Array;
}

/** The current query's view of the codec (live source only), per query head of the KV head. */
export interface QuantAttentionView {
  queryHeads: number[];
  /** the graph's score scale, 1 / sqrt(headDim) */
  scale: number;
  /** [queryHead][entry] flattened: scale · q · (k − k̂) */
  scoreError: Float32Array;
  /** [queryHead][entry] softmax attention with the exact keys and with the stored keys (log count bias for merged entries) */
  exact: Float32Array;
  stored: Float32Array;
  /** per query head: relative L2 error of the attention output (exact K/V vs stored) */
  outputError: number[];
}

/** The effective-bits gauge: the whole cache after the shown event (its MemoryReport). */
export interface QuantBitsView {
  /** stored bits per held K/V element, metadata and codec groups included (32 = plain fp32) */
  whole: number;
  /** the same for keys and for values alone */
  k: number;
  v: number;
  kBytes: number;
  vBytes: number;
  /** bytes of shared codec groups (included above) */
  groupBytes: number;
  /** the full fp32 cache for the same tokens */
  fullBytes: number;
  heldEntries: number;
}

/** ThinK's key-channel saliency of the selected head (headMeasures channel_saliency / pruned_channels). */
export interface QuantSaliencyView {
  /** the event the measures come from */
  from: MergeMadeAt;
  /** [channel] saliency (empty when not measured) */
  saliency: number[];
  /** key channels pruned, ascending */
  pruned: number[];
}

/** A low-rank method's singular values and chosen ranks of the selected head (headMeasures k/v_singular_values, k/v_rank). */
export interface QuantSpectrumView {
  from: MergeMadeAt;
  /** descending singular values (empty when not measured) */
  k: number[];
  v: number[];
  kRank: number | null;
  vRank: number | null;
}

export type QuantSource = 'live' | 'trace';

/** The quantization error view of one layer × KV head after one decode step. */
export interface QuantView {
  /** decode step (−1: after the prompt) */
  step: number;
  layer: number;
  kvHead: number;
  /** tokens fed up to the shown point */
  tokens: number;
  /** entries the head holds */
  held: number;
  /** the policy in charge at the shown point */
  policy: string;
  source: QuantSource;
  /** why the per-element error or the attention are absent, in words; null when both are there */
  limits: string | null;
  codecs: QuantCodecView[];
  entries: QuantEntriesView;
  elements: QuantElementsView | null;
  layers: QuantLayersView;
  attention: QuantAttentionView | null;
  bits: QuantBitsView;
  saliency: QuantSaliencyView | null;
  spectrum: QuantSpectrumView | null;
  /** entries the shown decision(s) re-encoded, all heads together */
  madeInAllHeads: number;
}

/** The typed arrays of a quant view, for postMessage's transfer list. */
export function quantTransferables(view: QuantView): ArrayBuffer[] {
  const arrays: ArrayBufferView[] = [...Object.values(view.entries), ...Object.values(view.layers).filter((a) => ArrayBuffer.isView(a))];
  if (view.elements) arrays.push(view.elements.kAbsolute, view.elements.vAbsolute, view.elements.kRelative, view.elements.vRelative, view.elements.flags);
  if (view.attention) arrays.push(view.attention.scoreError, view.attention.exact, view.attention.stored);
  return [...new Set(arrays.map((a) => a.buffer as ArrayBuffer))];
}
