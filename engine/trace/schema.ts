/**
 * The versioned trace: the contract between engine and UI (docs/architecture.md, "The trace"). UI components
 * render these objects; they never reach into the engine.
 *
 * A trace is a list of events: one `prefill`, then `step`s, with `policy` events where the policy
 * was switched. Memory is bounded: full attention rows (layers × heads × entries) and the decision
 * scores are kept for the most recent `fullSteps` steps only; older steps keep a compact summary
 * (the top-k attended entries of every head, the decision, memory). Any older step can be
 * recomputed exactly from a snapshot because runs are deterministic.
 *
 * Events are never mutated after they are recorded: compaction replaces an old step by a compact
 * copy, so forks may share event objects.
 *
 * Versions: TRACE_VERSION changes when a field changes meaning or a reader must understand a new
 * field. Optional fields that readers may ignore are added without a bump: the header's `prompt`,
 * `switches`, `reference`, `next` and `protects` (written by the app's export) are such fields, so
 * files written before them read the same (read.ts). What the cache holds after any event is not
 * stored: engine/trace/replay.ts rebuilds it from the decisions.
 */
import type { AppliedDecision, MemoryReport } from '../cache/store.ts';
import type { ReferenceMetrics } from '../reference.ts';
import type { SamplerOptions } from '../sampling.ts';

export const TRACE_VERSION = 1;

export interface TokenProb {
  id: number;
  /** readable piece (KvTokenizer.tokenPiece): never "�", partial UTF-8 bytes as <0xE2> */
  piece: string;
  /** probability under the model (softmax of the logits, temperature 1) */
  prob: number;
}

/** The entries of one KV head that a step's query attended to: the cache as fed plus the new token. */
export interface HeadEntries {
  /** first token index of each entry's origin */
  tokens: Int32Array;
  /** RoPE position of each entry's key */
  positions: Int32Array;
  /** tokens per entry; null when every entry stands for one token */
  counts: Int32Array | null;
  /** full origin lists; null when no entry is merged (then origin = [tokens[i]]) */
  origins: (number[] | null)[] | null;
}

export interface LayerAttention {
  /** [kvHead] */
  entries: HeadEntries[];
  /** [queryHead] → attention weight per entry of KV head floor(queryHead / groupSize) (sums to 1) */
  weights: Float32Array[];
}

/**
 * Compact attention summary kept for every step: for each layer and query head the k most attended
 * entries, flattened [layer][queryHead][rank]; padding has token −1 and weight 0.
 */
export interface AttentionTop {
  k: number;
  tokens: Int32Array;
  positions: Int32Array;
  weights: Float32Array;
}

export interface DecisionTrace extends AppliedDecision {
  /** [layer][kvHead] scores the policy returned (indexed like the entries it saw); recent steps only */
  scores: (Float32Array | null)[][] | null;
}

export type MemoryTrace = MemoryReport;

export interface PrefillTrace {
  kind: 'prefill';
  /** token index of the first prompt token */
  firstToken: number;
  tokenIds: number[];
  pieces: string[];
  /** RoPE positions used: firstPosition .. firstPosition + tokenIds.length − 1 */
  firstPosition: number;
  chunks: number;
  policy: string;
  decision: DecisionTrace;
  memory: MemoryTrace;
  timings: { forwardMs: number; policyMs: number; totalMs: number };
  /** the prompt as text, when it was prefilled from text (Session.prefillText) */
  promptText?: string;
  /** most likely next tokens after the prompt, descending (the pending distribution) */
  next?: TokenProb[];
  /** heads the policy in charge protects (RazorAttention, CompressKV), when any */
  protects?: ProtectedHeadsTrace | null;
}

export interface StepTrace {
  kind: 'step';
  /** decode step number since the session started (0-based) */
  step: number;
  /** index of this token in the session's token sequence, and the RoPE position it was fed at */
  tokenIndex: number;
  position: number;
  token: TokenProb;
  /** probability under the sampling distribution (temperature, top-k, top-p); 1 for greedy */
  sampleProb: number;
  /** true when the token was given (teacher forcing) rather than sampled */
  forced: boolean;
  /** most likely next tokens under the model, descending */
  topK: TokenProb[];
  /** full attention of this token's query per layer; null once the step is older than fullSteps (or when off) */
  attention: LayerAttention[] | null;
  attentionTop: AttentionTop | null;
  policy: string;
  decision: DecisionTrace;
  memory: MemoryTrace;
  timings: { forwardMs: number; policyMs: number; totalMs: number };
  /** how speculative decoding fed this token (engine/spec/); absent on plain steps */
  speculative?: SpeculativeStepTrace;
}

