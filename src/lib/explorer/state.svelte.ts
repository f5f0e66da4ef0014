/**
 * The explorer's state (Svelte 5 runes): the model status, the setup (prompt, sampler, policy),
 * the decoded steps and the views of the selected step. It talks to the engine only through the
 * EngineClient (worker protocol); it never does model math.
 *
 * Memory stays bounded (docs/architecture.md, "The trace"): every step keeps a compact record (token, top-k, memory),
 * full attention/cache-map views are kept for the last RING steps only; an older step's view is
 * recomputed exactly by the worker on demand (`inspect`).
 *
 * Read-only replay: `importTrace(file)` hands an exported trace to the worker, which packs the
 * same views from it without the model. The page then shows the trace as it stood at its end;
 * Step → and ← Back move through the recorded steps (down to "after the prompt"), and everything
 * that would need the model (decoding on, Run, Apply now, the reference lane, Reset) is off until
 * `leaveReplay()` goes back to live mode.
 */
import { untrack } from 'svelte';
import { EngineClient, EngineFailure, type CommandInput } from '../worker/client.ts';
import type {
  CacheMapView,
  CalibrationView,
  EngineEvent,
  ErrorKind,
  ImportedTraceView,
  LoadProgressView,
  MergeEntryView,
  MergeView,
  ModelInfo,
  PolicyChoice,
  PolicyInfo,
  PrefillView,
  PromptView,
  QuantView,
  ReferenceView,
  SamplerSettings,
  ScoreGrid,
  SessionState,
  StepView,
  StopReason,
  TraceModelView,
} from '../worker/protocol.ts';
import type { ParamValue } from '../../../engine/policies/types.ts';
import { policyLabel } from '../../../engine/policies/spec.ts';
import type { HistoryRow } from '../charts/raster.ts';
import { EXAMPLES } from './examples.ts';
import { buildEvictionLog, forgottenMarks, prefillMoment, stepMoment, switchMoment, type EvictionSource, type ForgottenMarks } from './forgotten.ts';
import { mark } from '../perf.ts';
import {
  MAX_PICKED_MEMBERS,
  choicesFromSpec,
  choicesFromSpecOrNull,
  defaultChoice,
  nextMember,
  replaceMember,
  specOfChoices,
  withMemberParam,
  withoutMember,
} from './policy-choice.ts';
import { MergeViewState, type MergePick, type TokenHighlight } from './merge-view.svelte.ts';
import { QuantViewState } from './quant-view.svelte.ts';
import { SpecViewState } from './spec-view.svelte.ts';
import type { HeadViewRequest } from './head-view-requests.svelte.ts';
import { ExperimentLog } from './experiment-log.ts';
import { sameChoice, type ModelChoice } from '../models/choice.ts';
import { loadChosenModel } from '../models/load.ts';
import type { Experiment, ExperimentAction } from '../links/experiment.ts';

/** What the page keeps of every step (compact; `topK` is dropped: it equals the previous step's `next`). */
export type StepRecord = Omit<StepView, 'attention' | 'attentionTopOnly' | 'cacheMap' | 'topK' | 'scores'>;

/** A live policy switch as the page shows it (token-stream marker, chart markers, before/after cache maps). */
export interface SwitchRecord {
  /** decode steps taken before the switch */
  atStep: number;
  from: string;
  to: string;
  note?: string;
  /** the cache map just before the switch (after it: the session's map, the switch's evictions marked) */
  before: CacheMapView | null;
  /** what the switch evicted: (layer, kvHead, token) triples, and how many */
  evictions: Int32Array;
  evicted: number;
  /** what the new policy does without the history it would have kept (attached mid-run) */
  withoutHistory?: string;
}

export type ModelStatus = 'idle' | 'loading' | 'ready' | 'error' | 'crashed';
export type Activity = 'idle' | 'prefilling' | 'stepping' | 'running' | 'rewinding' | 'switching' | 'exporting' | 'importing';

/** An imported trace shown read-only (no model needed). */
export interface ReplayInfo {
  fileName: string;
  version: number;
  /** the model the trace was recorded with (the views' dimensions) */
  model: TraceModelView;
  /** the policy the run started with */
  policy: string;
  steps: number;
  /** what the trace lacks, in words */
  notes: string[];
}

/** The prompt's decision as the page keeps it (protocol.ts PrefillView). */
export type PrefillRecord = PrefillView;

export interface ShownError {
  kind: ErrorKind;
  message: string;
  /** what the page offers: reload the model, restart the worker, or just dismiss */
  action: 'retry' | 'restart' | 'dismiss';
}

export const RING = 64;
export const DEFAULT_SAMPLER: SamplerSettings = { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 };

import type { EngineUrls } from '../worker/client.ts';
export type { EngineUrls };

function record(view: StepView): StepRecord {
  const { attention: _a, attentionTopOnly: _o, cacheMap: _c, topK: _t, scores: _s, ...rest } = view;
  return rest;
}

/** Next animation frame, or 250 ms at the latest (animation frames stop in background tabs). */
function schedule(fn: () => void): void {
  let done = false;
  const once = () => {
    if (done) return;
    done = true;
    fn();
  };
  if (typeof requestAnimationFrame === 'function') requestAnimationFrame(once);
  setTimeout(once, typeof requestAnimationFrame === 'function' ? 250 : 0);
}

