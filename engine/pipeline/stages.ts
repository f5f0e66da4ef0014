/**
 * The stages a KV-cache method is built from (docs/architecture.md, "Stages"). kvpress's lesson: a
 * method is mostly its score; budgets, the keep rule and what happens to the rest are separate,
 * reusable pieces. The pipeline (pipeline.ts) owns the one layer × KV head loop and calls:
 *
 *   Scorer     observes each forward (attention, queries, keys) and keeps per-entry scores in
 *              store-owned columns (cache/view.ts ColumnSpec), so they stay aligned with the
 *              entries through eviction, merges, snapshots and forks without the method's help
 *   Allocator  sets the budget of every layer × KV head (uniform, PyramidKV, density, error-aware)
 *   Selector   picks the entries a head over its budget keeps (sinks + recent + top-k, windows, …)
 *   Transform  decides what becomes of the rest or of the kept (merge into the nearest, a
 *              compensation token, P2 re-rotation, re-encoding)
 *
 * Every stage is deterministic; stages with state beyond columns expose it as JSON (StageState).
 */
import type { CodecGroup, MergeGroup, Reencode, Reposition } from '../cache/decision.ts';
import type { ColumnSpec, PolicyCache } from '../cache/view.ts';
import type { Calibration } from '../calibration/format.ts';
import type { Rope } from '../model/rope.ts';
import { indexRange, type PolicyNeeds, type PrefillObservation, type StepObservation } from '../policies/types.ts';
import type { ModelDims } from '../runtime/forward.ts';
import type { JsonValue } from '../types.ts';

export type Phase = 'prefill' | 'step' | 'attach';

/** What every stage sees when the pipeline runs a hook. */
export interface StageEnv {
  cache: PolicyCache;
  dims: ModelDims;
  /** null outside a policy (standalone decisions) */
  rope: Rope | null;
  calibration: Calibration | null;
  phase: Phase;
  /** tokens fed when the method last saw a prompt (or was attached): ratio budgets resolve against it */
  promptTokens: number;
  /** column names are prefixed so two methods of a composition never share one */
  column(name: string): string;
  prefill: PrefillObservation | null;
  step: StepObservation | null;
  /** scratch shared by the stages during one decision (e.g. a layer group's selection) */
  shared: Map<string, unknown>;
}

/** Stage state beyond store columns (thresholds, cursors, layer statistics), as JSON. */
export interface StageState {
  get(): JsonValue;
  set(state: JsonValue): void;
  reset(): void;
}

export interface Scorer {
  /** columns this scorer keeps, names unprefixed (env.column adds the prefix) */
  columns: readonly ColumnSpec[];
  needs?: Partial<PolicyNeeds>;
  /** what the scorer knows when attached to a cache mid-run, for the trace (one sentence) */
  withoutHistory: string;
  /** updates the columns from the hook's observation (env.prefill / env.step); absent when scores are read from the observation on demand */
  observe?(env: StageEnv): void;
  /** score of every entry of one KV head (higher = more worth keeping); null when it has none */
  headScores(env: StageEnv, layer: number, kvHead: number): Float64Array | null;
  state?: StageState;
}

/** What a head may hold: `total` entries, of which the last `recent` are the recent window. */
export interface HeadBudget {
  total: number;
  recent: number;
}

export interface Allocator {
  /** sees each hook's observation before budgets are asked for (density, prompt statistics) */
  observe?(env: StageEnv): void;
  /** [layer][kvHead] budgets for this decision */
  allocate(env: StageEnv): HeadBudget[][];
  needs?: Partial<PolicyNeeds>;
  state?: StageState;
}

/** One head as the selector and transforms see it. */
export interface HeadInput {
  layer: number;
  kvHead: number;
  length: number;
  budget: HeadBudget;
  /** the scorer's scores (null without a scorer) */
  scores: Float64Array | null;
}

export interface Selector {
  /** ascending indices a head over its budget keeps, or null to keep it whole */
  select(env: StageEnv, head: HeadInput): Int32Array | null;
  state?: StageState;
}

/** One head's decision while the stages build it. `keep` null = every entry stays. */
export interface HeadDraft extends HeadInput {
  keep: Int32Array | null;
  merge: MergeGroup[];
  reencode: Reencode[];
  reposition: Reposition[];
  hide: number[];
}

/** What the transforms may set on the whole decision. */
export interface DecisionDraft {
  layers: HeadDraft[][];
  nextPosition?: number;
  /** counts for the note, filled by the pipeline and the transforms */
  summary: { evicted: number; merged: number; repositioned: number };
  notes: string[];
  /** per-layer measurements for views (Decision.measures), set by transforms */
  measures: Record<string, number[]>;
  /** per-head measurements for views (Decision.headMeasures: [layer][kvHead] → numbers), set by transforms */
  headMeasures: Record<string, number[][][]>;
  /** codec groups the transforms' re-encodes name (Decision.groups) */
  groups: CodecGroup[];
}

export interface Transform {
  needs?: Partial<PolicyNeeds>;
  /** adds to the drafts of one layer (all its KV heads), after selection */
  layer?(env: StageEnv, layer: number, heads: HeadDraft[]): void;
  /** after every layer: decision-wide settings (P2's next position) */
  finish?(env: StageEnv, decision: DecisionDraft): void;
  state?: StageState;
}

/** Entries a draft keeps (`keep`, or all) as an array. */
export function keptIndices(draft: HeadDraft): Int32Array {
  return draft.keep ?? indexRange(0, draft.length);
}

/** Entries a draft evicts (neither kept nor yet merged), ascending. */
export function evictedIndices(draft: HeadDraft): number[] {
  if (!draft.keep) return [];
  const kept = new Uint8Array(draft.length);
  for (const i of draft.keep) kept[i] = 1;
  for (const group of draft.merge) for (const m of group.members) kept[m] = 1;
  const out: number[] = [];
  for (let i = 0; i < draft.length; i++) if (!kept[i]) out.push(i);
  return out;
}
