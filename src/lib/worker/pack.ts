/**
 * Turns trace events (engine/trace/schema.ts) into the token-indexed arrays the views draw. Every
 * function here is a pure function of the trace — the events, what engine/trace/replay.ts rebuilds
 * from them, and the few things the host adds to an exported header (prompt text, reference-lane
 * metrics, the pending next-token distribution). Nothing reads the live cache store or the model, so
 * a live session and an imported trace are packed by the same code.
 */
import type { Calibration } from '../../../engine/calibration/format.ts';
import type { ReferenceMetrics } from '../../../engine/reference.ts';
import type { HeldEntries } from '../../../engine/trace/replay.ts';
import { ReplayTimeline } from '../../../engine/trace/replay-timeline.ts';
import type { ReadTrace } from '../../../engine/trace/read.ts';
import type {
  AttentionTop,
  DecisionTrace,
  LayerAttention,
  PrefillTrace,
  ProtectedHeadsTrace,
  ReferenceStepTrace,
  StepTrace,
  TokenProb,
  TraceEvent,
} from '../../../engine/trace/schema.ts';
import {
  CELL,
  type AttentionGrid,
  type CacheMapView,
  type CalibrationView,
  type ImportedTraceView,
  type MergeView,
  type PrefillView,
  type ReferenceView,
  type ScoreGrid,
  type SessionState,
  type StepView,
  type SwitchView,
} from './protocol.ts';
import { mergeViewAt } from './pack-merges.ts';
import { quantViewAt } from './pack-quant.ts';
import type { QuantView } from './quant-protocol.ts';

/** [layer][queryHead][token] weights; NaN where the head's KV head held nothing for the token. */
export function packAttention(attention: readonly LayerAttention[], heads: number, tokens: number): AttentionGrid {
  const layers = attention.length;
  const weights = new Float32Array(layers * heads * tokens).fill(Number.NaN);
  for (let l = 0; l < layers; l++) {
    const layer = attention[l];
    const kvHeads = layer.entries.length;
    const group = heads / kvHeads;
    for (let qh = 0; qh < heads; qh++) {
      const entries = layer.entries[Math.floor(qh / group)];
      const row = layer.weights[qh];
      const base = (l * heads + qh) * tokens;
      const n = Math.min(row.length, entries.tokens.length);
      for (let i = 0; i < n; i++) {
        const t = entries.tokens[i];
        if (t >= 0 && t < tokens) {
          const j = base + t;
          // two entries never share a first token, but stay safe: accumulate
          weights[j] = Number.isNaN(weights[j]) ? row[i] : weights[j] + row[i];
        }
      }
    }
  }
  return { layers, heads, tokens, weights };
}

/**
 * Attention of a step whose full rows were compacted away: only the k most attended entries per
 * query head are known (AttentionTop). Tokens the head held (`heldBefore` = the cache before the
 * step, plus the new token) show 0 unless they are among the top k; NaN where the head held nothing.
 */
export function packAttentionTop(top: AttentionTop, heldBefore: HeldEntries, newToken: number, heads: number, tokens: number): AttentionGrid {
  const { layers, kvHeads } = heldBefore;
  const group = heads / kvHeads;
  const weights = new Float32Array(layers * heads * tokens).fill(Number.NaN);
  for (let l = 0; l < layers; l++) {
    for (let qh = 0; qh < heads; qh++) {
      const kv = Math.floor(qh / group);
      const base = (l * heads + qh) * tokens;
      const held = heldBefore.tokens(l, kv);
      for (let i = 0; i < held.length; i++) if (held[i] >= 0 && held[i] < tokens) weights[base + held[i]] = 0;
      if (newToken >= 0 && newToken < tokens) weights[base + newToken] = 0;
      const from = (l * heads + qh) * top.k;
      for (let rank = 0; rank < top.k; rank++) {
        const t = top.tokens[from + rank];
        if (t >= 0 && t < tokens) weights[base + t] = top.weights[from + rank];
      }
    }
  }
  return { layers, heads, tokens, weights };
}