export class ExplorerState {
  // ---- model ----
  status = $state<ModelStatus>('idle');
  progress = $state.raw<LoadProgressView | null>(null);
  model = $state.raw<ModelInfo | null>(null);
  /** the model to load (src/lib/models/choice.ts); null: the index's default */
  modelChoice = $state.raw<ModelChoice | null>(null);
  policies = $state.raw<PolicyInfo[]>([]);
  cacheInfo = $state.raw<{ hits: number; misses: number; removed: number; available: boolean } | null>(null);
  loadMs = $state(0);
  error = $state.raw<ShownError | null>(null);
  notice = $state<string | null>(null);

  // ---- setup ----
  prompt = $state(EXAMPLES[0].text);
  promptTokens = $state<number | null>(null);
  sampler = $state<SamplerSettings>({ ...DEFAULT_SAMPLER });
  /** the policy as picked: the members of a composition in the order they run (one for a single policy) */
  policyMembers = $state<PolicyChoice[]>(choicesFromSpec('full'));
  /** the engine's message for the last policy it refused (a typed spec, Apply now, Reset); shown at the picker */
  policyError = $state<string | null>(null);
  runSteps = $state(64);
  stopAtEos = $state(true);
  appliedPrompt = $state<string | null>(null);
  appliedSampler = $state<string | null>(null);
  /** the policy the session started with (canonical): the experiment's first policy */
  startedPolicy = $state<string | null>(null);

  // ---- session ----
  promptView = $state.raw<PromptView | null>(null);
  steps = $state.raw<StepRecord[]>([]);
  session = $state.raw<SessionState | null>(null);
  activePolicy = $state<string | null>(null);
  activity = $state<Activity>('idle');
  lastStop = $state<StopReason | null>(null);
  /** selected step; null follows the newest */
  selected = $state<number | null>(null);
  viewsLive = $state(true);
  /** the full-cache reference lane runs in lockstep */
  reference = $state(false);
  /** live policy switches of this session, oldest first */
  switches = $state.raw<SwitchRecord[]>([]);
  /** the prefill decision's scores and evictions (prefill-only policies such as SnapKV decide here) */
  prefill = $state.raw<PrefillRecord | null>(null);
  /** set while an imported trace is shown read-only */
  replay = $state.raw<ReplayInfo | null>(null);
  calibration = $state.raw<CalibrationView | null>(null);

  // ---- views ----
  layer = $state(0);
  head = $state(0);
  scale = $state<'linear' | 'log'>('linear');
  excludeSink = $state(false);
  /** token-stream overlay of evicted tokens: off, share of all heads, or the selected head's KV head */
  forgottenMode = $state<'off' | 'all' | 'head'>('all');
  ringVersion = $state(0);
  inspected = $state.raw<StepView | null>(null);
  inspecting = $state<number | null>(null);

  /** what shaped the session's tokens, for its link (experiment-log.ts); `logVersion` makes it reactive */
  private readonly log = new ExperimentLog();
  private logVersion = $state(0);
  private ring = new Map<number, StepView>();
  private incoming: StepView[] = [];
  private flushScheduled = false;
  private firstTokenMarked = false;
  private tokenizeTimer: ReturnType<typeof setTimeout> | null = null;
  private tokenizeSeq = 0;
  /** the merge view of the shown step and head, and what it picked (merge-view.svelte.ts) */
  private readonly mergeView: MergeViewState;
  /** the quantization error view of the shown step and head (quant-view.svelte.ts) */
  private readonly quantView: QuantViewState;
  /** the drafter picker and the speculative-decoding view (spec-view.svelte.ts) */
  readonly spec: SpecViewState;

  constructor(
    readonly client: EngineClient,
    readonly urls: EngineUrls,
    readonly threads = 1,
  ) {
    client.onCrash = (message) => this.crashed(message);
    const selection = () => ({ step: this.currentStep, layer: this.layer, kvHead: this.kvHead });
    const fail = (error: unknown) => this.fail(error);
    this.mergeView = new MergeViewState(client, selection, fail);
    this.quantView = new QuantViewState(client, selection, fail);
    this.spec = new SpecViewState(client);
    this.spec.onApplied = (spec) => {
      if (this.session && !this.replay) this.logged(() => this.log.drafter(spec));
    };
  }

  private logged(change: () => void): void {
    change();
    this.logVersion++;
  }

  /**
   * The live session as an experiment (src/lib/links/): the inputs that replay it exactly and what
   * the page shows. Null before a session, during a replay of an imported trace, and while the
   * model is unknown.
   */
  readonly experiment = $derived.by((): Experiment | null => {
    void this.logVersion;
    const model = this.model;
    if (!model || this.replay || !this.session || this.appliedPrompt === null || this.appliedSampler === null || this.startedPolicy === null) return null;
    return {
      model: { id: model.id, sha256: model.sha256 },
      prompt: this.appliedPrompt,
      sampler: JSON.parse(this.appliedSampler) as SamplerSettings,
      policy: this.startedPolicy,
      actions: this.log.actions.slice(),
      steps: this.steps.length,
      view: {
        step: this.selected,
        layer: this.layer,
        head: this.head,
        scale: this.scale,
        excludeSink: this.excludeSink,
        forgotten: this.forgottenMode,
        live: this.viewsLive,
      },
    };
  });

