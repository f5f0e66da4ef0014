/**
 * The types a Session takes and gives (engine/session.ts): options, results, snapshots and the
 * speculative-verification callbacks of feedBlock. Kept apart so session.ts holds the behaviour.
 */
import type { CacheSnapshot } from './cache/store.ts';
import type { Calibration } from './calibration/format.ts';
import type { Manifest } from './model/manifest.ts';
import type { KvTokenizer } from './model/tokenizer.ts';
import type { PolicyDefinition } from './policies/types.ts';
import type { PolicySpec } from './policies/spec.ts';
import type { Forward } from './runtime/forward.ts';
import type { SamplerOptions, SamplerState } from './sampling.ts';
import type { PrefillTrace, SpeculativeStepTrace, StepTrace, TraceOptions } from './trace/schema.ts';
import type { JsonValue } from './types.ts';

/** What a session needs of a model: its manifest, a forward, and (for text) a tokenizer. */
export interface EngineModel {
  manifest: Manifest;
  forward: Forward;
  tokenizer: KvTokenizer | null;
  /** calibration.json found next to the model (loadModel), checked against its manifest */
  calibration?: Calibration | null;
  /** why a calibration.json next to the model was not used (stale, malformed) */
  calibrationError?: string;
}

export interface SessionOptions {
  /** policy spec string (a composition `a + b` too), parsed spec or parsed composition; default "full" */
  policy?: string | PolicySpec | readonly PolicySpec[];
  sampler?: SamplerOptions;
  /** prompt tokens per prefill forward (default 128) */
  prefillChunk?: number;
  trace?: Partial<TraceOptions>;
  /** policies the specs are resolved against (default: the built-in registry) */
  registry?: readonly PolicyDefinition[];
  /**
   * calibration handed to policies (PolicyContext.calibration); default the model's. Checked against
   * the model's manifest: a calibration of another model or graph throws CalibrationError.
   */
  calibration?: Calibration | null;
  /**
   * keep the newest token's post-RoPE queries of every forward for views (lastQueries(): the
   * quantization error view's attention-score error); the graph computes them anyway. Default false.
   */
  keepQueries?: boolean;
}

export interface PrefillOptions {
  /** also return the logits of every prompt position ([N, V]); default only the last row */
  allLogits?: boolean;
  /** the text the ids were encoded from, recorded in the trace (prefillText sets it) */
  text?: string;
}

export interface PrefillResult {
  tokens: number;
  /** [N, V] when allLogits, else null */
  logits: Float32Array | null;
  /** logits for the token after the prompt */
  lastLogits: Float32Array;
  trace: PrefillTrace;
}

export interface StepOptions {
  /** feed this token instead of sampling (teacher forcing, reference lanes, perplexity) */
  token?: number;
  /**
   * replay this recorded step: feed its token and record it as it was fed (forced or not, its
   * sampling probability, how speculative decoding fed it) — a step whose token came from the
   * speculative decoder's generator cannot be drawn again from the session's sampler
   */
  as?: StepTrace;
}

export type StopReason = 'length' | 'eos' | 'context-full' | 'aborted';

export interface RunOptions {
  onStep?: (step: StepTrace) => void | Promise<void>;
  signal?: AbortSignal;
  /** stop after the EOS token (default true) */
  stopAtEos?: boolean;
}

export interface RunResult {
  steps: StepTrace[];
  stopReason: StopReason;
  /** human-readable reason when not 'length' */
  message?: string;
}

/** What the caller of feedBlock decides after each committed row (engine/spec/decoder.ts). */
export interface BlockRowVerdict {
  /** commit the next fed token's row too (it was accepted, and nothing changed the cache) */
  next: boolean;
  /** the next token's probability under the target's sampling distribution (computed from the logits when absent) */
  nextSampleProb?: number;
  /** recorded on this row's step */
  speculative?: SpeculativeStepTrace;
}

export interface BlockRowInfo {
  /** row in the block (0 = the first fed token) */
  row: number;
  /** the logits after this row's token: the distribution of the token after it */
  logits: Float32Array;
  /**
   * the policy changed what the graph sees after this row (evicted, merged, re-encoded, moved or
   * hid entries): the forward's later rows saw a cache that a step-by-step decode never has, so
   * they cannot be committed
   */
  cacheChanged: boolean;
  /** the step just recorded for this row */
  step: StepTrace;
}

export interface BlockResult {
  /** rows committed (≥ 1): tokens fed into the cache, one step each */
  committed: number;
  steps: StepTrace[];
  /** the one target forward, ms */
  forwardMs: number;
}

/** What a step records: the token, the distribution it was drawn from, and the graph's outputs for it (session.ts only). */
export interface FedRow {
  token: number;
  sampleProb: number;
  forced: boolean;
  /** the logits the token was drawn from (the pending distribution) */
  drawnFrom: Float32Array;
  position: number;
  /** per layer [Hkv, 1, D] */
  keys: Float32Array[];
  values: Float32Array[];
  /** per layer [H, 1, D], when fetched */
  queries: Float32Array[] | null;
  /** [layer][queryHead] over the KV head's entries as fed + the new token, when fetched */
  attention: Float32Array[][] | null;
  /** the logits after the token (own array: they become pending) */
  logits: Float32Array;
  forwardMs: number;
  started: number;
}

/** The session's own fields before a step, to put back when the step is undone (session.ts only). */
export interface SavedFields {
  tokens: number;
  nextPosition: number;
  stepCount: number;
  pendingLogits: Float32Array | null;
  sampler: SamplerState;
  policy: JsonValue;
  trace: number;
  queries: Float32Array[] | null;
}

export interface SessionSnapshot {
  tokenIds: number[];
  nextPosition: number;
  stepCount: number;
  pendingLogits: Float32Array | null;
  cache: CacheSnapshot;
  /** the composition's members (one for a single policy) and its state (PolicyChain.getState('session')) */
  policy: { specs: PolicySpec[]; state: JsonValue };
  sampler: SamplerState;
  traceLength: number;
  /** lastQueries() at the snapshot (sessions with keepQueries only) */
  queries?: Float32Array[] | null;
}
