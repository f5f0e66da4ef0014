/**
 * The policy interface (DESIGN.md §4).
 *
 * A policy never mutates the cache. Its hooks receive a read-only view of the cache plus what the
 * forward produced (attention, queries) and return an explicit Decision — per layer / KV head:
 * which entries stay, which merge (groups + weights), which are re-encoded (codec + error), which
 * move to a new RoPE position, and the scores behind it. The engine validates and applies the
 * decision and the trace records it, so the UI can show both the plan and its effect.
 *
 * Indices in a decision always refer to the head's entries as the hook saw them (before applying).
 * Entries neither kept nor merged are evicted. A head must keep at least one entry.
 */
import type { CacheView, EntryCodec } from '../cache/store.ts';
import type { Calibration } from '../calibration/format.ts';
import type { ModelDims } from '../runtime/forward.ts';
import type { Rope } from '../model/rope.ts';
import type { JsonValue } from '../types.ts';

// ---------------------------------------------------------------------------------------------
// Parameters: a typed schema the UI builds controls from and spec strings are checked against.

export type ParamValue = number | string | boolean;
export type PolicyParams = Readonly<Record<string, ParamValue>>;

interface ParamSpecBase {
  name: string;
  description: string;
}
export interface IntParamSpec extends ParamSpecBase {
  kind: 'int';
  default: number;
  min?: number;
  max?: number;
}
export interface FloatParamSpec extends ParamSpecBase {
  kind: 'float';
  default: number;
  min?: number;
  max?: number;
}
export interface EnumParamSpec extends ParamSpecBase {
  kind: 'enum';
  default: string;
  choices: readonly string[];
}
export interface BoolParamSpec extends ParamSpecBase {
  kind: 'bool';
  default: boolean;
}
export type ParamSpec = IntParamSpec | FloatParamSpec | EnumParamSpec | BoolParamSpec;

export interface Citation {
  /** short form shown in the UI, e.g. "Xiao et al., 2024 (ICLR)" */
  short: string;
  title: string;
  url?: string;
  /** reference implementation read before implementing, if any */
  code?: string;
}

export interface PolicyNeeds {
  /** attention of the new queries over the cache entries (StepObservation.attention, prefill sums) */
  attention: boolean;
  /** post-RoPE queries (ThinK, SnapKV windows, …) */
  queries: boolean;
  /** offline calibration data (head detection, PCA bases, codebooks) */
  calibration: boolean;
  /** number of last prompt rows whose full attention afterPrefill receives (SnapKV window); 0/absent = none */
  prefillWindow?: number;
}

// ---------------------------------------------------------------------------------------------
// What the hooks see.

export interface PolicyContext {
  dims: ModelDims;
  rope: Rope;
  /** offline head / layer statistics of this model (engine/calibration), when one was supplied */
  calibration?: Calibration | null;
  /** why no calibration was supplied (e.g. a stale calibration.json), for the error a policy that needs one raises */
  calibrationError?: string;
}

export interface PrefillObservation {
  /** token index of the first prompt token of this prefill, and how many were fed */
  firstToken: number;
  tokenCount: number;
  /**
   * [layer][queryHead] → Σ over every prompt query row of its attention to each entry of the
   * query head's KV head (entry order of the cache now). null unless needs.attention.
   */
  attentionSums: Float32Array[][] | null;
  /**
   * [layer][queryHead] → rows × entries: full attention rows of the last `windowRows` prompt
   * queries (0 for entries a row could not see). null unless needs.prefillWindow.
   */
  windowAttention: Float32Array[][] | null;
  /** [layer] → [H, windowRows, D] post-RoPE queries of the same rows; null unless needs.queries and a window */
  windowQueries: Float32Array[] | null;
  windowRows: number;
}

export interface StepObservation {
  /** decode step number since the session started (0-based) */
  step: number;
  /** token index and RoPE position of the token just fed */
  tokenIndex: number;
  position: number;
  /**
   * [layer][queryHead] → attention of the new query over the entries of its KV head, in the
   * cache's current order (the new token's own entry is last). null unless needs.attention.
   */
  attention: Float32Array[][] | null;
  /** [layer] → [H, D] post-RoPE query of the new token; null unless needs.queries */
  queries: Float32Array[] | null;
}

// ---------------------------------------------------------------------------------------------
// Decisions.