  // ---- derived ----

  readonly latestStep = $derived(this.steps.length - 1);
  readonly currentStep = $derived(this.selected !== null && this.selected <= this.latestStep ? this.selected : this.latestStep);
  readonly current = $derived(this.currentStep >= 0 ? this.steps[this.currentStep] : null);
  readonly busy = $derived(this.activity !== 'idle' || this.status !== 'ready');
  readonly running = $derived(this.activity === 'running');
  /** the model can decode the live session (never during a replay) */
  readonly canStep = $derived(this.replay === null && this.status === 'ready' && this.activity === 'idle' && this.session !== null);
  /** Step → is possible: decode one more token, or (replay) show the next recorded step */
  readonly canForward = $derived(this.replay ? this.activity === 'idle' && this.currentStep < this.latestStep : this.canStep);
  /** ← Back is possible: step back, or (replay) show the previous recorded step down to "after the prompt" */
  readonly canBackward = $derived(this.replay ? this.activity === 'idle' && this.currentStep > -1 : this.canStep && this.steps.length > 0);
  /** Export trace is possible (a replay exports the imported trace again) */
  readonly canExport = $derived(this.replay ? this.activity === 'idle' : this.canStep);
  /** Import trace is possible: not while the engine works on something, nor after a crash */
  readonly canImport = $derived(this.activity === 'idle' && this.status !== 'crashed');
  /** the model the views are drawn for: the trace's during a replay, else the loaded one */
  readonly shownModel = $derived<TraceModelView | null>(this.replay?.model ?? this.model);
  /** the loaded model's calibration, when it belongs to the model shown */
  readonly shownCalibration = $derived(this.replay && this.replay.model.id !== this.model?.id ? null : this.calibration);
  readonly pieces = $derived.by(() => {
    const prompt = this.promptView?.pieces ?? [];
    return prompt.concat(this.steps.map((s) => s.token.piece));
  });
  readonly setupChanged = $derived(
    // a replay's setup is only used by "Back to live mode", which reruns it anyway
    this.replay === null &&
      this.session !== null &&
      (this.prompt !== this.appliedPrompt || JSON.stringify(this.sampler) !== this.appliedSampler),
  );
  /** canonical spec of the picked members (the engine's form); null while a parameter is invalid */
  readonly policySpec = $derived(specOfChoices(this.policyMembers));
  readonly policyChanged = $derived(
    this.replay === null && this.session !== null && this.activePolicy !== null && this.policySpec !== this.activePolicy,
  );
  /** "then …" can add a member */
  readonly canAddPolicyMember = $derived(this.policyMembers.length < MAX_PICKED_MEMBERS);

  /** Full view of the current step, if held (ring or inspected). */
  readonly view = $derived.by((): StepView | null => {
    void this.ringVersion;
    const step = this.currentStep;
    if (step < 0) return null;
    return this.ring.get(step) ?? (this.inspected?.step === step ? this.inspected : null);
  });

  /** Attention history up to the current step (oldest first): consecutive held rows. */
  readonly history = $derived.by((): HistoryRow[] => {
    void this.ringVersion;
    const step = this.currentStep;
    if (step < 0) return [];
    const rows: HistoryRow[] = [];
    const own = this.view;
    if (!own?.attention) return rows;
    for (let s = step; s > step - RING && s >= 0; s--) {
      const v = s === step ? own : this.ring.get(s);
      if (!v?.attention) break;
      rows.push({ step: s, tokens: v.attention.tokens, heads: v.attention.heads, weights: v.attention.weights });
    }
    return rows.reverse();
  });

  /** the session state (after done / rewind / policy switch) describes the newest step exactly */
  readonly sessionAtLatest = $derived(this.session !== null && this.session.stepCount === this.steps.length);
  readonly showingLatest = $derived(this.currentStep === this.latestStep);
  /** the shown point is "after the prompt" while steps exist (a replay stepped back to the start) */
  readonly showingPrefill = $derived(this.currentStep < 0 && this.steps.length > 0);
  readonly cacheMap = $derived(
    this.showingLatest && this.sessionAtLatest
      ? this.session!.cacheMap
      : this.showingPrefill
        ? (this.prefill?.cacheMap ?? null)
        : (this.view?.cacheMap ?? null),
  );
  readonly memory = $derived(
    this.showingLatest && this.sessionAtLatest
      ? this.session!.memory
      : this.showingPrefill
        ? (this.prefill?.memory ?? null)
        : (this.current?.memory ?? this.session?.memory ?? null),
  );
  readonly next = $derived(
    this.showingLatest && this.sessionAtLatest ? this.session!.next : this.showingPrefill ? (this.prefill?.next ?? null) : (this.current?.next ?? null),
  );
  readonly chosenNext = $derived(this.steps[this.currentStep + 1]?.token.id ?? null);
  readonly memoryHistory = $derived(this.steps.map((s) => ({ step: s.step, bytes: s.memory.bytes, fullBytes: s.memory.fullBytes })));

  // ---- reference lane, switches, forgotten tokens, scores ----

