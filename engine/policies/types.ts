/**
 * The policy interface (docs/architecture.md, "Stages" and "Decisions").
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
import type { Decision } from '../cache/decision.ts';
import type { PolicyCache } from '../cache/view.ts';
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
  /** a cache budget (entries, or a ratio below 1): the registry's contract suite tries 1, 2 and 3 */
  budget?: boolean;
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
  /** prefix of the store columns this instance declares (compositions give each member its own) */
  columnPrefix?: string;
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
// Decisions are the store's input language (engine/cache/decision.ts).

export type { CodecGroup, Decision, EntryCodec, HeadDecision, MergeGroup, Reencode, Reposition } from '../cache/decision.ts';
export { NO_CHANGE } from '../cache/decision.ts';

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

/** `portable`: everything, store columns included (JSON you can load into a fresh cache); `session`: without what the cache snapshot already holds. */
export type StateScope = 'portable' | 'session';

export interface Policy {
  readonly id: string;
  readonly params: PolicyParams;
  readonly needs: PolicyNeeds;
  /** heads this policy protects or selects with (fixed for the policy's lifetime); absent = none */
  readonly protects?: ProtectedHeads;
  /** what the policy does when attached mid-run without the history it usually keeps (for the trace and UI) */
  readonly withoutHistory?: string;
  /** called when the policy takes over a cache mid-session (setPolicy); default: no change */
  onAttach?(cache: PolicyCache): Decision;
  afterPrefill(cache: PolicyCache, observation: PrefillObservation): Decision;
  afterStep(cache: PolicyCache, observation: StepObservation): Decision;
  /** forget accumulated state (new prompt) */
  reset(): void;
  /** JSON-serialisable state for snapshots; stateless policies return null */
  getState(scope?: StateScope): JsonValue;
  setState(state: JsonValue): void;
}

/**
 * How one evaluation budget B — the entries a KV head may hold — sets a method's parameters, so
 * that "h2o at 128" and "window at 128" hold about the same memory (`kvscope eval`, /bench).
 */
export interface BudgetRule {
  /** parameters B maps to */
  params: readonly string[];
  /** the parameter values for budget B (B ≥ min) */
  map(budget: number): Record<string, ParamValue>;
  /** the mapping in words, e.g. "sinks = 4, recent = B − 4" */
  text: string;
  /** what B bounds for this method */
  scope: string;
  /** smallest budget the mapping accepts */
  min: number;
}

export interface PolicyDefinition {
  id: string;
  label: string;
  description: string;
  paper: Citation;
  params: readonly ParamSpec[];
  needs: PolicyNeeds;
  /** how an evaluation budget sets its parameters; absent: evaluated only as given */
  budget?: BudgetRule;
  /**
   * set when the method holds every entry whatever its parameters (it saves bytes, not entries):
   * what it keeps and saves, in words; evaluations run it once, as given (engine/eval/budgets.ts)
   */
  holdsEveryEntry?: string;
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