/** What each KV head holds (from the replay), plus what `decision` evicted (marked EVICTED). */
export function packCacheMap(held: HeldEntries, decision: DecisionTrace | null): CacheMapView {
  const { layers, kvHeads } = held;
  const tokens = held.tokenCount;
  const codes = new Uint8Array(layers * kvHeads * tokens);
  for (let l = 0; l < layers; l++) {
    for (let h = 0; h < kvHeads; h++) {
      const base = (l * kvHeads + h) * tokens;
      const first = held.tokens(l, h);
      for (let i = 0; i < first.length; i++) {
        const origin = held.origin(l, h, i);
        if (origin.length > 1) {
          // a merged entry stands for all of its tokens (also when it carries no log-count bias)
          for (const t of origin) if (t >= 0 && t < tokens) codes[base + t] = CELL.MERGED;
        } else {
          const t = first[i];
          if (t >= 0 && t < tokens) codes[base + t] = held.codec(l, h, i) ? CELL.ENCODED : CELL.HELD;
        }
      }
    }
  }
  if (decision) {
    for (const head of decision.heads) {
      if (head.layer < 0 || head.layer >= layers || head.kvHead < 0 || head.kvHead >= kvHeads) continue;
      const base = (head.layer * kvHeads + head.kvHead) * tokens;
      for (const t of head.evictedTokens) {
        if (t >= 0 && t < tokens && codes[base + t] === CELL.EMPTY) codes[base + t] = CELL.EVICTED;
      }
    }
  }
  return { layers, kvHeads, tokens, codes };
}

/**
 * A decision's scores laid out by token: `entryTokens(layer, kvHead)` gives the first token of
 * every entry the policy scored (the order its scores use). Null when no head has scores.
 */
export function packScores(
  scores: DecisionTrace['scores'],
  entryTokens: (layer: number, kvHead: number) => ArrayLike<number> | null,
  tokens: number,
): ScoreGrid | null {
  if (!scores) return null;
  const layers = scores.length;
  const kvHeads = scores[0]?.length ?? 0;
  const values = new Float32Array(layers * kvHeads * tokens).fill(Number.NaN);
  let any = false;
  for (let l = 0; l < layers; l++) {
    for (let h = 0; h < kvHeads; h++) {
      const row = scores[l][h];
      const first = row ? entryTokens(l, h) : null;
      if (!row || !first) continue;
      const base = (l * kvHeads + h) * tokens;
      const n = Math.min(row.length, first.length);
      for (let i = 0; i < n; i++) {
        const t = first[i];
        if (t >= 0 && t < tokens && !Number.isNaN(row[i])) {
          values[base + t] = row[i];
          any = true;
        }
      }
    }
  }
  return any ? { layers, kvHeads, tokens, values } : null;
}

/** Scores of a step's decision: the entries it scored are the ones the step's query saw (trace.attention). */
export function stepScores(trace: StepTrace): ScoreGrid | null {
  const attention = trace.attention;
  if (!attention) return null;
  return packScores(trace.decision.scores, (l, h) => attention[l]?.entries[h]?.tokens ?? null, trace.tokenIndex + 1);
}

/** Scores of the prefill decision: the policy saw the prompt's tokens, one entry each, in order. */
export function prefillScores(prefill: PrefillTrace): ScoreGrid | null {
  const n = prefill.tokenIds.length;
  const tokens = Int32Array.from({ length: n }, (_, i) => prefill.firstToken + i);
  return packScores(prefill.decision.scores, () => tokens, prefill.firstToken + n);
}

/** What a decision evicted, as flattened (layer, kvHead, token) triples. */
export function packEvictions(decision: DecisionTrace): Int32Array {
  let n = 0;
  for (const head of decision.heads) n += head.evictedTokens.length;
  const out = new Int32Array(n * 3);
  let k = 0;
  for (const head of decision.heads) {
    for (const t of head.evictedTokens) {
      out[k++] = head.layer;
      out[k++] = head.kvHead;
      out[k++] = t;
    }
  }
  return out;
}

/** The reference lane's metrics as the page keeps them (per-head masses dropped). */
export function packReference(metrics: ReferenceMetrics | ReferenceStepTrace | null | undefined): ReferenceView | null {
  if (!metrics) return null;
  const { kl, agree, mass, massByLayer, memoryRatio, policyBytes, fullBytes } = metrics;
  return { kl, agree, mass, massByLayer: [...massByLayer], memoryRatio, policyBytes, fullBytes };
}