  readonly referenceHistory = $derived(this.steps.map((s): { step: number; reference: ReferenceView | null } => ({ step: s.step, reference: s.reference ?? null })));
  readonly currentReference = $derived(this.current?.reference ?? null);
  readonly switchSteps = $derived(this.switches.map((s) => s.atStep));
  /** the switch that happened right after the shown step (the cache map then shows before / after) */
  readonly switchHere = $derived.by((): SwitchRecord | null => {
    if (!(this.showingLatest && this.sessionAtLatest)) return null;
    const at = this.currentStep + 1;
    return lastSwitchAt(this.switches, at);
  });
  readonly kvHead = $derived(this.shownModel ? Math.floor(this.head / (this.shownModel.heads / this.shownModel.kvHeads)) : 0);
  /** tokens of the shown step (the prompt after prefill) */
  readonly shownTokens = $derived(this.current ? this.current.tokenIndex + 1 : (this.promptView?.ids.length ?? 0));

  /** Which head lost which token up to the shown step (prefill, step decisions, switches). */
  readonly evictionLog = $derived.by(() => {
    const model = this.shownModel;
    if (!model || !this.promptView) return null;
    const sources: EvictionSource[] = [];
    if (this.prefill) sources.push({ moment: prefillMoment(), evictions: this.prefill.evictions });
    for (const s of this.steps) if (s.evictions && s.evictions.length > 0) sources.push({ moment: stepMoment(s.step), evictions: s.evictions });
    for (const s of this.switches) sources.push({ moment: switchMoment(s.atStep), evictions: s.evictions });
    // a switch right after the shown step counts only when the views show the state after it
    const upTo = this.switchHere ? switchMoment(this.currentStep + 1) : stepMoment(this.currentStep);
    return buildEvictionLog(model.layers, model.kvHeads, this.pieces.length, sources, upTo);
  });

  readonly forgotten = $derived.by((): ForgottenMarks | null => {
    const log = this.evictionLog;
    if (!log || this.forgottenMode === 'off') return null;
    const head: [number, number] | null = this.forgottenMode === 'head' ? [this.layer, this.kvHead] : null;
    const switches = this.switches;
    return forgottenMarks(log, head, this.shownTokens, (at) => policyLabel(lastSwitchAt(switches, at)?.to ?? ''));
  });

  /**
   * Scores of the decision at the shown step, or — for a policy that decides once, after the
   * prompt (SnapKV, PyramidKV, WindowKV, CompressKV) and is still the one in charge — of the
   * prefill decision.
   */
  readonly scoresShown = $derived.by((): { grid: ScoreGrid; map: CacheMapView | null; source: 'step' | 'prefill' } | null => {
    const own = this.view;
    if (own?.scores) return { grid: own.scores, map: own.cacheMap, source: 'step' };
    // the shown step's own view is not here yet (being recomputed): nothing to fall back on
    if (!own && this.currentStep >= 0) return null;
    const policy = this.current?.policy ?? this.session?.policy;
    if (this.prefill?.scores && policy === this.prefill.policy) return { grid: this.prefill.scores, map: this.prefill.cacheMap, source: 'prefill' };
    return null;
  });

  /** Score grids of the held steps up to the shown one (oldest first), for the rank history. */
  readonly scoreHistory = $derived.by((): { step: number; grid: ScoreGrid }[] => {
    void this.ringVersion;
    const out: { step: number; grid: ScoreGrid }[] = [];
    for (let s = this.currentStep; s >= 0 && s > this.currentStep - RING; s--) {
      const v = s === this.currentStep ? this.view : this.ring.get(s);
      if (!v?.scores) break;
      out.push({ step: s, grid: v.scores });
    }
    return out.reverse();
  });

  // ---- merges and highlighted tokens (merge-view.svelte.ts) ----

  get merges(): MergeView | null {
    return this.mergeView.view;
  }
  get mergesError(): string | null {
    return this.mergeView.error;
  }
  get mergePick(): MergePick | null {
    return this.mergeView.pick;
  }
  get mergesCurrent(): boolean {
    return this.mergeView.current;
  }
  get pickedMerge(): MergeEntryView | null {
    return this.mergeView.picked;
  }
  get highlight(): TokenHighlight | null {
    return this.mergeView.highlight;
  }

  pickMerge(pick: MergePick | null): void {
    this.mergeView.pick = pick;
  }

  /** Asks the worker for the merge view of the shown step and head when they changed (one request in flight at a time). */
  ensureMerges(): void {
    const request = this.headViewRequest();
    if (request) this.mergeView.want(request);
  }

  /** What the head views (merge, quantization) are asked for now; null while there is no trace to pack them from. */
  private headViewRequest(): HeadViewRequest | null {
    // while the session is being rebuilt the trace is not the one shown
    const rebuilding = this.activity === 'prefilling' || this.activity === 'rewinding' || this.activity === 'switching' || this.activity === 'importing';
    if (!this.session || !this.promptView || rebuilding) return null;
    return { session: this.session, steps: this.steps.length, step: this.currentStep, layer: this.layer, kvHead: this.kvHead };
  }

  // ---- quantization error (quant-view.svelte.ts) ----

  get quant(): QuantView | null {
    return this.quantView.view;
  }
  get quantError(): string | null {
    return this.quantView.error;
  }
  get quantCurrent(): boolean {
    return this.quantView.current;
  }

  /** Asks the worker for the quantization error view of the shown step and head when they changed. */
  ensureQuant(): void {
    const request = this.headViewRequest();
    if (request) this.quantView.want(request);
  }

