/**
 * The typed message protocol between the page and the engine Web Worker (docs/architecture.md, "Data flow").
 *
 * Commands go in, each with a numeric `id`. Every command is answered by exactly one *reply*
 * event carrying the same id (`ready`, `tokenized`, `started`, `done`, `rewound`, `policy`,
 * `inspected`, `merges`, `quant`, `drafter`, `spec`, `trace`, `imported`, `reference`, `ack` or `error`). Long commands also stream *progress* (`load`) or
 * *step* (`step`, `run`) events with that id before their reply.
 *
 * Only plain data crosses the boundary; big matrices travel as transferable typed arrays
 * (StepView.attention.weights, StepView.cacheMap.codes) so a 1024-token step costs no copy.
 * This module holds types and tiny helpers only: it is imported by both sides.
 */
import type { Citation, ParamSpec, ParamValue, PolicyNeeds, ProtectedHeads } from '../../../engine/policies/types.ts';
import type { MemoryReport } from '../../../engine/cache/store.ts';
import type { TokenProb, TraceModel } from '../../../engine/trace/schema.ts';
import { LAB_STREAM_EVENTS, type LabCommand, type LabEvent } from './lab-protocol.ts';
import type { QuantView } from './quant-protocol.ts';
import type { DrafterInfo, DrafterState, SpecMeasuringEvent, SpecView } from './spec-protocol.ts';

export type * from './quant-protocol.ts';
export type * from './spec-protocol.ts';

export const PROTOCOL_VERSION = 1;

export interface SamplerSettings {
  /** 0 = greedy */
  temperature: number;
  /** 0 = off */
  topK: number;
  /** 1 = off */
  topP: number;
  seed: number;
}

export interface PolicyChoice {
  id: string;
  params: Record<string, ParamValue>;
}

/**
 * The policy a command asks for: one policy, or the members of a composition in the order they
 * run (engine/policies/chain.ts). The host formats it with the engine (formatPolicyChain).
 */
export type PolicyComposition = PolicyChoice | readonly PolicyChoice[];

/** The members of a composition (a single choice is a composition of one). */
export function policyMembers(policy: PolicyComposition): readonly PolicyChoice[] {
  return isChoiceList(policy) ? policy : [policy];
}

// Array.isArray does not narrow a readonly array out of a union (TypeScript #17002)
function isChoiceList(policy: PolicyComposition): policy is readonly PolicyChoice[] {
  return Array.isArray(policy);
}

// ---------------------------------------------------------------------------------------------
// Commands (page → worker)

export interface LoadCommand {
  type: 'load';
  id: number;
  /** absolute URL of the models directory (holds index.json) */
  modelsUrl: string;
  /** model id from index.json; default: its "default" */
  modelId?: string;
  /**
   * load a model the user uploaded (src/lib/models/, stored in this browser's OPFS or IndexedDB)
   * instead of one from index.json; `modelId` is then ignored. modelsUrl still names the index that
   * drafters load draft models from.
   */
  modelSource?: UploadedModelRef;
  /** absolute URL of ort-wasm-simd-threaded.wasm as the app serves it */
  wasmUrl: string;
  /** absolute URL of ort-wasm-simd-threaded.mjs (only used with threads > 1) */
  mjsUrl?: string;
  /** onnxruntime-web wasm threads (1 unless the page is crossOriginIsolated) */
  threads: number;
  /** keep model files in the Cache API, keyed by sha256 (default true) */
  cache?: boolean;
}

/** An uploaded model by its storage key (its sha256: src/lib/models/store.ts). */
export interface UploadedModelRef {
  kind: 'uploaded';
  key: string;
}