/** The reference metrics as an exported trace's header keeps them (per-head masses dropped: no view reads them). */
export function referenceStepTrace(metrics: ReferenceMetrics): ReferenceStepTrace {
  const { step, tokenIndex, kl, agree, fullTop, policyTop, mass, massByLayer, memoryRatio, policyBytes, fullBytes } = metrics;
  return { step, tokenIndex, kl, agree, fullTop, policyTop, mass, massByLayer: [...massByLayer], memoryRatio, policyBytes, fullBytes };
}

/** The calibration's head scores for the retrieval-head map. */
export function calibrationView(calibration: Calibration | null | undefined): CalibrationView | null {
  if (!calibration || (!calibration.razor && !calibration.retrieval)) return null;
  const notes: string[] = [];
  const razor = calibration.razor;
  const retrieval = calibration.retrieval;
  if (razor) {
    notes.push(
      `echo / induction: RazorAttention's data-free probe, BOS + ${razor.repeatLength} random tokens repeated ${razor.repeats}× (${razor.sequences} sequence${razor.sequences === 1 ? '' : 's'}, seed ${razor.seed})`,
    );
  }
  if (retrieval) {
    notes.push(
      `Wu et al. / semantic: passkey prompts, ${retrieval.trials} trials (${retrieval.successes} retrieved the key), ${retrieval.targetTokens} tokens, greedy, full cache`,
    );
  }
  return {
    echo: razor?.echo ?? null,
    induction: razor?.induction ?? null,
    wu: retrieval?.wu ?? null,
    semantic: retrieval?.semantic ?? null,
    threshold: retrieval?.threshold ?? null,
    notes,
  };
}

// ---- reading a list of events ------------------------------------------------------------------

/** Index of the event of decode step `step`, or −1 (searched from the end: views mostly want recent steps). */
export function stepEventIndex(events: readonly TraceEvent[], step: number): number {
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i];
    if (e.kind === 'step' && e.step === step) return i;
    if (e.kind === 'step' && e.step < step) return -1;
  }
  return -1;
}

/** Decode steps recorded. */
export function stepCountOf(events: readonly TraceEvent[]): number {
  for (let i = events.length - 1; i >= 0; i--) {
    const e = events[i];
    if (e.kind === 'step') return e.step + 1;
  }
  return 0;
}

/** RoPE position of the next token after the events (a decision may set it: StreamingLLM's P2 positions). */
export function nextPositionAfter(events: readonly TraceEvent[]): number {
  let position = 0;
  for (const e of events) {
    if (e.kind === 'prefill') position = e.firstPosition + e.tokenIds.length;
    else if (e.kind === 'step') position = e.position + 1;
    position = e.decision.nextPosition ?? position;
  }
  return position;
}

/** The policy in charge after the events. */
export function policyAfter(events: readonly TraceEvent[], startPolicy: string): string {
  const last = events[events.length - 1];
  if (!last) return startPolicy;
  return last.kind === 'policy' ? last.to : last.policy;
}

export interface StateExtras {
  /** the model's distribution for the next token (the session's pending logits; the header's `next` in a replay) */
  next: TokenProb[];
  protects: ProtectedHeadsTrace | null;
  reference: boolean;
  referenceStopped?: string;
}

/** The session after `events` (the newest event's evictions marked on the map). */
export function packSessionState(events: readonly TraceEvent[], held: HeldEntries, startPolicy: string, extras: StateExtras): SessionState {
  const last = events[events.length - 1] ?? null;
  if (!last) throw new RangeError('no events: the session has not read a prompt yet');
  return {
    stepCount: stepCountOf(events),
    tokenCount: held.tokenCount,
    position: nextPositionAfter(events),
    policy: policyAfter(events, startPolicy),
    memory: last.memory,
    next: extras.next,
    cacheMap: packCacheMap(held, last.decision),
    protects: extras.protects,
    reference: extras.reference,
    ...(extras.referenceStopped ? { referenceStopped: extras.referenceStopped } : {}),
  };
}

export interface PackOptions {
  heads: number;
  /** the model's distribution for the token after this step */
  next: TokenProb[];
  /** include the attention grid, cache map and scores (views on) */
  attention: boolean;
  /** the cache after this step's decision (from the replay); null: no cache map */
  held: HeldEntries | null;
  /**
   * the cache before this step (the replay after the previous event): lets an older step whose
   * full attention rows were compacted show its top-k summary instead
   */
  heldBefore?: HeldEntries | null;
  /** reference-lane metrics of this step */
  reference?: ReferenceMetrics | ReferenceStepTrace | null;
}