  /**
   * Asks the worker for the speculative-decoding view when the trace changed: reads only the number
   * of steps, the activity (a run's end, a rewind, a switch, an import) and the replay, not the shown
   * step or head.
   */
  ensureSpec(): void {
    void this.steps.length;
    void this.replay;
    const activity = this.activity;
    const rebuilding = activity === 'prefilling' || activity === 'rewinding' || activity === 'switching' || activity === 'importing';
    if (rebuilding || !untrack(() => this.session !== null && this.promptView !== null)) return;
    this.spec.refresh();
  }

  // ---- model ----

  async load(): Promise<void> {
    this.status = 'loading';
    this.error = null;
    this.progress = null;
    // until the new model is ready nothing may name the old one (links, the header)
    this.model = null;
    try {
      const ready = await loadChosenModel(this.client, this.urls, this.threads, this.modelChoice, (progress) => (this.progress = progress));
      this.model = ready.model;
      this.policies = ready.policies;
      this.spec.reset(ready.drafters ?? []);
      this.calibration = ready.calibration ?? null;
      this.cacheInfo = ready.cache;
      this.loadMs = ready.loadMs;
      this.status = 'ready';
      mark('kvscope:ready');
      this.requestTokenCount();
      // a trace imported while the model loaded stays on screen until the user goes back to live mode
      if (!this.replay) await this.start();
    } catch (error) {
      if ((this.status as ModelStatus) === 'crashed') return;
      const failure = EngineFailure.from(error);
      this.status = 'error';
      this.error = { kind: failure.kind, message: failure.message, action: 'retry' };
    }
  }

  private crashed(message: string): void {
    this.status = 'crashed';
    this.activity = 'idle';
    this.error = { kind: 'crash', message, action: 'restart' };
  }

  /** Loads another model (the picker) and starts the prompt on it; the session on the old one ends. */
  async chooseModel(choice: ModelChoice | null): Promise<void> {
    if (sameChoice(choice, this.modelChoice) && this.status === 'ready') return;
    this.modelChoice = choice;
    this.session = null;
    this.steps = [];
    this.clearViews();
    await this.load();
  }

  /** New worker, reload (from the file cache), rerun the prompt. */
  async restart(): Promise<void> {
    this.client.restart();
    // the replay lived in the old worker
    this.replay = null;
    this.session = null;
    this.steps = [];
    this.clearViews();
    await this.load();
  }

  private fail(error: unknown): void {
    if (this.status === 'crashed') return;
    const failure = EngineFailure.from(error);
    if (failure.kind === 'crash') return;
    this.error = { kind: failure.kind, message: failure.message, action: 'dismiss' };
  }

  /** Like fail(), but a policy the engine refused is named at the picker, where it is fixed. */
  private failPolicy(error: unknown): void {
    const failure = EngineFailure.from(error);
    if (failure.kind === 'policy' && this.status !== 'crashed') this.policyError = failure.message;
    else this.fail(error);
  }

  dismissError(): void {
    this.error = null;
  }

  // ---- prompt ----

  /** Debounced token count of the prompt (shown next to the editor, warns past the context). */
  requestTokenCount(): void {
    if (this.status !== 'ready') return;
    if (this.tokenizeTimer) clearTimeout(this.tokenizeTimer);
    const text = this.prompt;
    const seq = ++this.tokenizeSeq;
    this.tokenizeTimer = setTimeout(() => {
      this.client
        .request<Extract<EngineEvent, { type: 'tokenized' }>>({ type: 'tokenize', text })
        .then((r) => {
          if (seq === this.tokenizeSeq) this.promptTokens = r.count;
        })
        .catch(() => undefined);
    }, 150);
  }

  setPrompt(text: string): void {
    this.prompt = text;
    this.requestTokenCount();
  }

  // ---- session commands ----

  private clearViews(): void {
    this.ring.clear();
    this.incoming = [];
    this.inspected = null;
    this.inspecting = null;
    this.mergeView.clear();
    this.quantView.clear();
    this.spec.clear();
    this.ringVersion++;
  }

  /** (Re)starts decoding from the prompt with the current sampler and policy (Reset). */
  async start(): Promise<void> {
    // Reset does not apply to a replay: leaveReplay() is the way back
    if (this.replay) return;
    await this.startSession();
  }

  private async startSession(): Promise<void> {
    if (this.status !== 'ready' || (this.activity !== 'idle' && this.activity !== 'prefilling')) return;
    this.activity = 'prefilling';
    this.notice = null;
    this.error = null;
    try {
      const started = await this.client.request<Extract<EngineEvent, { type: 'started' }>>({
        type: 'start',
        prompt: this.prompt,
        sampler: { ...this.sampler },
        policy: this.policyMembersToSend(),
      });
      this.policyError = null;
      this.clearViews();
      this.replay = null;
      this.promptView = started.prompt;
      this.session = started.state;
      this.steps = [];
      this.switches = [];
      this.prefill = {
        scores: started.scores ?? null,
        evictions: started.evictions ?? new Int32Array(0),
        cacheMap: started.state.cacheMap,
        policy: started.state.policy,
        memory: started.state.memory,
        next: started.state.next,
      };
      this.reference = started.state.reference ?? false;
      this.selected = null;
      this.lastStop = null;
      this.activePolicy = started.state.policy;
      this.startedPolicy = started.state.policy;
      const initial: ExperimentAction[] = [];
      if (this.spec.active) initial.push({ kind: 'drafter', spec: this.spec.active });
      if (this.reference) initial.push({ kind: 'reference', on: true });
      this.logged(() => this.log.reset(initial));
      this.appliedPrompt = this.prompt;
      this.appliedSampler = JSON.stringify(this.sampler);
      this.promptTokens = started.prompt.ids.length;
    } catch (error) {
      this.failPolicy(error);
    } finally {
      this.activity = 'idle';
    }
  }

