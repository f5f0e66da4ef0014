/**
 * The explorer's state (Svelte 5 runes): the model status, the setup (prompt, sampler, policy),
 * the decoded steps and the views of the selected step. It talks to the engine only through the
 * EngineClient (worker protocol); it never does model math.
 *
 * Memory stays bounded (DESIGN.md §5): every step keeps a compact record (token, top-k, memory),
 * full attention/cache-map views are kept for the last RING steps only; an older step's view is
 * recomputed exactly by the worker on demand (`inspect`).
 */
import { EngineClient, EngineFailure, type CommandInput } from '../worker/client.ts';
import type {
  CacheMapView,
  CalibrationView,
  EngineEvent,
  ErrorKind,
  LoadProgressView,
  ModelInfo,
  PolicyChoice,
  PolicyInfo,
  PromptView,
  ReferenceView,
  SamplerSettings,
  ScoreGrid,
  SessionState,
  StepView,
  StopReason,
} from '../worker/protocol.ts';
import type { ParamValue } from '../../../engine/policies/types.ts';
import type { HistoryRow } from '../charts/raster.ts';
import { EXAMPLES } from './examples.ts';
import { buildEvictionLog, forgottenMarks, prefillMoment, stepMoment, switchMoment, type EvictionSource, type ForgottenMarks } from './forgotten.ts';
import { mark } from '../perf.ts';

/** What the page keeps of every step (compact; `topK` is dropped: it equals the previous step's `next`). */
export type StepRecord = Omit<StepView, 'attention' | 'cacheMap' | 'topK' | 'scores'>;

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
}

/** The short name of a policy spec ("h2o:heavy=…" → "h2o"). */
export function policyName(spec: string): string {
  const colon = spec.indexOf(':');
  return colon < 0 ? spec : spec.slice(0, colon);
}

export type ModelStatus = 'idle' | 'loading' | 'ready' | 'error' | 'crashed';
export type Activity = 'idle' | 'prefilling' | 'stepping' | 'running' | 'rewinding' | 'switching' | 'exporting';

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

/** Parses a canonical spec string ("window:size=8") back into a choice, typed by the schema. */
export function choiceFromSpec(spec: string, policies: readonly PolicyInfo[]): PolicyChoice {
  const colon = spec.indexOf(':');
  const id = colon < 0 ? spec : spec.slice(0, colon);
  const info = policies.find((p) => p.id === id);
  const params: Record<string, ParamValue> = {};
  for (const p of info?.params ?? []) params[p.name] = p.default;
  if (colon >= 0) {
    for (const part of spec.slice(colon + 1).split(',')) {
      const [name, raw] = part.split('=');
      const schema = info?.params.find((p) => p.name === name);
      if (!schema || raw === undefined) continue;
      params[name] = schema.kind === 'int' || schema.kind === 'float' ? Number(raw) : schema.kind === 'bool' ? raw === 'true' : raw;
    }
  }
  return { id, params };
}

export function defaultChoice(info: PolicyInfo): PolicyChoice {
  return { id: info.id, params: Object.fromEntries(info.params.map((p) => [p.name, p.default])) };
}

/** Spec string of a choice in schema order (matches the engine's canonical form for valid params). */
export function specOf(choice: PolicyChoice, policies: readonly PolicyInfo[]): string {
  const info = policies.find((p) => p.id === choice.id);
  if (!info || info.params.length === 0) return choice.id;
  return `${choice.id}:${info.params.map((p) => `${p.name}=${String(choice.params[p.name] ?? p.default)}`).join(',')}`;
}