export function packStep(trace: StepTrace, options: PackOptions): StepView {
  const tokens = trace.tokenIndex + 1;
  let attention: AttentionGrid | null = null;
  let attentionTopOnly: number | undefined;
  if (options.attention && trace.attention) attention = packAttention(trace.attention, options.heads, tokens);
  else if (options.attention && trace.attentionTop && options.heldBefore) {
    attention = packAttentionTop(trace.attentionTop, options.heldBefore, trace.tokenIndex, options.heads, tokens);
    attentionTopOnly = trace.attentionTop.k;
  }
  return {
    step: trace.step,
    tokenIndex: trace.tokenIndex,
    position: trace.position,
    token: trace.token,
    sampleProb: trace.sampleProb,
    topK: trace.topK,
    next: options.next,
    policy: trace.policy,
    note: trace.decision.note,
    evicted: trace.decision.evicted,
    merged: trace.decision.merged,
    reencoded: trace.decision.reencoded,
    memory: trace.memory,
    timings: trace.timings,
    attention,
    ...(attentionTopOnly !== undefined ? { attentionTopOnly } : {}),
    cacheMap: options.attention && options.held ? packCacheMap(options.held, trace.decision) : null,
    scores: options.attention ? stepScores(trace) : null,
    evictions: packEvictions(trace.decision),
    reference: packReference(options.reference ?? null),
  };
}

// ---- a whole trace (read-only replay of an imported file) ---------------------------------------

/** How many of the newest steps an imported trace sends with full views (the page's RING). */
export const REPLAY_FULL_VIEWS = 64;

/** A read trace with what packing needs to find quickly: the step events by step, reference metrics. */
export class TraceViews {
  readonly timeline: ReplayTimeline;
  private readonly stepIndex: number[] = [];
  private readonly reference = new Map<number, ReferenceStepTrace>();

  constructor(readonly trace: ReadTrace) {
    const { model } = trace.header;
    this.timeline = new ReplayTimeline({ layers: model.layers, kvHeads: model.kvHeads });
    trace.events.forEach((e, i) => {
      if (e.kind === 'step') this.stepIndex[e.step] = i;
    });
    for (const r of trace.header.reference?.steps ?? []) this.reference.set(r.step, r);
  }

  get events(): readonly TraceEvent[] {
    return this.trace.events;
  }

  get steps(): number {
    return this.stepIndex.length;
  }

  /** The model's next-token distribution after step `step` (−1: after the prompt). */
  nextAfter(step: number): TokenProb[] {
    const following = this.stepIndex[step + 1];
    if (following !== undefined) return (this.events[following] as StepTrace).topK;
    return this.trace.header.next ?? [];
  }

  /** Full view of one recorded step. */
  step(step: number): StepView {
    const index = this.stepIndex[step];
    if (index === undefined) throw new RangeError(`the trace has no step ${step} (it has ${this.steps})`);
    const event = this.events[index] as StepTrace;
    // the summary path needs the cache before the step: copy it out before moving on
    const heldBefore = event.attention ? null : frozenHeld(this.timeline.at(this.events, index));
    return packStep(event, {
      heads: this.trace.header.model.heads,
      next: this.nextAfter(step),
      attention: true,
      held: this.timeline.at(this.events, index + 1),
      heldBefore,
      reference: this.reference.get(step) ?? null,
    });
  }

  /** The merged entries of one head after step `step` (−1: after the prompt) and MiniCache's depth measures (pack-merges.ts). */
  merges(step: number, layer: number, kvHead: number): MergeView {
    return mergeViewAt(this.events, (count) => this.timeline.at(this.events, count), step, layer, kvHead);
  }

  /** The quantization error view of one head after step `step`, as the trace recorded it (pack-quant.ts). */
  quant(step: number, layer: number, kvHead: number): QuantView {
    return quantViewAt(this.events, (count) => this.timeline.at(this.events, count), step, layer, kvHead, null);
  }

  /** Compact record of one step (no attention, cache map or scores). */
  record(step: number): StepView {
    const event = this.events[this.stepIndex[step]] as StepTrace;
    return packStep(event, { heads: this.trace.header.model.heads, next: this.nextAfter(step), attention: false, held: null, reference: this.reference.get(step) ?? null });
  }