  private receiveStep(view: StepView): void {
    this.incoming.push(view);
    // never buffer more full views than the ring keeps (a slow or hidden page must not pile them up)
    const old = this.incoming.length - RING - 1;
    if (old >= 0 && this.incoming[old].attention) this.incoming[old] = { ...this.incoming[old], attention: null, cacheMap: null, scores: null };
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    schedule(() => this.flush());
  }

  /** Applies buffered steps once per animation frame (a fast run never re-renders per token). */
  flush(): void {
    this.flushScheduled = false;
    if (this.incoming.length === 0) return;
    const views = this.incoming;
    this.incoming = [];
    const known = this.steps.length;
    const fresh = views.filter((v) => v.step >= known);
    if (fresh.length === 0) return;
    this.steps = this.steps.concat(fresh.map(record));
    for (const v of fresh) {
      if (v.attention || v.cacheMap) this.ring.set(v.step, v);
    }
    for (const step of this.ring.keys()) {
      if (step <= this.steps.length - 1 - RING) this.ring.delete(step);
    }
    this.ringVersion++;
    if (!this.firstTokenMarked) {
      this.firstTokenMarked = true;
      mark('kvscope:first-token');
    }
  }

  private onDone(done: Extract<EngineEvent, { type: 'done' }>): void {
    this.flush();
    this.session = done.state;
    this.lastStop = done.reason;
    if (done.reason === 'context-full' || done.reason === 'eos') this.notice = done.message ?? null;
  }

  async step(): Promise<void> {
    if (this.replay) {
      if (this.canForward) this.select(this.currentStep + 1);
      return;
    }
    if (!this.canStep) return;
    this.activity = 'stepping';
    this.notice = null;
    const before = this.steps.length;
    const speculative = this.spec.active !== null;
    try {
      const done = await this.client.request<Extract<EngineEvent, { type: 'done' }>>({ type: 'step' }, (e) => {
        if (e.type === 'step') this.receiveStep(e.view);
      });
      this.onDone(done);
    } catch (error) {
      this.fail(error);
    } finally {
      this.flush();
      const taken = this.steps.length - before;
      if (taken > 0) this.logged(() => (speculative ? this.log.speculated({ kind: 'round', count: 1 }) : this.log.decoded(taken)));
      this.activity = 'idle';
    }
  }

  /**
   * Runs `runSteps` steps (or the given ones: a link's replay), stopping at EOS when `stopAtEos`;
   * `stopAfter` (a link's replay of a paused speculative Run): stop between rounds there.
   */
  async run(steps = Math.max(1, Math.floor(this.runSteps) || 1), stopAtEos = this.stopAtEos, stopAfter?: number): Promise<void> {
    if (!this.canStep) return;
    this.activity = 'running';
    this.notice = null;
    this.selected = null;
    if (steps > 1) this.spec.runStarted();
    const before = this.steps.length;
    const speculative = this.spec.active !== null;
    let paused = false;
    try {
      const done = await this.client.request<Extract<EngineEvent, { type: 'done' }>>({ type: 'run', steps, stopAtEos, ...(stopAfter ? { stopAfter } : {}) }, (e) => {
        if (e.type === 'step') this.receiveStep(e.view);
        else if (e.type === 'spec-measuring') this.spec.measuring = { done: e.done, total: e.total };
      });
      this.onDone(done);
      paused = done.reason === 'paused';
    } catch (error) {
      this.fail(error);
      paused = true;
    } finally {
      this.flush();
      const taken = this.steps.length - before;
      // a speculative Run cut short is the Run it was, paused where it was (its rounds were cut to `steps`)
      if (taken > 0) this.logged(() => (speculative ? this.log.speculated({ kind: 'run', steps, stopAtEos, ...(paused && taken < steps ? { cut: taken } : {}) }) : this.log.decoded(taken)));
      this.spec.measuring = null;
      this.activity = 'idle';
    }
  }

  pause(): void {
    if (this.activity === 'running') this.client.send({ type: 'pause' });
  }

  toggleRun(): void {
    if (this.activity === 'running') this.pause();
    else void this.run();
  }