export type Command =
  | LoadCommand
  | { type: 'tokenize'; id: number; text: string }
  | { type: 'start'; id: number; prompt: string; sampler: SamplerSettings; policy: PolicyComposition }
  | { type: 'step'; id: number }
  /**
   * `stopAfter` (speculative decoding only): stop between rounds once this many tokens are in, as
   * a Pause landing there would — the rounds are still cut to `steps`, so a link replays a paused
   * Run exactly (src/lib/links/)
   */
  | { type: 'run'; id: number; steps: number; stopAtEos: boolean; stopAfter?: number }
  | { type: 'pause'; id: number }
  | { type: 'back'; id: number; steps: number }
  | { type: 'set-policy'; id: number; policy: PolicyComposition }
  | { type: 'views'; id: number; attention: boolean }
  | { type: 'inspect'; id: number; step: number }
  /**
   * the merged entries of one layer × KV head after decode step `step` (−1: after the prompt), and
   * MiniCache's depth measures; packed from the trace alone (live session or imported trace), so it
   * is answered at once, also while a run goes on
   */
  | { type: 'merges'; id: number; step: number; layer: number; kvHead: number }
  /**
   * the quantization error view of one layer × KV head after decode step `step` (−1: after the
   * prompt): measured against the exact K/V at the newest step of a live session, else what the
   * trace recorded (quant-protocol.ts); answered at once like `merges`
   */
  | { type: 'quant'; id: number; step: number; layer: number; kvHead: number }
  | { type: 'export-trace'; id: number }
  /**
   * reads an exported trace and answers `imported`: from then on `inspect` and `export-trace` serve
   * that trace (read-only replay, no model needed) until the next `start`; commands that would need
   * the model (step, run, back, set-policy, reference) are refused. A bad file changes nothing.
   */
  | { type: 'import-trace'; id: number; json: string; fileName: string }
  /**
   * sets the drafter of the explorer session (engine/spec/, a drafter spec such as `lookup:max_ngram=3,k=10`
   * or `model:gamma=4`; `''` or `none`: plain decoding) and answers `drafter`. From then on `step`
   * runs one verification round and `run` rounds until `steps` tokens. A spec that does not parse or
   * a drafter that cannot be made (its draft model fails to load) is an error of kind `drafter` and
   * changes nothing. A draft model loads like the model (`progress` events with this id).
   */
  | { type: 'set-drafter'; id: number; drafter: string }
  /** the speculative-decoding view (spec-protocol.ts) of the live session or the imported trace; answered at once like `merges` */
  | { type: 'spec'; id: number }
  /** turns the full-cache reference lane on (built at the current point) or off */
  | { type: 'reference'; id: number; on: boolean }
  /** test hook: the worker throws outside any handler, like a real crash */
  | { type: 'crash'; id: number }
  /** /compare lanes and /bench evaluations (lab-protocol.ts) */
  | LabCommand;

export type CommandType = Command['type'];

// ---------------------------------------------------------------------------------------------
// Views (what the page draws; built by the worker from the engine's StepTrace)

/** Cache-map cell states, one byte per (layer, KV head, token). */
export const CELL = {
  /** the head does not hold this token (evicted earlier, or never) */
  EMPTY: 0,
  /** held as a plain fp32 entry */
  HELD: 1,
  /** held, re-encoded (quantized, pruned, low-rank…) */
  ENCODED: 2,
  /** held inside a merged entry that stands for several tokens */
  MERGED: 3,
  /** evicted by this step's decision */
  EVICTED: 4,
} as const;
export type CellState = (typeof CELL)[keyof typeof CELL];

/** Attention of one step's query over the cache, laid out by token index. */
export interface AttentionGrid {
  layers: number;
  heads: number;
  /** columns: token indices 0 … tokens − 1 (the new token is the last) */
  tokens: number;
  /**
   * [layer][queryHead][token] flattened; the weight of the entry that holds the token (merged
   * entries: at their first token), NaN where the head's KV head held nothing for that token.
   */
  weights: Float32Array;
}

/** What every KV head holds after a step's decision, by token index. */
export interface CacheMapView {
  layers: number;
  kvHeads: number;
  tokens: number;
  /** [layer][kvHead][token] flattened CELL codes */
  codes: Uint8Array;
}

/**
 * The scores a policy's decision gave the entries it saw, by token index: [layer][kvHead][token]
 * flattened (merged entries at their first token), NaN where the decision gave none.
 */
export interface ScoreGrid {
  layers: number;
  kvHeads: number;
  tokens: number;
  values: Float32Array;
}

/** One member of a merge, in the group's order (engine/cache/view.ts AppliedHead.merged). */
export interface MergeMemberView {
  /** first origin token of the member; null when the trace did not record it (older traces) */
  token: number | null;
  /** tokens the member stood for when it was merged (more than 1: it was a merged entry itself) */
  size: number | null;
  weight: number | null;
  /** cosine of the member's key to the merged key; null when not recorded */
  similarity: number | null;
}