/** Who chose a token that speculative decoding fed. */
export type SpeculativeOrigin = 'draft' | 'correction' | 'bonus' | 'target';

export interface SpeculativeStepTrace {
  /** verification round (0-based, counted over the session) whose target forward fed the token */
  round: number;
  /** the token's row in that forward (0 = the token the target drew before the round) */
  row: number;
  /**
   * an accepted draft token, or the target's own draw: a correction after a rejection, the bonus
   * after every draft token was accepted, or a plain draw (no draft that round, or the first round)
   */
  origin: SpeculativeOrigin;
  /** the round's verification, on the last token the round fed */
  verify?: VerifyTrace;
}

export interface DraftedToken {
  id: number;
  piece: string;
  /** the drafter's probability of the token (1 for a one-hot drafter) */
  q: number;
  /** the target's sampling probability of it; null where the round never verified it */
  p: number | null;
  accepted: boolean;
}

/** One verification round: what was drafted, what the target kept, what ended it. */
export interface VerifyTrace {
  /** canonical drafter spec (engine/spec/spec.ts) */
  drafter: string;
  /** the most tokens the drafter could propose this round */
  gamma: number;
  drafted: DraftedToken[];
  accepted: number;
  /** the token the target drew to follow the round; the next round feeds it first */
  next: { id: number; piece: string; origin: SpeculativeOrigin };
  /**
   * rejected: a draft token was rejected (next is the correction); all-accepted: next is the bonus;
   * cache-changed: the policy changed the cache after a row, so the rows after it could not stand
   * (next is the accepted draft token after that row); no-draft: the drafter proposed nothing;
   * eos: the round fed the end-of-sequence token
   */
  end: 'rejected' | 'all-accepted' | 'cache-changed' | 'no-draft' | 'eos';
  draftMs: number;
  verifyMs: number;
}

export interface PolicySwitchTrace {
  kind: 'policy';
  /** number of decode steps taken before the switch */
  atStep: number;
  from: string;
  to: string;
  decision: DecisionTrace;
  memory: MemoryTrace;
  /** what the new policy does without the history it would have kept (attached mid-run) */
  withoutHistory?: string;
  /** heads the new policy protects, when any */
  protects?: ProtectedHeadsTrace | null;
}

export type TraceEvent = PrefillTrace | StepTrace | PolicySwitchTrace;

export interface TraceModel {
  id: string;
  name: string;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  context: number;
}

export interface TraceHeader {
  version: typeof TRACE_VERSION;
  model: TraceModel;
  sampler: Required<SamplerOptions>;
  /** policy the session started with */
  policy: string;
  options: TraceOptions;
  // Optional: filled in when the trace is exported (TraceExtras); readers must not rely on them.
  /** the prompt as typed (null or absent when only token ids are known, e.g. the command line) */
  prompt?: string | null;
  /** every live policy switch, oldest first (the same as the `policy` events, for readers of the header alone) */
  switches?: PolicySwitchSummary[];
  /** the full-cache reference lane's metrics, when it ran */
  reference?: ReferenceTrace | null;
  /** the model's next-token distribution after the last event (the session's pending logits) */
  next?: TokenProb[];
  /** heads the policy in charge at the end protects (RazorAttention, CompressKV), for the views */
  protects?: ProtectedHeadsTrace | null;
}

export interface PolicySwitchSummary {
  /** decode steps taken before the switch */
  atStep: number;
  from: string;
  to: string;
  /** entries the switch evicted (all heads) */
  evicted: number;
  note?: string;
  withoutHistory?: string;
}

/** Reference-lane metrics of one decode step: engine/reference.ts ReferenceMetrics without the per-head masses. */
export type ReferenceStepTrace = Omit<ReferenceMetrics, 'massByHead'>;

export interface ReferenceTrace {
  /** steps the lane measured, ascending (steps without an entry: the lane was off) */
  steps: ReferenceStepTrace[];
  /** why the lane stopped following, if it did */
  stopped?: string;
}

/** engine/policies ProtectedHeads, restated so the trace schema does not depend on the policy types. */
export interface ProtectedHeadsTrace {
  description: string;
  /** [layer][kvHead] */
  kvHeads: boolean[][] | null;
  /** [layer][queryHead] */
  queryHeads: boolean[][] | null;
}

/** What an exporter knows beyond the session's events (the app's worker host fills these in). */
export interface TraceExtras {
  prompt?: string | null;
  reference?: ReferenceTrace | null;
  next?: TokenProb[];
  protects?: ProtectedHeadsTrace | null;
}