  async back(n = 1): Promise<void> {
    if (this.replay) {
      if (this.canBackward) this.select(Math.max(-1, this.currentStep - n));
      return;
    }
    if (!this.canStep || this.steps.length === 0) return;
    this.activity = 'rewinding';
    this.notice = null;
    try {
      const rewound = await this.client.request<Extract<EngineEvent, { type: 'rewound' }>>({ type: 'back', steps: n });
      const keep = rewound.state.stepCount;
      const taken = this.steps.length - keep;
      if (taken > 0) this.logged(() => this.log.back(taken));
      this.steps = this.steps.slice(0, keep);
      this.switches = this.switches.filter((s) => s.atStep <= keep);
      for (const step of [...this.ring.keys()]) if (step >= keep) this.ring.delete(step);
      if (this.inspected && this.inspected.step >= keep) this.inspected = null;
      this.ringVersion++;
      this.session = rewound.state;
      // a merge view of a step that is gone must not come back (a newer request follows)
      this.mergeView.dropPending();
      this.quantView.dropPending();
      this.spec.dropPending();
      this.selected = null;
      this.lastStop = null;
      if (rewound.state.policy !== this.activePolicy) {
        this.activePolicy = rewound.state.policy;
        this.policyMembers = choicesFromSpecOrNull(rewound.state.policy) ?? this.policyMembers;
      }
    } catch (error) {
      this.fail(error);
    } finally {
      this.activity = 'idle';
    }
  }

  /**
   * Switches to the picked policy or composition live (the engine hands the current cache to it).
   * Resolves true once switched; a policy the engine refuses leaves the session as it was and is
   * named in `policyError`.
   */
  async applyPolicy(): Promise<boolean> {
    if (!this.canStep) return false;
    this.activity = 'switching';
    try {
      const event = await this.client.request<Extract<EngineEvent, { type: 'policy' }>>({
        type: 'set-policy',
        policy: this.policyMembersToSend(),
      });
      this.policyError = null;
      this.session = event.state;
      this.activePolicy = event.to;
      const atStep = event.atStep ?? event.state.stepCount;
      const earlier = this.switches.find((s) => s.atStep === atStep);
      const evictions = event.evictions ?? new Int32Array(0);
      const record: SwitchRecord = {
        atStep,
        // two switches at the same point read as one, from the first one's policy and cache
        from: earlier?.from ?? event.from,
        to: event.to,
        note: event.note,
        before: earlier?.before ?? event.before ?? null,
        evictions: earlier ? concatInt32(earlier.evictions, evictions) : evictions,
        evicted: (earlier?.evicted ?? 0) + evictions.length / 3,
        ...(event.withoutHistory ? { withoutHistory: event.withoutHistory } : {}),
      };
      this.switches = this.switches.filter((s) => s.atStep !== atStep).concat(record);
      this.logged(() => this.log.switched(event.to));
      this.notice = `Policy switched to ${event.to} after step ${event.state.stepCount}${event.note ? `: ${event.note}` : ''}.${event.withoutHistory ? ` Without history: ${event.withoutHistory}.` : ''}`;
      this.selected = null;
      return true;
    } catch (error) {
      this.failPolicy(error);
      return false;
    } finally {
      this.activity = 'idle';
    }
  }

  /**
   * Takes a typed spec or composition (`window:size=32 + h2o:heavy=8,recent=8`): the engine parses
   * it; the picker then shows its members and, while a session runs, the engine switches to it
   * live. A spec the engine refuses — here or when attaching it — is named in `policyError` and
   * changes nothing (picker and session stay as they were). Resolves true when taken.
   */
  async applySpec(text: string): Promise<boolean> {
    if (this.replay !== null || this.activity !== 'idle') return false;
    let members: PolicyChoice[];
    try {
      members = choicesFromSpec(text);
    } catch (error) {
      this.policyError = error instanceof Error ? error.message : String(error);
      return false;
    }
    const previous = this.policyMembers;
    this.policyMembers = members;
    this.policyError = null;
    // without a live session the picker holds it until Reset; the same policy needs no switch
    if (!this.canStep || !this.policyChanged) return true;
    const switched = await this.applyPolicy();
    if (!switched) this.policyMembers = previous;
    return switched;
  }

  /** Picks the policy of one member (its defaults); member 0 is the policy itself. */
  choosePolicy(id: string, member = 0): void {
    const info = this.policies.find((p) => p.id === id);
    if (!info || member < 0 || member >= this.policyMembers.length) return;
    this.policyMembers = replaceMember(this.policyMembers, member, defaultChoice(info));
    this.policyError = null;
  }

  setPolicyParam(member: number, name: string, value: ParamValue): void {
    this.policyMembers = withMemberParam(this.policyMembers, member, name, value);
    this.policyError = null;
  }

  /** Adds a member that runs after the others ("then …"), up to MAX_PICKED_MEMBERS. */
  addPolicyMember(): void {
    if (!this.canAddPolicyMember) return;
    const next = nextMember(this.policyMembers, this.policies, this.model?.calibration ?? false);
    if (next) this.policyMembers = [...this.policyMembers, next];
    this.policyError = null;
  }

  removePolicyMember(member: number): void {
    this.policyMembers = withoutMember(this.policyMembers, member);
    this.policyError = null;
  }

  /** The members as the protocol carries them (copies: postMessage must not see the runes' proxies). */
  private policyMembersToSend(): PolicyChoice[] {
    return this.policyMembers.map((member) => ({ id: member.id, params: { ...member.params } }));
  }