/** Which trace event made a merged entry: the prefill (step −1), a decode step, or a policy switch after `step` steps. */
export interface MergeMadeAt {
  kind: 'prefill' | 'step' | 'policy';
  step: number;
}

/** A merged entry the head holds, with the merge that made it (its latest one). */
export interface MergeEntryView {
  /** its place in the head's cache order */
  index: number;
  /** first origin token */
  first: number;
  /** every token it stands for, ascending */
  origins: number[];
  /** tokens it counts for in the attention bias; null when the trace did not record it */
  count: number | null;
  /** the attention bias it gets: log(count) when count > 1, else 0; null with count */
  bias: number | null;
  members: MergeMemberView[];
  madeAt: MergeMadeAt;
  /** made by the decision shown (this step's, or the switch right after it) */
  fresh: boolean;
}

/**
 * MiniCache's depth measures (Decision.measures of the latest event up to the shown one that
 * carries them), one number per layer, NaN where none, and what the selected KV head holds in
 * each layer: entries under the shared-direction codec, and the tokens of a paired layer held without it.
 */
export interface MergeDepthView {
  /** the event the measures come from */
  from: MergeMadeAt;
  /** mean key cosine of layer l with layer l − 1 (NaN at 0) */
  similarity: number[];
  /** the layer l shares directions with (NaN: none) */
  partner: number[];
  /**
   * share of the layer's K/V states MiniCache kept unmerged among the tokens its decision
   * considered (keys and values together; NaN for unpaired layers). Tokens not considered yet
   * (recent ones) are not counted, so this is not the share of the head's entries held apart.
   */
  retained: number[];
  /** [layer] entries of the selected KV head re-encoded with MiniCache's codec (`minicache`, or `minicache-k` / `-v`) */
  shared: number[];
  /**
   * [layer] tokens of the selected KV head held without that codec in a paired layer: retained
   * unmerged by a decision, or not yet considered (recent tokens MiniCache has not looked at); null
   * where the layer is not paired
   */
  unmerged: (number[] | null)[];
}

/** The merge view of one layer × KV head after one decode step (pack-merges.ts). */
export interface MergeView {
  /** decode step (−1: after the prompt) */
  step: number;
  layer: number;
  kvHead: number;
  /** tokens fed up to the shown point */
  tokens: number;
  /** entries the head holds (merged or not) */
  held: number;
  /** the policy in charge at the shown point */
  policy: string;
  /** merged entries of the head, in cache order */
  entries: MergeEntryView[];
  /** merged entries the shown decision made, all heads together */
  madeInAllHeads: number;
  /** every merge shown carries count, member tokens and similarities (false: written by an older engine) */
  detailed: boolean;
  depth: MergeDepthView | null;
}

/** What the full-cache reference lane measured at one step (engine/reference.ts). */
export interface ReferenceView {
  /** KL(full ‖ policy) of the next-token distributions, nats */
  kl: number;
  /** top-1 agreement of the two lanes' next-token distributions */
  agree: boolean;
  /** share of the full lane's attention on tokens the policy held: mean over layers × query heads */
  mass: number;
  /** [layer] the same, mean over the layer's query heads */
  massByLayer: number[];
  /** policy bytes / full-cache bytes after the step */
  memoryRatio: number;
  policyBytes: number;
  fullBytes: number;
}

export interface StepView {
  /** decode step (0-based) */
  step: number;
  tokenIndex: number;
  position: number;
  token: TokenProb;
  /** probability under the sampling distribution (temperature, top-k, top-p) */
  sampleProb: number;
  /** distribution the token was drawn from (top candidates under the model) */
  topK: TokenProb[];
  /** the model's distribution for the token after this one */
  next: TokenProb[];
  policy: string;
  note?: string;
  evicted: number;
  merged: number;
  reencoded: number;
  memory: MemoryReport;
  timings: { forwardMs: number; policyMs: number; totalMs: number };
  /** null when views are off (benchmarks) or when sent as a compact record */
  attention: AttentionGrid | null;
  /**
   * set when `attention` holds only the k most attended entries per query head (an older step of
   * an imported trace, whose full rows were compacted): other held tokens show 0
   */
  attentionTopOnly?: number;
  cacheMap: CacheMapView | null;
  /** the decision's scores by token (null when the policy gave none or views are off) */
  scores?: ScoreGrid | null;
  /** what this step's decision evicted: (layer, kvHead, token) triples, flattened */
  evictions?: Int32Array;
  /** reference-lane metrics (null when the lane is off or has stopped) */
  reference?: ReferenceView | null;
}