export interface TraceOptions {
  /** steps that keep full attention rows and scores (older steps are compacted) */
  fullSteps: number;
  /** next-token candidates recorded per step */
  topTokens: number;
  /** entries per head in the compact attention summary */
  attentionTop: number;
  /** record attention at all (off = cheapest: no rows, no summaries) */
  attention: boolean;
}

export const DEFAULT_TRACE_OPTIONS: TraceOptions = { fullSteps: 64, topTokens: 10, attentionTop: 8, attention: true };

/** Holds the events of one session and keeps their memory bounded. */
export class TraceRecorder {
  readonly header: TraceHeader;
  private readonly events: TraceEvent[];
  /** indices (into events) of steps that still hold full attention, oldest first */
  private fullStepIndices: number[];

  constructor(header: TraceHeader, events: TraceEvent[] = []) {
    this.header = header;
    this.events = [...events];
    this.fullStepIndices = [];
    this.events.forEach((event, i) => {
      if (event.kind === 'step' && (event.attention || event.decision.scores)) this.fullStepIndices.push(i);
    });
  }

  get options(): TraceOptions {
    return this.header.options;
  }

  get length(): number {
    return this.events.length;
  }

  /** All events, oldest first (do not mutate). */
  all(): readonly TraceEvent[] {
    return this.events;
  }

  steps(): StepTrace[] {
    return this.events.filter((e): e is StepTrace => e.kind === 'step');
  }

  record(event: TraceEvent): void {
    this.events.push(event);
    if (event.kind !== 'step' || (!event.attention && !event.decision.scores)) return;
    this.fullStepIndices.push(this.events.length - 1);
    while (this.fullStepIndices.length > this.options.fullSteps) {
      const index = this.fullStepIndices.shift()!;
      const step = this.events[index] as StepTrace;
      this.events[index] = { ...step, attention: null, decision: { ...step.decision, scores: null } };
    }
  }

  /** Drops events after `length` (restoring a snapshot). */
  truncate(length: number): void {
    this.events.length = Math.min(length, this.events.length);
    this.fullStepIndices = this.fullStepIndices.filter((i) => i < this.events.length);
  }

  /** An independent recorder with the same events (events are immutable, so they are shared). */
  clone(): TraceRecorder {
    return new TraceRecorder(this.header, this.events);
  }

  toJSON(extras?: TraceExtras): TraceJson {
    return traceToJson(this.header, this.events, extras);
  }
}

// ---------------------------------------------------------------------------------------------
// JSON export: typed arrays become plain arrays; floats keep 6 significant digits.

export interface TraceJson {
  version: typeof TRACE_VERSION;
  header: TraceHeader;
  events: unknown[];
}

function round(value: number): number {
  return Number.isFinite(value) ? Number(value.toPrecision(6)) : value;
}

function plain(value: unknown): unknown {
  if (value instanceof Float32Array || value instanceof Float64Array) return Array.from(value, round);
  if (ArrayBuffer.isView(value)) return Array.from(value as Int32Array);
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === 'number') return round(value);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(value)) if (v !== undefined) out[key] = plain(v);
    return out;
  }
  return value;
}

/** Every policy switch in the events, oldest first. */
export function switchSummaries(events: readonly TraceEvent[]): PolicySwitchSummary[] {
  return events
    .filter((e): e is PolicySwitchTrace => e.kind === 'policy')
    .map((e) => ({
      atStep: e.atStep,
      from: e.from,
      to: e.to,
      evicted: e.decision.evicted,
      ...(e.decision.note !== undefined ? { note: e.decision.note } : {}),
      ...(e.withoutHistory !== undefined ? { withoutHistory: e.withoutHistory } : {}),
    }));
}

export function traceToJson(header: TraceHeader, events: readonly TraceEvent[], extras: TraceExtras = {}): TraceJson {
  const full: TraceHeader = { ...header, switches: switchSummaries(events) };
  if (extras.prompt !== undefined) full.prompt = extras.prompt;
  if (extras.reference) full.reference = extras.reference;
  if (extras.next) full.next = extras.next;
  if (extras.protects !== undefined) full.protects = extras.protects;
  return { version: TRACE_VERSION, header: plain(full) as TraceHeader, events: events.map(plain) };
}

/** The trace as a JSON string (for download / bundles). */
export function exportTraceJson(trace: TraceRecorder, indent?: number, extras?: TraceExtras): string {
  return JSON.stringify(trace.toJSON(extras), null, indent);
}