  /** Turns the full-cache reference lane on (from the current step) or off. */
  async setReference(on: boolean): Promise<void> {
    this.reference = on;
    if (this.status !== 'ready') return;
    try {
      const reply = await this.client.request<Extract<EngineEvent, { type: 'reference' | 'ack' }>>({ type: 'reference', on });
      if (reply.type === 'reference') {
        this.session = reply.state;
        this.reference = reply.on;
        if (!this.replay) this.logged(() => this.log.reference(reply.on));
      }
    } catch (error) {
      this.fail(error);
    }
  }

  setViewsLive(on: boolean): void {
    this.viewsLive = on;
    this.client.send({ type: 'views', attention: on });
  }

  select(step: number | null): void {
    // only a replay shows "after the prompt" once steps exist (live, Back rewinds the session instead)
    this.selected = step === null || step >= this.latestStep ? null : Math.max(this.replay ? -1 : 0, step);
  }

  /** Asks the worker for the full view of the current step when no copy is held. */
  ensureView(): void {
    const step = this.currentStep;
    if (step < 0 || this.view || this.activity === 'running' || this.inspecting === step) return;
    // a replay's views come from the trace in the worker: no model needed
    if (!this.replay && this.status !== 'ready') return;
    this.inspecting = step;
    this.client
      .request<Extract<EngineEvent, { type: 'inspected' }>>({ type: 'inspect', step })
      .then((r) => {
        if (r.view.step < this.steps.length) {
          if (r.view.step >= this.steps.length - RING) this.ring.set(r.view.step, r.view);
          this.inspected = r.view;
          this.ringVersion++;
        }
      })
      .catch((error) => this.fail(error))
      .finally(() => {
        if (this.inspecting === step) this.inspecting = null;
      });
  }

  async exportTrace(): Promise<{ json: string; fileName: string } | null> {
    if (!this.canExport) return null;
    this.activity = 'exporting';
    try {
      const trace = await this.client.request<Extract<EngineEvent, { type: 'trace' }>>({ type: 'export-trace' });
      return { json: trace.json, fileName: trace.fileName };
    } catch (error) {
      this.fail(error);
      return null;
    } finally {
      this.activity = 'idle';
    }
  }

  /**
   * Opens an exported trace read-only: the worker reads and checks it and packs the views from it
   * (no model needed). A file that is not a trace this app can read shows why and changes nothing.
   */
  async importTrace(file: { name: string; text(): Promise<string> }): Promise<boolean> {
    if (!this.canImport) return false;
    this.activity = 'importing';
    try {
      const json = await file.text();
      const reply = await this.client.request<Extract<EngineEvent, { type: 'imported' }>>({ type: 'import-trace', json, fileName: file.name });
      this.enterReplay(reply.trace);
      return true;
    } catch (error) {
      // only the message changes: the session, views and setup stay as they were
      const failure = error instanceof EngineFailure ? error : new EngineFailure('trace', `${file.name} cannot be read: ${error instanceof Error ? error.message : String(error)}`);
      if (failure.kind !== 'crash') this.error = { kind: failure.kind, message: failure.message, action: 'dismiss' };
      return false;
    } finally {
      this.activity = 'idle';
    }
  }

  private enterReplay(trace: ImportedTraceView): void {
    this.clearViews();
    this.replay = { fileName: trace.fileName, version: trace.version, model: trace.model, policy: trace.policy, steps: trace.steps.length, notes: trace.notes };
    this.error = null;
    this.notice = null;
    this.promptView = trace.prompt;
    this.session = trace.state;
    this.steps = trace.steps.map(record);
    for (const view of trace.steps) if (view.attention || view.cacheMap) this.ring.set(view.step, view);
    this.switches = trace.switches.map((s) => ({ ...s }));
    this.prefill = trace.prefill;
    this.activePolicy = trace.state.policy;
    this.selected = null;
    this.lastStop = null;
    // the setup becomes the trace's, so that going back to live mode reruns it with the model
    if (trace.promptText !== null) {
      this.prompt = trace.promptText;
      this.appliedPrompt = trace.promptText;
      this.promptTokens = trace.prompt.ids.length;
    }
    this.sampler = { ...trace.sampler };
    this.appliedSampler = JSON.stringify(this.sampler);
    this.policyMembers = choicesFromSpecOrNull(trace.policy) ?? this.policyMembers;
    this.policyError = null;
    if (this.layer >= trace.model.layers) this.layer = 0;
    if (this.head >= trace.model.heads) this.head = 0;
    this.ringVersion++;
  }

  /** Leaves a replay: reruns the setup (the trace's prompt, sampler and first policy) with the model, or loads it. */
  async leaveReplay(): Promise<void> {
    if (!this.replay || this.activity !== 'idle') return;
    if (this.status === 'ready') {
      // the replay is cleared once the worker has the new session; until then the trace stays on screen
      await this.startSession();
      return;
    }
    this.replay = null;
    this.clearViews();
    this.session = null;
    this.steps = [];
    this.switches = [];
    this.prefill = null;
    this.promptView = null;
    if (this.status === 'error' || this.status === 'idle') await this.load();
  }

  /** Test hook: makes the worker crash (end-to-end test of the crash path). */
  crashWorker(): void {
    this.client.send({ type: 'crash' } as CommandInput);
  }
}

function concatInt32(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function lastSwitchAt(switches: readonly SwitchRecord[], atStep: number): SwitchRecord | null {
  for (let i = switches.length - 1; i >= 0; i--) if (switches[i].atStep === atStep) return switches[i];
  return null;
}