  /** Everything the page shows of the trace, as it stood at its end. */
  imported(fileName: string): ImportedTraceView {
    const { header, events } = this.trace;
    const prefill = events[0] as PrefillTrace;
    const afterPrefill = this.timeline.at(events, 1);
    const prefillView: PrefillView = {
      scores: prefillScores(prefill),
      evictions: packEvictions(prefill.decision),
      cacheMap: packCacheMap(afterPrefill, prefill.decision),
      policy: prefill.policy,
      memory: prefill.memory,
      next: this.nextAfter(-1),
    };
    const firstFull = Math.max(0, this.steps - REPLAY_FULL_VIEWS);
    const steps: StepView[] = [];
    for (let s = 0; s < this.steps; s++) steps.push(s >= firstFull ? this.step(s) : this.record(s));
    const switches: SwitchView[] = [];
    events.forEach((e, i) => {
      if (e.kind !== 'policy') return;
      const evictions = packEvictions(e.decision);
      const earlier = switches.find((s) => s.atStep === e.atStep);
      if (earlier) {
        // two switches at the same point read as one, from the first one's policy and cache (as live)
        earlier.to = e.to;
        earlier.note = e.decision.note;
        earlier.evictions = concatInt32(earlier.evictions, evictions);
        earlier.evicted += evictions.length / 3;
        earlier.withoutHistory = e.withoutHistory;
        return;
      }
      switches.push({
        atStep: e.atStep,
        from: e.from,
        to: e.to,
        note: e.decision.note,
        before: packCacheMap(this.timeline.at(events, i), null),
        evictions,
        evicted: evictions.length / 3,
        ...(e.withoutHistory ? { withoutHistory: e.withoutHistory } : {}),
      });
    });
    const state = packSessionState(events, this.timeline.at(events), header.policy, {
      next: this.nextAfter(this.steps - 1),
      protects: header.protects ?? null,
      reference: false,
    });
    const notes: string[] = [];
    if (header.prompt == null) notes.push('the trace does not carry its prompt text (written by an older kvscope or the command line): the setup keeps yours');
    if (!header.next) notes.push('the next-token distribution after the last step was not recorded');
    if (header.options.fullSteps < this.steps) notes.push(`full attention was kept for the last ${header.options.fullSteps} steps; older steps show their top ${header.options.attentionTop} entries per head`);
    return {
      fileName,
      version: this.trace.version,
      model: { ...header.model },
      prompt: { ids: [...prefill.tokenIds], pieces: [...prefill.pieces] },
      promptText: header.prompt ?? null,
      sampler: { ...header.sampler },
      policy: header.policy,
      steps,
      switches,
      prefill: prefillView,
      state,
      reference: this.reference.size > 0,
      notes,
    };
  }
}

/** A copy of what the heads hold (the replay's views change with its next move). */
function frozenHeld(held: HeldEntries): HeldEntries {
  const heads = Array.from({ length: held.layers * held.kvHeads }, (_, i) => {
    const l = Math.floor(i / held.kvHeads);
    const h = i % held.kvHeads;
    const tokens = Int32Array.from(held.tokens(l, h));
    return { tokens, origins: Array.from(tokens, (_, k) => held.origin(l, h, k)), codecs: Array.from(tokens, (_, k) => held.codec(l, h, k)) };
  });
  const at = (l: number, h: number) => heads[l * held.kvHeads + h];
  return {
    layers: held.layers,
    kvHeads: held.kvHeads,
    tokenCount: held.tokenCount,
    length: (l, h) => at(l, h).tokens.length,
    tokens: (l, h) => at(l, h).tokens,
    origin: (l, h, i) => at(l, h).origins[i],
    codec: (l, h, i) => at(l, h).codecs[i],
  };
}

export function concatInt32(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Typed arrays of an imported trace's views, for postMessage transfer (each buffer once). */
export function importedTransferables(view: ImportedTraceView): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  const add = (a: ArrayBufferView | null | undefined) => {
    if (a) out.add(a.buffer as ArrayBuffer);
  };
  for (const s of view.steps) {
    add(s.attention?.weights);
    add(s.cacheMap?.codes);
    add(s.scores?.values);
    add(s.evictions);
  }
  for (const s of view.switches) {
    add(s.before.codes);
    add(s.evictions);
  }
  add(view.prefill.cacheMap.codes);
  add(view.prefill.scores?.values);
  add(view.prefill.evictions);
  add(view.state.cacheMap.codes);
  return [...out];
}