export interface MergeGroup {
  /** entry indices merged into one entry (≥ 2, none of them in `keep`) */
  members: readonly number[];
  /** weights of K and V per member (same order), normally summing to 1 */
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
  /** ascending indices of entries that stay (possibly re-encoded / repositioned) */
  keep: ArrayLike<number>;
  merge?: readonly MergeGroup[];
  reencode?: readonly Reencode[];
  reposition?: readonly Reposition[];
  /** score per entry (indexed like the view), stored on the surviving entries */
  scores?: ArrayLike<number>;
}

export interface Decision {
  /** [layer][kvHead]; null at any level means "unchanged" */
  layers: ReadonlyArray<ReadonlyArray<HeadDecision | null> | null> | null;
  /** RoPE position for the next token (P2 policies); default: its token index */
  nextPosition?: number;
  /** one line for the trace, e.g. "evicted 1 entry per head (window 128)" */
  note?: string;
}

export const NO_CHANGE: Decision = Object.freeze({ layers: null });

// ---------------------------------------------------------------------------------------------

/**
 * Heads a policy treats specially, for views (the explorer's retrieval-head map): KV heads that
 * keep their whole cache (RazorAttention's retrieval heads) and query heads whose attention alone
 * steers the selection (CompressKV's semantic retrieval heads).
 */
export interface ProtectedHeads {
  /** one line saying what the marks mean, e.g. "retrieval heads keep the full cache" */
  description: string;
  /** [layer][kvHead] true for KV heads that keep every entry; null when the policy protects none this way */
  kvHeads: boolean[][] | null;
  /** [layer][queryHead] true for query heads whose scores select the layer's entries; null when none */
  queryHeads: boolean[][] | null;
}

export interface Policy {
  readonly id: string;
  readonly params: PolicyParams;
  readonly needs: PolicyNeeds;
  /** heads this policy protects or selects with (fixed for the policy's lifetime); absent = none */
  readonly protects?: ProtectedHeads;
  /** called when the policy takes over a cache mid-session (setPolicy); default: no change */
  onAttach?(cache: CacheView): Decision;
  afterPrefill(cache: CacheView, observation: PrefillObservation): Decision;
  afterStep(cache: CacheView, observation: StepObservation): Decision;
  /** forget accumulated state (new prompt) */
  reset(): void;
  /** JSON-serialisable state for snapshots; stateless policies return null */
  getState(): JsonValue;
  setState(state: JsonValue): void;
}

export interface PolicyDefinition {
  id: string;
  label: string;
  description: string;
  paper: Citation;
  params: readonly ParamSpec[];
  needs: PolicyNeeds;
  /** `params` are complete and validated against the schema */
  create(params: PolicyParams, context: PolicyContext): Policy;
}

/** Reads a validated integer parameter. */
export function intParam(params: PolicyParams, name: string): number {
  const value = params[name];
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new TypeError(`parameter ${name} is not an integer`);
  return value;
}

/** Reads a validated float parameter. */
export function floatParam(params: PolicyParams, name: string): number {
  const value = params[name];
  if (typeof value !== 'number') throw new TypeError(`parameter ${name} is not a number`);
  return value;
}

/** Reads a validated enum parameter. */
export function enumParam(params: PolicyParams, name: string): string {
  const value = params[name];
  if (typeof value !== 'string') throw new TypeError(`parameter ${name} is not a string`);
  return value;
}

/** Reads a validated boolean parameter. */
export function boolParam(params: PolicyParams, name: string): boolean {
  const value = params[name];
  if (typeof value !== 'boolean') throw new TypeError(`parameter ${name} is not a boolean`);
  return value;
}

/** Indices from..to-1 as an Int32Array (the common "keep a contiguous range" decision). */
export function indexRange(from: number, to: number): Int32Array {
  const out = new Int32Array(Math.max(0, to - from));
  for (let i = 0; i < out.length; i++) out[i] = from + i;
  return out;
}

/** A decision that applies `perHead(layer, kvHead, length)` to every head (null = unchanged). */
export function decideEveryHead(
  cache: CacheView,
  perHead: (layer: number, kvHead: number, length: number) => HeadDecision | null,
  note?: string,
): Decision {
  const layers: (HeadDecision | null)[][] = [];
  let changed = false;
  for (let l = 0; l < cache.nLayers; l++) {
    const heads: (HeadDecision | null)[] = [];
    for (let h = 0; h < cache.nKvHeads; h++) {
      const decision = perHead(l, h, cache.length(l, h));
      if (decision) changed = true;
      heads.push(decision);
    }
    layers.push(heads);
  }
  return changed ? { layers, note } : NO_CHANGE;
}