export interface PromptView {
  ids: number[];
  pieces: string[];
}

export interface ModelInfo extends TraceModel {
  vocab: number;
  parameters: number | null;
  bosId: number;
  eosId: number;
  /** bytes of all model files */
  bytes: number;
  /** the model's sha256 (engine/model/manifest.ts modelSha256): what links and notebooks name it by */
  sha256: string;
  /** a calibration.json was loaded (policies with needs.calibration can run) */
  calibration: boolean;
  /** why a calibration.json next to the model was not used, if one was found */
  calibrationError?: string;
  /** the model was uploaded by the user (LoadCommand.modelSource), not shipped with the app */
  uploaded?: true;
}

export interface PolicyInfo {
  id: string;
  label: string;
  description: string;
  paper: Citation;
  params: ParamSpec[];
  needs: PolicyNeeds;
}

export interface LoadProgressView {
  phase: 'runtime' | 'manifest' | 'download' | 'verify' | 'session';
  file: string;
  /** bytes of this file so far (download / verify) */
  loaded: number;
  total: number;
  /** bytes of all model files done so far and in all (download + verify together) */
  overallLoaded: number;
  overallTotal: number;
  /** this file came from the local cache */
  cached: boolean;
}

export interface CacheStats {
  /** files served from the Cache API */
  hits: number;
  /** files fetched over the network */
  misses: number;
  /** stale entries deleted */
  removed: number;
  /** false when the Cache API is unavailable (e.g. not a secure context) */
  available: boolean;
}

/** What the session looks like right now (after start, rewind, policy switch). */
export interface SessionState {
  stepCount: number;
  tokenCount: number;
  position: number;
  policy: string;
  memory: MemoryReport;
  /** the model's distribution for the next token */
  next: TokenProb[];
  cacheMap: CacheMapView;
  /** heads the current policy protects or selects with (razor, compresskv); null when none */
  protects?: ProtectedHeads | null;
  /** the full-cache reference lane is on */
  reference?: boolean;
  /** why the reference lane stopped following (context full), if it did */
  referenceStopped?: string;
}

/** The prompt's decision as the page keeps it (prefill-only policies such as SnapKV decide here). */
export interface PrefillView {
  scores: ScoreGrid | null;
  /** (layer, kvHead, token) triples the prefill decision evicted */
  evictions: Int32Array;
  /** the cache after the prefill decision */
  cacheMap: CacheMapView;
  policy: string;
  memory: MemoryReport;
  /** the model's distribution for the first generated token */
  next: TokenProb[];
}

/** A live policy switch (from a `policy` trace event). */
export interface SwitchView {
  atStep: number;
  from: string;
  to: string;
  note?: string;
  /** the cache map just before the switch */
  before: CacheMapView;
  /** what the switch evicted: (layer, kvHead, token) triples, and how many */
  evictions: Int32Array;
  evicted: number;
  /** what the new policy does without the history it would have kept */
  withoutHistory?: string;
}

/** The model a trace was recorded with (its header). */
export type TraceModelView = TraceModel;

/** Everything the page shows of an imported trace, as it stood at its end (read-only replay). */
export interface ImportedTraceView {
  fileName: string;
  /** trace version of the file */
  version: number;
  model: TraceModelView;
  prompt: PromptView;
  /** the prompt as typed, when the trace carries it */
  promptText: string | null;
  sampler: SamplerSettings;
  /** the policy the run started with */
  policy: string;
  /** every recorded step: full views (attention, cache map, scores) for the newest ones, compact records before */
  steps: StepView[];
  switches: SwitchView[];
  prefill: PrefillView;
  /** the session after the last event */
  state: SessionState;
  /** the trace carries reference-lane metrics */
  reference: boolean;
  /** what the trace lacks, in words (shown with the replay note) */
  notes: string[];
}

