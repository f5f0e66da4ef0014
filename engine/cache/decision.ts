/**
 * Decisions: the language in which a policy tells the store what to do with one step's cache
 * (docs/architecture.md, "Decisions"). A policy never mutates the cache; it returns a Decision —
 * per layer / KV head: which entries stay, which merge (groups + weights, or vectors the method
 * computed), which are re-encoded (codec + error, optionally charged to a shared codec group),
 * which move to a new RoPE position, which stay but are hidden from the next forward — and the
 * scores behind it. The store validates every head before changing any, applies it and reports
 * what happened (AppliedDecision), which the trace records.
 *
 * Indices in a decision always refer to the head's entries as the policy saw them (before
 * applying). Entries neither kept nor merged are evicted. A head must keep at least one entry.
 */

/** How an entry is stored when it is not plain fp32 (quantized, channel-pruned, low-rank, shared…). */
export interface EntryCodec {
  /** codec name, e.g. "kivi-2" */
  name: string;
  /** bits per stored key / value element */
  kBits: number;
  vBits: number;
  /** stored key / value elements (headDim unless channels were pruned or projected) */
  kElements: number;
  vElements: number;
  /** metadata bytes of this entry alone (its own scale, norm, outliers) */
  kMetaBytes: number;
  vMetaBytes: number;
  /**
   * id of the CodecGroup whose bytes (shared scales, zero points, codebooks, low-rank factors, a
   * direction shared across layers) this entry uses. The group is charged once while any member
   * lives, in any layer or head, and is gone with its last member.
   */
  group?: string;
  /** quantization group size or rank, for views */
  groupSize?: number;
  rank?: number;
  /** key / value channels of this entry stored exactly beside the codes (outliers: GEAR, MiKV), for views */
  kOutliers?: readonly number[];
  vOutliers?: readonly number[];
  /** key channels dropped from this entry (ThinK), for views */
  kPruned?: readonly number[];
}

/**
 * The key and value an entry held before its first codec (what the model computed), kept by the
 * store for error views only: not part of the cache's memory, never fed to the graph.
 */
export interface ExactEntry {
  keys: Float32Array;
  values: Float32Array;
}

/** Bytes shared by the entries that name it in EntryCodec.group. */
export interface CodecGroup {
  id: string;
  kBytes: number;
  vBytes: number;
  /** what the bytes are, for views (e.g. "per-channel scales of tokens 0–31") */
  label?: string;
}

export interface MergeGroup {
  /** entry indices merged into one entry (≥ 2, none of them in `keep`) */
  members: readonly number[];
  /** weights per member (same order), normally summing to 1; used for K/V unless given below, and for `weighted` columns */
  weights: readonly number[];
  /** member whose place in the order (and, unless `pos`, position) the merged entry takes; default first member */
  anchor?: number;
  /** RoPE position of the merged key; default the anchor's */
  pos?: number;
  /**
   * tokens the merged entry counts for in the attention bias (log count); default the members'
   * counts summed. 1 = an unweighted merge (no bias). Its origin always lists every member's tokens.
   */
  count?: number;
  /** merged key / value the method computed (SLERP, centroids), headDim floats; default Σ w·member */
  keys?: Float32Array;
  values?: Float32Array;
}

export interface Reencode {
  /** entry index (must be kept) */
  index: number;
  codec: EntryCodec;
  /** the dequantized key/value the graph will see from now on (headDim floats); omitted = unchanged */
  keys?: Float32Array;
  values?: Float32Array;
  /** reconstruction error the policy measured (e.g. relative L2), for the trace */
  kError?: number;
  vError?: number;
}

export interface Reposition {
  /** entry index (must be kept) */
  index: number;
  /** new RoPE position; the engine re-rotates the key by the delta */
  pos: number;
}

export interface HeadDecision {
  /** ascending indices of entries that stay (possibly re-encoded / repositioned / hidden) */
  keep: ArrayLike<number>;
  merge?: readonly MergeGroup[];
  reencode?: readonly Reencode[];
  reposition?: readonly Reposition[];
  /**
   * kept entries hidden from the next forward's attention only (query-aware sparse attention):
   * they stay in the cache and in memory, and are visible again after that forward
   */
  hide?: ArrayLike<number>;
  /** score per entry (indexed like the view), stored on the surviving entries */
  scores?: ArrayLike<number>;
}

export interface Decision {
  /** [layer][kvHead]; null at any level means "unchanged" */
  layers: ReadonlyArray<ReadonlyArray<HeadDecision | null> | null> | null;
  /** RoPE position for the next token (P2 policies); default: its token index */
  nextPosition?: number;
  /** codec groups the re-encodes of this decision refer to (new ones; existing ids may be named again) */
  groups?: readonly CodecGroup[];
  /** [layer][kvHead] entries the method allows each head (its allocation), for the trace and views */
  budgets?: readonly (readonly number[])[];
  /** one line for the trace, e.g. "evicted 1 entry per head (window 128)" */
  note?: string;
  /**
   * per-layer measurements behind the decision, for views and the trace: name → one number per
   * layer (NaN where none), e.g. MiniCache's `pair_similarity`
   */
  measures?: Readonly<Record<string, readonly number[]>>;
  /**
   * per-head measurements behind the decision, for views: name → [layer][kvHead] → numbers (any
   * length; empty where none), e.g. ThinK's `channel_saliency`, a low-rank method's `singular_values`
   */
  headMeasures?: Readonly<Record<string, ReadonlyArray<ReadonlyArray<readonly number[]>>>>;
}

export const NO_CHANGE: Decision = Object.freeze({ layers: null });