function record(view: StepView): StepRecord {
  const { attention: _a, cacheMap: _c, topK: _t, scores: _s, ...rest } = view;
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
  policies = $state.raw<PolicyInfo[]>([]);
  cacheInfo = $state.raw<{ hits: number; misses: number; removed: number; available: boolean } | null>(null);
  loadMs = $state(0);
  error = $state.raw<ShownError | null>(null);
  notice = $state<string | null>(null);

  // ---- setup ----
  prompt = $state(EXAMPLES[0].text);
  promptTokens = $state<number | null>(null);
  sampler = $state<SamplerSettings>({ ...DEFAULT_SAMPLER });
  policy = $state<PolicyChoice>({ id: 'full', params: {} });
  runSteps = $state(64);
  stopAtEos = $state(true);
  appliedPrompt = $state<string | null>(null);
  appliedSampler = $state<string | null>(null);

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
  prefill = $state.raw<{ scores: ScoreGrid | null; evictions: Int32Array; cacheMap: CacheMapView; policy: string } | null>(null);
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

  private ring = new Map<number, StepView>();
  private incoming: StepView[] = [];
  private flushScheduled = false;
  private firstTokenMarked = false;
  private tokenizeTimer: ReturnType<typeof setTimeout> | null = null;
  private tokenizeSeq = 0;

  constructor(
    readonly client: EngineClient,
    readonly urls: EngineUrls,
    readonly threads = 1,
  ) {
    client.onCrash = (message) => this.crashed(message);
  }

  // ---- derived ----

  readonly latestStep = $derived(this.steps.length - 1);
  readonly currentStep = $derived(this.selected !== null && this.selected <= this.latestStep ? this.selected : this.latestStep);
  readonly current = $derived(this.currentStep >= 0 ? this.steps[this.currentStep] : null);
  readonly busy = $derived(this.activity !== 'idle' || this.status !== 'ready');
  readonly running = $derived(this.activity === 'running');
  readonly canStep = $derived(this.status === 'ready' && this.activity === 'idle' && this.session !== null);
  readonly pieces = $derived.by(() => {
    const prompt = this.promptView?.pieces ?? [];
    return prompt.concat(this.steps.map((s) => s.token.piece));
  });
  readonly setupChanged = $derived(
    this.session !== null && (this.prompt !== this.appliedPrompt || JSON.stringify(this.sampler) !== this.appliedSampler),
  );
  readonly policyChanged = $derived(
    this.session !== null && this.activePolicy !== null && specOf(this.policy, this.policies) !== this.activePolicy,
  );
  readonly policyInfo = $derived(this.policies.find((p) => p.id === this.policy.id) ?? null);

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
  readonly cacheMap = $derived(
    this.showingLatest && this.sessionAtLatest ? this.session!.cacheMap : (this.view?.cacheMap ?? null),
  );
  readonly memory = $derived(this.showingLatest && this.sessionAtLatest ? this.session!.memory : (this.current?.memory ?? this.session?.memory ?? null));
  readonly next = $derived(this.showingLatest && this.sessionAtLatest ? this.session!.next : (this.current?.next ?? null));
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
  readonly kvHead = $derived(this.model ? Math.floor(this.head / (this.model.heads / this.model.kvHeads)) : 0);
  /** tokens of the shown step (the prompt after prefill) */
  readonly shownTokens = $derived(this.current ? this.current.tokenIndex + 1 : (this.promptView?.ids.length ?? 0));

  /** Which head lost which token up to the shown step (prefill, step decisions, switches). */
  readonly evictionLog = $derived.by(() => {
    const model = this.model;
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
    return forgottenMarks(log, head, this.shownTokens, (at) => policyName(lastSwitchAt(switches, at)?.to ?? ''));
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

  // ---- model ----

  async load(): Promise<void> {
    this.status = 'loading';
    this.error = null;
    this.progress = null;
    try {
      const ready = await this.client.loadModel(this.urls, this.threads, (progress) => (this.progress = progress));
      this.model = ready.model;
      this.policies = ready.policies;
      this.calibration = ready.calibration ?? null;
      this.cacheInfo = ready.cache;
      this.loadMs = ready.loadMs;
      const current = ready.policies.find((p) => p.id === this.policy.id) ?? ready.policies[0];
      if (current && Object.keys(this.policy.params).length === 0) this.policy = defaultChoice(current);
      this.status = 'ready';
      mark('kvscope:ready');
      this.requestTokenCount();
      await this.start();
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

  /** New worker, reload (from the file cache), rerun the prompt. */
  async restart(): Promise<void> {
    this.client.restart();
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
    this.ringVersion++;
  }

  /** (Re)starts decoding from the prompt with the current sampler and policy (Reset). */
  async start(): Promise<void> {
    if (this.status !== 'ready' || (this.activity !== 'idle' && this.activity !== 'prefilling')) return;
    this.activity = 'prefilling';
    this.notice = null;
    this.error = null;
    try {
      const started = await this.client.request<Extract<EngineEvent, { type: 'started' }>>({
        type: 'start',
        prompt: this.prompt,
        sampler: { ...this.sampler },
        policy: { id: this.policy.id, params: { ...this.policy.params } },
      });
      this.clearViews();
      this.promptView = started.prompt;
      this.session = started.state;
      this.steps = [];
      this.switches = [];
      this.prefill = { scores: started.scores ?? null, evictions: started.evictions ?? new Int32Array(0), cacheMap: started.state.cacheMap, policy: started.state.policy };
      this.reference = started.state.reference ?? false;
      this.selected = null;
      this.lastStop = null;
      this.activePolicy = started.state.policy;
      this.appliedPrompt = this.prompt;
      this.appliedSampler = JSON.stringify(this.sampler);
      this.promptTokens = started.prompt.ids.length;
    } catch (error) {
      this.fail(error);
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
    if (!this.canStep) return;
    this.activity = 'stepping';
    this.notice = null;
    try {
      const done = await this.client.request<Extract<EngineEvent, { type: 'done' }>>({ type: 'step' }, (e) => {
        if (e.type === 'step') this.receiveStep(e.view);
      });
      this.onDone(done);
    } catch (error) {
      this.fail(error);
    } finally {
      this.activity = 'idle';
    }
  }

  async run(): Promise<void> {
    if (!this.canStep) return;
    this.activity = 'running';
    this.notice = null;
    this.selected = null;
    const steps = Math.max(1, Math.floor(this.runSteps) || 1);
    try {
      const done = await this.client.request<Extract<EngineEvent, { type: 'done' }>>({ type: 'run', steps, stopAtEos: this.stopAtEos }, (e) => {
        if (e.type === 'step') this.receiveStep(e.view);
      });
      this.onDone(done);
    } catch (error) {
      this.fail(error);
    } finally {
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
    if (!this.canStep || this.steps.length === 0) return;
    this.activity = 'rewinding';
    this.notice = null;
    try {
      const rewound = await this.client.request<Extract<EngineEvent, { type: 'rewound' }>>({ type: 'back', steps: n });
      const keep = rewound.state.stepCount;
      this.steps = this.steps.slice(0, keep);
      this.switches = this.switches.filter((s) => s.atStep <= keep);
      for (const step of [...this.ring.keys()]) if (step >= keep) this.ring.delete(step);
      if (this.inspected && this.inspected.step >= keep) this.inspected = null;
      this.ringVersion++;
      this.session = rewound.state;
      this.selected = null;
      this.lastStop = null;
      if (rewound.state.policy !== this.activePolicy) {
        this.activePolicy = rewound.state.policy;
        this.policy = choiceFromSpec(rewound.state.policy, this.policies);
      }
    } catch (error) {
      this.fail(error);
    } finally {
      this.activity = 'idle';
    }
  }

  /** Switches the policy live (the engine hands the current cache to the new policy). */
  async applyPolicy(): Promise<void> {
    if (!this.canStep) return;
    this.activity = 'switching';
    try {
      const event = await this.client.request<Extract<EngineEvent, { type: 'policy' }>>({
        type: 'set-policy',
        policy: { id: this.policy.id, params: { ...this.policy.params } },
      });
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
      };
      this.switches = this.switches.filter((s) => s.atStep !== atStep).concat(record);
      this.notice = `Policy switched to ${event.to} after step ${event.state.stepCount}${event.note ? `: ${event.note}` : ''}.`;
      this.selected = null;
    } catch (error) {
      this.fail(error);
    } finally {
      this.activity = 'idle';
    }
  }

  choosePolicy(id: string): void {
    const info = this.policies.find((p) => p.id === id);
    if (info) this.policy = defaultChoice(info);
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
    this.selected = step === null || step >= this.latestStep ? null : Math.max(0, step);
  }

  /** Asks the worker for the full view of the current step when no copy is held. */
  ensureView(): void {
    const step = this.currentStep;
    if (step < 0 || this.view || this.activity === 'running' || this.inspecting === step || this.status !== 'ready') return;
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
    if (!this.canStep) return null;
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