/** A model's calibration scores ([layer][queryHead]) as the retrieval-head map shows them. */
export interface CalibrationView {
  /** RazorAttention's data-free probe: echo and induction mass, in [0, 1]; null if not calibrated */
  echo: number[][] | null;
  induction: number[][] | null;
  /** Wu et al. 2024 retrieval score and CompressKV's semantic score on passkey prompts; null if not calibrated */
  wu: number[][] | null;
  semantic: number[][] | null;
  /** Wu et al.'s retrieval-head threshold (0.1) */
  threshold: number | null;
  /** one line on how the scores were measured */
  notes: string[];
}

export type ErrorKind = 'model' | 'wasm' | 'prompt' | 'policy' | 'drafter' | 'session' | 'busy' | 'internal' | 'crash' | 'trace';

export type StopReason = 'length' | 'eos' | 'context-full' | 'aborted' | 'paused';

// ---------------------------------------------------------------------------------------------
// Events (worker → page)

export type EngineEvent =
  | { type: 'progress'; id: number; progress: LoadProgressView }
  | { type: 'ready'; id: number; model: ModelInfo; policies: PolicyInfo[]; drafters?: DrafterInfo[]; cache: CacheStats; threads: number; loadMs: number; calibration?: CalibrationView | null }
  | { type: 'tokenized'; id: number; count: number; context: number }
  | {
      type: 'started';
      id: number;
      prompt: PromptView;
      state: SessionState;
      prefillMs: number;
      /** the prefill decision's scores (SnapKV-style policies decide once, here) and evictions */
      scores?: ScoreGrid | null;
      evictions?: Int32Array;
    }
  | { type: 'step'; id: number; view: StepView }
  | { type: 'done'; id: number; reason: StopReason; message?: string; steps: number; state: SessionState }
  | { type: 'rewound'; id: number; state: SessionState }
  | {
      type: 'policy';
      id: number;
      from: string;
      to: string;
      note?: string;
      state: SessionState;
      /** decode steps taken before the switch */
      atStep?: number;
      /** the cache map just before the switch (state.cacheMap is after it, the switch's evictions marked) */
      before?: CacheMapView;
      /** what the switch evicted: (layer, kvHead, token) triples */
      evictions?: Int32Array;
      /** what the new policy does without the history it would have kept (attached mid-run) */
      withoutHistory?: string;
    }
  | { type: 'inspected'; id: number; view: StepView }
  | { type: 'merges'; id: number; view: MergeView }
  | { type: 'quant'; id: number; view: QuantView }
  | { type: 'drafter'; id: number; drafter: DrafterState }
  | { type: 'spec'; id: number; view: SpecView }
  | SpecMeasuringEvent
  | { type: 'trace'; id: number; json: string; fileName: string }
  | { type: 'imported'; id: number; trace: ImportedTraceView }
  | { type: 'reference'; id: number; on: boolean; state: SessionState }
  | { type: 'ack'; id: number }
  | { type: 'error'; id: number | null; kind: ErrorKind; message: string }
  | LabEvent;

export type ReplyEvent = Exclude<EngineEvent, { type: 'progress' } | { type: 'step' } | { type: 'spec-measuring' } | { type: 'compare-step' } | { type: 'eval-progress' } | { type: 'eval-row' } | { type: 'eval-spec-progress' }>;

export function isReply(event: EngineEvent): event is ReplyEvent {
  return event.type !== 'progress' && event.type !== 'step' && event.type !== 'spec-measuring' && !LAB_STREAM_EVENTS.has(event.type);
}

/** Typed arrays of a view that can be transferred (not copied) with postMessage. */
export function viewTransferables(view: StepView | SessionState | null | undefined): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  if (!view) return out;
  if ('attention' in view && view.attention) out.push(view.attention.weights.buffer as ArrayBuffer);
  if (view.cacheMap) out.push(view.cacheMap.codes.buffer as ArrayBuffer);
  if ('scores' in view && view.scores) out.push(view.scores.values.buffer as ArrayBuffer);
  return out;
}
