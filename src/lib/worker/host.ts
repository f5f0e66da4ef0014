/**
 * The engine side of the worker protocol: owns the loaded model, one Session, its snapshots and
 * the run loop, and answers Commands with EngineEvents (protocol.ts). Framework-free and
 * DOM-free so that it runs in the Web Worker (engine.worker.ts) and in Node tests alike.
 *
 * Views are packed from the session's trace alone (pack.ts): what the cache holds is rebuilt from
 * the trace's decisions (engine/trace/replay.ts), never read from the live store, so an imported
 * trace (`import-trace`, a read-only replay without the model) is packed by the same code.
 */
import { yieldToEventLoop } from './yield.ts';
import { DraftSpecError, ModelError, PolicySpecError, SessionError } from '../../../engine/errors.ts';
import type { LoadOptions, LoadedModel, ModelSource } from '../../../engine/model/load.ts';
import { modelSha256 } from '../../../engine/model/manifest.ts';
import { logSumExp, topK } from '../../../engine/metrics/softmax.ts';
import { POLICIES } from '../../../engine/policies/index.ts';
import { formatPolicyChain } from '../../../engine/policies/spec.ts';
import { Session, type SessionSnapshot } from '../../../engine/session.ts';
import { ReferenceLane, type ReferenceMetrics, type ReferenceSnapshot } from '../../../engine/reference.ts';
import { readTrace, TraceFormatError } from '../../../engine/trace/read.ts';
import type { HeldMerges } from '../../../engine/trace/replay.ts';
import { ReplayTimeline } from '../../../engine/trace/replay-timeline.ts';
import { exportTraceJson, traceToJson, type ReferenceTrace, type StepTrace, type TokenProb, type TraceEvent, type TraceExtras } from '../../../engine/trace/schema.ts';
import { Checkpoints } from './checkpoints.ts';
import { HostError } from './host-error.ts';
import { loadModelFiles, postProgress } from './host-load.ts';
import { LabError, LabHost } from './lab.ts';
import { LAB_COMMANDS, type LabCommand } from './lab-protocol.ts';
import type { CacheLike } from './model-cache.ts';
import {
  calibrationView,
  importedTransferables,
  packCacheMap,
  packEvictions,
  packSessionState,
  packStep,
  prefillScores,
  referenceStepTrace,
  stepEventIndex,
  TraceViews,
} from './pack.ts';
import { mergeViewAt } from './pack-merges.ts';
import { quantViewAt } from './pack-quant.ts';
import { quantTransferables, type QuantView } from './quant-protocol.ts';
import { packSpecView } from './pack-spec.ts';
import { drafterInfo, PLAIN_REPLAYS, SpeculativeHost } from './spec-host.ts';
import type { SpecView } from './spec-protocol.ts';
import { BrowserDrafterEnvs, indexesUrlOf } from './drafter-env.ts';
import type { RoundResult } from '../../../engine/spec/decoder.ts';
import {
  viewTransferables,
  type Command,
  type EngineEvent,
  type ErrorKind,
  type LoadCommand,
  type MergeView,
  policyMembers,
  type ModelInfo,
  type PolicyComposition,
  type PolicyInfo,
  type SamplerSettings,
  type SessionState,
  type StepView,
  type StopReason,
} from './protocol.ts';

export interface HostDeps {
  loadModel(source: ModelSource, options: LoadOptions): Promise<LoadedModel>;
  fetch: typeof fetch;
  /** Cache API (null: no caching) */
  caches: { open(name: string): Promise<CacheLike> } | null;
  /** points onnxruntime-web at the app's wasm files; throws when WebAssembly cannot run here */
  configureRuntime?(command: LoadCommand): void;
  /** checks the wasm runtime can be fetched before any model byte is downloaded */
  checkRuntime?(command: LoadCommand): Promise<void>;
  /** the sequence of steps the trace keeps in full (default 64) */
  fullSteps?: number;
  /**
   * the files of a model the user uploaded (LoadCommand.modelSource; src/lib/models/source.ts);
   * absent where there is no such storage (loading one is then refused)
   */
  uploadedSource?(key: string): Promise<ModelSource & { readonly files: readonly { path: string; bytes: number; sha256: string }[] }>;
}

export type Post = (event: EngineEvent, transfer?: Transferable[]) => void;

const TOP_TOKENS = 10;

/** Commands that change or extend the live session: refused while an imported trace is replayed. */
const NEEDS_LIVE_SESSION = new Set<Command['type']>(['step', 'run', 'back', 'set-policy', 'reference', 'set-drafter']);

export function classifyError(error: unknown): { kind: ErrorKind; message: string } {
  if (error instanceof HostError) return { kind: error.kind, message: error.message };
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof ModelError) {
    const wasm = /onnxruntime cannot load the graph/.test(message) && /wasm|WebAssembly|backend/i.test(message);
    return { kind: wasm ? 'wasm' : 'model', message };
  }
  if (error instanceof PolicySpecError) return { kind: 'policy', message };
  if (error instanceof DraftSpecError) return { kind: 'drafter', message };
  // a policy that needs data this model lacks (engine/calibration: CalibrationError)
  if (error instanceof Error && error.name === 'CalibrationError') return { kind: 'policy', message };
  if (error instanceof SessionError) return { kind: 'session', message };
  if (error instanceof RangeError) return { kind: 'session', message };
  return { kind: 'internal', message };
}

function policyInfo(): PolicyInfo[] {
  return POLICIES.map((p) => ({
    id: p.id,
    label: p.label,
    description: p.description,
    paper: { ...p.paper },
    params: p.params.map((s) => ({ ...s })),
    needs: { ...p.needs },
  }));
}


export class EngineHost {
  private model: LoadedModel | null = null;
  private info: ModelInfo | null = null;
  private session: Session | null = null;
  private checkpoints = new Checkpoints<SessionSnapshot>();
  private queue: Promise<unknown> = Promise.resolve();
  private abort: AbortController | null = null;
  private viewsOn = true;
  /** the full-cache reference lane (engine/reference.ts), when turned on */
  private lane: ReferenceLane | null = null;
  private referenceOn = false;
  /** lane snapshots by decode step, kept for the steps the checkpoints keep */
  private laneSnapshots = new Map<number, ReferenceSnapshot>();
  /** the lane's metrics by decode step (for views and the exported trace's header) */
  private referenceMetrics = new Map<number, ReferenceMetrics>();
  /** what the heads hold, rebuilt from the session's trace (the views' only source for the cache) */
  private timeline: ReplayTimeline | null = null;
  /** the prompt text of the session (the exported header carries it) */
  private promptText: string | null = null;
  /** an imported trace being replayed read-only (until the next start) */
  private replay: { views: TraceViews; fileName: string } | null = null;
  /** the drafter in charge of the session, its decoder and the last measured speed-up (spec-host.ts) */
  private speculative = this.speculativeHost();
  /** the load command of the model in use: draft models load from the same index, cache and runtime */
  private loadCommand: LoadCommand | null = null;
  /** draft models (loaded once per target model) and token index files for the drafters (drafter-env.ts) */
  private drafterEnvs: BrowserDrafterEnvs | null = null;

  constructor(
    private readonly post: Post,
    private readonly deps: HostDeps,
  ) {}

  /** Entry point for every command. `pause`, `views`, `tokenize` and `crash` bypass the queue. */
  handle(command: Command): void {
    switch (command.type) {
      case 'pause':
        this.abort?.abort();
        this.lab_?.pause();
        this.post({ type: 'ack', id: command.id });
        return;
      case 'views':
        this.viewsOn = command.attention;
        this.post({ type: 'ack', id: command.id });
        return;
      case 'tokenize':
        this.guard(command.id, async () => this.tokenize(command.id, command.text));
        return;
      // Packed from the trace alone and cheap: answered at once, also between the steps of a run.
      case 'merges':
        this.guard(command.id, async () => this.merges(command.id, command.step, command.layer, command.kvHead));
        return;
      case 'quant':
        this.guard(command.id, async () => this.quant(command.id, command.step, command.layer, command.kvHead));
        return;
      case 'spec':
        this.guard(command.id, async () => this.specView(command.id));
        return;
      // A replay needs no model: it must not wait behind a model that is still downloading.
      case 'import-trace':
        this.guard(command.id, async () => this.importTrace(command.id, command.json, command.fileName));
        return;
      case 'inspect':
      case 'export-trace':
        if (this.replay) {
          const replay = this.replay;
          this.guard(command.id, async () => (command.type === 'inspect' ? this.inspectReplay(command.id, replay.views, command.step) : this.exportReplay(command.id, replay)));
          return;
        }
        this.queue = this.queue.then(() => this.guard(command.id, () => this.run(command)));
        return;
      case 'crash':
        setTimeout(() => {
          throw new Error('engine worker crashed on request (test hook)');
        });
        return;
      default:
        this.queue = this.queue.then(() => this.guard(command.id, () => this.run(command)));
    }
  }

  private async guard(id: number, work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (error) {
      const { kind, message } = classifyError(error);
      this.post({ type: 'error', id, kind, message });
    }
  }

  private async run(command: Command): Promise<void> {
    if (LAB_COMMANDS.has(command.type)) return this.runLab(command as LabCommand);
    if (this.replay && NEEDS_LIVE_SESSION.has(command.type)) {
      throw new HostError(
        'session',
        `This is a read-only replay of ${this.replay.fileName}: stepping on, running, switching the policy and the reference lane need the model. Go back to live mode to decode.`,
      );
    }
    switch (command.type) {
      case 'load':
        return this.load(command);
      case 'start':
        return this.start(command.id, command.prompt, command.sampler, command.policy);
      case 'step':
        return this.decode(command.id, 1, false);
      case 'run':
        return this.decode(command.id, command.steps, command.stopAtEos, command.stopAfter);
      case 'back':
        return this.back(command.id, command.steps);
      case 'set-policy':
        return this.setPolicy(command.id, command.policy);
      case 'inspect':
        return this.inspect(command.id, command.step);
      case 'export-trace':
        return this.exportTrace(command.id);
      case 'reference':
        return this.setReference(command.id, command.on);
      case 'set-drafter':
        return this.setDrafter(command.id, command.drafter);
      default:
        throw new HostError('internal', `unknown command ${(command as { type: string }).type}`);
    }
  }

  // ---- /compare and /bench (lab.ts) ----------------------------------------------------------

  private lab_: LabHost | null = null;

  private async runLab(command: LabCommand): Promise<void> {
    if (!this.lab_) {
      this.lab_ = new LabHost(this.post, this.deps.fetch);
      this.lab_.useModelSource(this.loadCommand?.modelSource ?? null);
    }
    try {
      await this.lab_.run(command, this.requireModel());
    } catch (error) {
      if (error instanceof LabError) throw new HostError(error.kind, error.message);
      throw error;
    }
  }

  // ---- loading (the files: host-load.ts) -----------------------------------------------------

  /** A drafter host whose decoders capture rows for the reference lane while one exists. */
  private speculativeHost(): SpeculativeHost {
    return new SpeculativeHost(() => this.lane !== null);
  }

  private async load(command: LoadCommand): Promise<void> {
    const started = performance.now();
    await this.model?.release().catch(() => undefined);
    this.drafterEnvs?.release();
    this.drafterEnvs = null;
    this.speculative = this.speculativeHost();
    this.model = null;
    this.session = null;
    this.info = null;
    this.checkpoints.clear();
    this.lane = null;
    this.laneSnapshots.clear();
    this.loadCommand = null;

    postProgress(this.post, command.id, { phase: 'runtime', file: 'ort-wasm-simd-threaded.wasm' });
    if (typeof WebAssembly !== 'object') {
      throw new HostError('wasm', 'This browser cannot run WebAssembly, which the in-browser model needs. Use a current Chrome, Edge, Firefox or Safari.');
    }
    this.deps.configureRuntime?.(command);
    await this.deps.checkRuntime?.(command);

    const { model, stats } = await loadModelFiles(command, this.deps, this.post);
    this.loadCommand = command;
    this.lab_?.useModelSource(command.modelSource ?? null);
    this.drafterEnvs = new BrowserDrafterEnvs(this.deps.fetch, {
      loadModel: (source, options) => this.deps.loadModel(source, options),
      caches: command.cache !== false ? this.deps.caches : null,
      numThreads: command.threads,
    });

    const m = model.manifest;
    this.model = model;
    this.info = {
      id: m.id,
      name: m.name,
      layers: m.architecture.n_layers,
      heads: m.architecture.n_heads,
      kvHeads: m.architecture.n_kv_heads,
      headDim: m.architecture.head_dim,
      context: m.architecture.context_length,
      vocab: m.architecture.vocab_size,
      parameters: m.architecture.parameters ?? null,
      bosId: m.tokenizer.bos_id,
      eosId: m.tokenizer.eos_id,
      bytes: m.files.reduce((sum, f) => sum + f.bytes, 0),
      sha256: await modelSha256(m),
      calibration: Boolean(model.calibration),
      ...(model.calibrationError ? { calibrationError: model.calibrationError } : {}),
      ...(command.modelSource ? { uploaded: true as const } : {}),
    };
    this.post({
      type: 'ready',
      id: command.id,
      model: this.info,
      policies: policyInfo(),
      drafters: drafterInfo(),
      cache: stats,
      threads: command.threads,
      loadMs: performance.now() - started,
      calibration: calibrationView(model.calibration),
    });
  }

  private requireModel(): LoadedModel {
    if (!this.model) throw new HostError('session', 'the model is not loaded yet');
    return this.model;
  }

  private requireSession(): Session {
    if (!this.session) throw new HostError('session', 'no prompt has been run yet: press Reset to start');
    return this.session;
  }

  // ---- prompt ---------------------------------------------------------------------------------

  private async tokenize(id: number, text: string): Promise<void> {
    const model = this.requireModel();
    const count = model.tokenizer.encode(text).length;
    this.post({ type: 'tokenized', id, count, context: model.manifest.architecture.context_length });
  }

  /** The canonical spec of a policy or composition (the engine checks every member's parameters). */
  private policySpec(policy: PolicyComposition): string {
    return formatPolicyChain(policyMembers(policy));
  }

  private async start(id: number, prompt: string, sampler: SamplerSettings, policy: PolicyComposition): Promise<void> {
    const model = this.requireModel();
    const context = model.manifest.architecture.context_length;
    const ids = model.tokenizer.encode(prompt);
    if (ids.length > context) {
      throw new HostError(
        'prompt',
        `The prompt is ${ids.length} tokens long but the model's context holds ${context}. Shorten it by at least ${ids.length - context} tokens.`,
      );
    }
    const spec = this.policySpec(policy);
    const session = new Session(model, {
      policy: spec,
      sampler: { temperature: sampler.temperature, topK: sampler.topK, topP: sampler.topP, seed: sampler.seed },
      trace: { fullSteps: this.deps.fullSteps ?? 64, topTokens: TOP_TOKENS, attentionTop: 8, attention: true },
      // the quantization error view scores the current query against the exact and the stored keys
      keepQueries: true,
    });
    const t0 = performance.now();
    const result = await session.prefill(ids);
    this.session = session;
    this.replay = null;
    this.promptText = prompt;
    this.timeline = new ReplayTimeline({ layers: session.dims.nLayers, kvHeads: session.dims.nKvHeads });
    this.referenceMetrics.clear();
    this.checkpoints.clear();
    this.checkpoints.add(0, session.snapshot(), true);
    await this.speculative.attach(session);
    this.lane = null;
    this.laneSnapshots.clear();
    if (this.referenceOn) await this.startLane(session);
    const state = this.state(session);
    const scores = prefillScores(result.trace);
    const evictions = packEvictions(result.trace.decision);
    this.post(
      { type: 'started', id, prompt: { ids: [...ids], pieces: result.trace.pieces }, state, prefillMs: performance.now() - t0, scores, evictions },
      [...viewTransferables(state), ...(scores ? [scores.values.buffer as ArrayBuffer] : [])],
    );
  }

  // ---- decoding -------------------------------------------------------------------------------

  private next(session: Session): TokenProb[] {
    const logits = session.nextTokenLogits;
    if (!logits) return [];
    const lse = logSumExp(logits);
    return topK(logits, TOP_TOKENS).map(({ index, value }) => ({ id: index, piece: session.piece(index), prob: Math.exp(value - lse) }));
  }

  /** What the heads hold after the first `count` events of the session's trace (default all), by replay. */
  private held(session: Session, count?: number): HeldMerges {
    this.timeline ??= new ReplayTimeline({ layers: session.dims.nLayers, kvHeads: session.dims.nKvHeads });
    return this.timeline.at(session.trace.all(), count);
  }

  /** The session after its newest trace event (packed from the trace; next-token distribution and protected heads from the session). */
  private state(session: Session): SessionState {
    const events = session.trace.all();
    return packSessionState(events, this.held(session), session.trace.header.policy, {
      next: this.next(session),
      protects: session.policy.protects ?? null,
      reference: this.lane !== null,
      ...(this.lane?.stopped ? { referenceStopped: this.lane.stopped } : {}),
    });
  }

  /**
   * Packs `trace`, a step of the live `session` (or the same step recomputed by a fork, with its
   * full attention, when the live trace compacted it). The cache map comes from replaying the live
   * trace up to that step; `next` defaults to the session's pending distribution.
   */
  private view(session: Session, trace: StepTrace, withViews: boolean, reference: ReferenceMetrics | null = null, next: TokenProb[] = this.next(session)): StepView {
    let held: HeldMerges | null = null;
    if (withViews) {
      const index = stepEventIndex(session.trace.all(), trace.step);
      if (index < 0) throw new HostError('internal', `the trace has no step ${trace.step}`);
      held = this.held(session, index + 1);
    }
    return packStep(trace, { heads: session.dims.nHeads, next, attention: withViews, held, reference: reference ?? this.referenceMetrics.get(trace.step) ?? null });
  }

  private remember(session: Session): void {
    if (this.checkpoints.wants(session.stepCount)) this.checkpoints.add(session.stepCount, session.snapshot());
    this.rememberLane(session);
  }

  // ---- reference lane -------------------------------------------------------------------------

  /** Builds the full-cache lane at the session's current point. */
  private async startLane(session: Session): Promise<void> {
    this.lane = await ReferenceLane.follow(this.requireModel(), session);
    this.laneSnapshots.clear();
    this.laneSnapshots.set(session.stepCount, this.lane.snapshot());
  }

  /** Keeps a lane snapshot wherever the checkpoints hold one (and forgets those they dropped). */
  private rememberLane(session: Session): void {
    // while the session replays on its own the lane lags behind: nothing to keep until it catches up
    if (!this.lane || this.lane.tokens.length !== session.tokens.length) return;
    const step = session.stepCount;
    const kept = new Set(this.checkpoints.steps());
    if (kept.has(step)) this.laneSnapshots.set(step, this.lane.snapshot());
    for (const s of [...this.laneSnapshots.keys()]) if (!kept.has(s) && s !== step) this.laneSnapshots.delete(s);
  }

  /** After the session moved on its own (stepping back + replay): the lane catches up from its nearest snapshot. */
  private async syncLane(session: Session): Promise<void> {
    if (!this.lane) return;
    for (const s of [...this.laneSnapshots.keys()]) if (s > session.stepCount) this.laneSnapshots.delete(s);
    const best = Math.max(-1, ...this.laneSnapshots.keys());
    try {
      if (best < 0) throw new Error('no lane snapshot');
      this.lane.restore(this.laneSnapshots.get(best)!);
      await this.lane.catchUp(session);
    } catch {
      await this.startLane(session);
    }
    this.rememberLane(session);
  }

  /**
   * The reference lane after a speculative round: teacher-forced on each step the round fed, in
   * order, compared with the row's logits and cache captured as the round committed it (spec-host.ts),
   * so each step gets the metrics a plain step would have. Without a capture for every step (the
   * lane was turned on mid-round), the lane only catches up.
   */
  private async observeRound(session: Session, round: RoundResult): Promise<void> {
    const rows = this.speculative.takeRows();
    const lane = this.lane;
    if (!lane) return;
    if (rows.length !== round.steps.length || lane.tokens.length !== round.steps[0]?.tokenIndex) {
      await lane.catchUp(session);
      return;
    }
    for (let i = 0; i < rows.length; i++) {
      const trace = round.steps[i];
      const metrics = await lane.observeCaptured(trace, rows[i].logits, rows[i].held);
      if (metrics) this.referenceMetrics.set(trace.step, metrics);
    }
  }

  private async observeLane(session: Session, trace: StepTrace): Promise<ReferenceMetrics | null> {
    if (!this.lane) return null;
    const metrics = await this.lane.observe(session, trace);
    if (metrics) this.referenceMetrics.set(trace.step, metrics);
    return metrics;
  }

  private async setReference(id: number, on: boolean): Promise<void> {
    this.referenceOn = on;
    if (!on) {
      this.lane = null;
      this.laneSnapshots.clear();
    } else if (this.session && !this.lane) {
      await this.startLane(this.session);
    }
    const state = this.session ? this.state(this.session) : null;
    if (!state) {
      this.post({ type: 'ack', id });
      return;
    }
    this.post({ type: 'reference', id, on, state }, viewTransferables(state));
  }

  private async decode(id: number, steps: number, stopAtEos: boolean, stopAfter?: number): Promise<void> {
    const session = this.requireSession();
    if (this.speculative.decoder) return this.decodeSpeculative(id, steps, stopAtEos, stopAfter);
    const context = session.dims.contextLength;
    this.abort = new AbortController();
    let reason: StopReason;
    let message: string | undefined;
    let count = 0;
    try {
      if (session.position >= context) {
        reason = 'context-full';
        message = `the context is full (${context} positions): step back, reset, or pick a policy that evicts`;
      } else {
        const result = await session.run(steps, {
          signal: this.abort.signal,
          stopAtEos,
          onStep: async (trace) => {
            count++;
            const reference = await this.observeLane(session, trace);
            this.remember(session);
            const view = this.view(session, trace, this.viewsOn, reference);
            this.post({ type: 'step', id, view }, viewTransferables(view));
            if (steps > 1) await yieldToEventLoop();
          },
        });
        reason = result.stopReason === 'aborted' ? 'paused' : result.stopReason;
        message = result.stopReason === 'aborted' ? undefined : result.message;
        if (reason === 'context-full') message = `the context is full (${context} positions): step back, reset, or pick a policy that evicts`;
      }
    } finally {
      this.abort = null;
    }
    const state = this.state(session);
    this.post({ type: 'done', id, reason, message, steps: count, state }, viewTransferables(state));
  }

  /**
   * Speculative decoding (a drafter is set): `step` is one verification round, `run` rounds until
   * `steps` tokens; every committed step is posted as in plain decoding (a round may post several).
   * After a Run of 2 tokens or more, plain decoding of the same tokens is timed (spec-host.ts),
   * `spec-measuring` posted meanwhile; the last Run's speed-up is dropped when a Run starts. With the
   * reference lane on, every step of a round is compared: from the rows captured as the round
   * committed them (as /compare does, engine/lanes.ts).
   */
  private async decodeSpeculative(id: number, steps: number, stopAtEos: boolean, stopAfter?: number): Promise<void> {
    const session = this.requireSession();
    const decoder = this.speculative.decoder!;
    const context = session.dims.contextLength;
    const abort = new AbortController();
    this.abort = abort;
    let reason: StopReason;
    let message: string | undefined;
    let count = 0;
    const contextFull = `the context is full (${context} positions): step back, reset, or pick a policy that evicts`;
    try {
      if (session.position >= context) {
        reason = 'context-full';
        message = contextFull;
      } else {
        if (steps > 1) this.speculative.clearSpeedup();
        const start = steps > 1 ? session.snapshot() : null;
        let engineMs = 0;
        let t0 = performance.now();
        const onRound = async (round: RoundResult) => {
          engineMs += performance.now() - t0;
          await this.observeRound(session, round);
          this.remember(session);
          for (const trace of round.steps) {
            count++;
            const view = this.view(session, trace, this.viewsOn);
            this.post({ type: 'step', id, view }, viewTransferables(view));
          }
          if (stopAfter !== undefined && count >= stopAfter) abort.abort();
          if (steps > 1) await yieldToEventLoop();
          t0 = performance.now();
        };
        if (steps <= 1) {
          const round = await decoder.round(Infinity, stopAtEos);
          engineMs += performance.now() - t0;
          await onRound(round);
          // like a plain Step: a round that fed the EOS token ended the text
          const eos = session.model.manifest.tokenizer.eos_id;
          reason = stopAtEos && (round.verify.end === 'eos' || round.steps.some((s) => s.token.id === eos)) ? 'eos' : 'length';
          if (reason === 'eos') message = 'the model produced the end-of-sequence token';
        } else {
          const result = await decoder.run(steps, { signal: abort.signal, stopAtEos, onRound });
          engineMs += performance.now() - t0;
          reason = result.stopReason === 'aborted' ? 'paused' : result.stopReason;
          message = result.stopReason === 'aborted' ? undefined : result.message;
          if (reason === 'context-full') message = contextFull;
          if (start && reason !== 'paused' && result.steps.length >= 2) {
            const onProgress = async (done: number, total: number) => {
              this.post({ type: 'spec-measuring', id, done, total });
              // a Pause can land between the replayed steps
              await yieldToEventLoop();
            };
            await onProgress(0, result.steps.length * PLAIN_REPLAYS);
            await this.speculative.measure(session, start, result.steps, engineMs, abort.signal, onProgress);
          }
        }
      }
    } finally {
      this.abort = null;
    }
    const state = this.state(session);
    this.post({ type: 'done', id, reason, message, steps: count, state }, viewTransferables(state));
  }

  /** Restores the nearest snapshot at or before `target` steps and replays up to it. */
  private async rewindTo(session: Session, target: number): Promise<void> {
    const checkpoint = this.checkpoints.before(target);
    if (!checkpoint) throw new HostError('internal', `no snapshot at or before step ${target}`);
    const recorded = recordedSteps(session.trace.all(), checkpoint.step, target);
    session.restore(checkpoint.snapshot);
    this.checkpoints.dropAfter(target);
    while (session.stepCount < target) {
      await replayStep(session, recorded.get(session.stepCount));
      this.remember(session);
    }
  }

  private async back(id: number, steps: number): Promise<void> {
    const session = this.requireSession();
    const target = Math.max(0, session.stepCount - Math.max(0, Math.floor(steps)));
    if (target !== session.stepCount) {
      await this.rewindTo(session, target);
      await this.syncLane(session);
      for (const step of [...this.referenceMetrics.keys()]) if (step >= target) this.referenceMetrics.delete(step);
      this.speculative.rewound(target);
    }
    const state = this.state(session);
    this.post({ type: 'rewound', id, state }, viewTransferables(state));
  }

  private async setPolicy(id: number, policy: PolicyComposition): Promise<void> {
    const session = this.requireSession();
    const spec = this.policySpec(policy);
    const before = packCacheMap(this.held(session), null);
    const event = session.setPolicy(spec);
    // a switch is a point a replay must not cross: pin a snapshot right after it
    this.checkpoints.add(session.stepCount, session.snapshot(), true);
    this.rememberLane(session);
    const state = this.state(session);
    this.post(
      {
        type: 'policy',
        id,
        from: event.from,
        to: event.to,
        note: event.decision.note,
        state,
        atStep: event.atStep,
        before,
        evictions: packEvictions(event.decision),
        ...(event.withoutHistory ? { withoutHistory: event.withoutHistory } : {}),
      },
      [...viewTransferables(state), before.codes.buffer as ArrayBuffer],
    );
  }

  /** Full view of any earlier step: from the trace for the latest step, else an exact replay from a snapshot. */
  private async inspect(id: number, step: number): Promise<void> {
    const session = this.requireSession();
    if (!Number.isInteger(step) || step < 0 || step >= session.stepCount) {
      throw new HostError('session', `step ${step} does not exist (${session.stepCount} steps so far)`);
    }
    const events = session.trace.all();
    const recordedIndex = stepEventIndex(events, step);
    const recorded = recordedIndex >= 0 ? (events[recordedIndex] as StepTrace) : undefined;
    if (step === session.stepCount - 1 && recorded?.attention) {
      const view = this.view(session, recorded, true);
      this.post({ type: 'inspected', id, view }, viewTransferables(view));
      return;
    }
    const checkpoint = this.checkpoints.before(step);
    if (!checkpoint) throw new HostError('internal', `no snapshot at or before step ${step}`);
    const replay = session.fork();
    const steps = recordedSteps(events, checkpoint.step, step + 1);
    replay.restore(checkpoint.snapshot);
    let trace: StepTrace | null = null;
    while (replay.stepCount <= step) trace = await replayStep(replay, steps.get(replay.stepCount));
    if (!trace) throw new HostError('internal', `replay produced no step ${step}`);
    if (recorded && recorded.token.id !== trace.token.id) {
      throw new HostError('internal', `replay of step ${step} diverged (token ${trace.token.id}, recorded ${recorded.token.id})`);
    }
    // the cache map and the reference metrics come from the live trace; the next-token distribution from the fork
    const view = this.view(session, trace, true, null, this.next(replay));
    this.post({ type: 'inspected', id, view }, viewTransferables(view));
  }

  /** The merge view of one head after step `step` (−1: after the prompt), of the imported trace during a replay. */
  private async merges(id: number, step: number, layer: number, kvHead: number): Promise<void> {
    let view: MergeView;
    if (this.replay) view = this.replay.views.merges(step, layer, kvHead);
    else {
      const session = this.requireSession();
      view = mergeViewAt(session.trace.all(), (count) => this.held(session, count), step, layer, kvHead);
    }
    this.post({ type: 'merges', id, view });
  }

  /**
   * The quantization error view of one head after step `step`: at the live session's newest step
   * measured against the store's exact K/V, else (older steps, an imported trace) from the trace.
   */
  private async quant(id: number, step: number, layer: number, kvHead: number): Promise<void> {
    let view: QuantView;
    if (this.replay) view = this.replay.views.quant(step, layer, kvHead);
    else {
      const session = this.requireSession();
      // answered outside the queue: a step may be half done (its forward awaited, the cache appended
      // to, the trace not yet written); the store matches the trace again once its transaction closes
      while (session.cache.inTransaction) await yieldToEventLoop();
      const live = { cache: session.cache, queries: session.lastQueries(), groupSize: session.dims.groupSize };
      view = quantViewAt(session.trace.all(), (count) => this.held(session, count), step, layer, kvHead, live);
    }
    this.post({ type: 'quant', id, view }, quantTransferables(view));
  }

  /** Sets the session's drafter (`''` / `none`: plain decoding); a bad spec or a draft model that fails changes nothing. */
  private async setDrafter(id: number, text: string): Promise<void> {
    const target = this.requireModel();
    const modelsUrl = this.loadCommand?.modelsUrl;
    // a draft model's download is posted under this command
    const env = this.drafterEnvs!.env(target, modelsUrl, modelsUrl ? indexesUrlOf(modelsUrl) : undefined, (progress) => this.post({ type: 'progress', id, progress }));
    const drafter = await this.speculative.set(text, env, this.session);
    this.post({ type: 'drafter', id, drafter });
  }

  /** The speculative-decoding view: the live session's rounds and statistics, or the imported trace's. */
  private async specView(id: number): Promise<void> {
    let view: SpecView;
    if (this.replay) view = packSpecView(this.replay.views.trace.events, { source: 'trace', drafter: null, since: 0 });
    else view = this.speculative.view(this.requireSession().trace.all());
    this.post({ type: 'spec', id, view });
  }

  private async exportTrace(id: number): Promise<void> {
    const session = this.requireSession();
    const metrics = [...this.referenceMetrics.values()].sort((a, b) => a.step - b.step);
    const reference: ReferenceTrace | null =
      metrics.length > 0 ? { steps: metrics.map(referenceStepTrace), ...(this.lane?.stopped ? { stopped: this.lane.stopped } : {}) } : null;
    const extras: TraceExtras = { prompt: this.promptText, reference, next: this.next(session), protects: session.policy.protects ?? null };
    const json = exportTraceJson(session.trace, undefined, extras);
    const safe = (s: string) => s.replace(/[^A-Za-z0-9_.-]+/g, '_');
    const fileName = `kvscope-trace-${safe(session.model.manifest.id)}-${safe(session.policySpec)}-${session.stepCount}steps.json`;
    this.post({ type: 'trace', id, json, fileName });
  }

  // ---- read-only replay of an imported trace ---------------------------------------------------

  /** Reads a trace file; on success the host replays it (inspect, export) until the next start. A bad file changes nothing. */
  private async importTrace(id: number, json: string, fileName: string): Promise<void> {
    let views: TraceViews;
    try {
      views = new TraceViews(readTrace(json));
    } catch (error) {
      if (error instanceof TraceFormatError) throw new HostError('trace', `${fileName}: ${error.message}`);
      throw error;
    }
    const trace = views.imported(fileName);
    this.replay = { views, fileName };
    this.post({ type: 'imported', id, trace }, importedTransferables(trace));
  }

  private async inspectReplay(id: number, views: TraceViews, step: number): Promise<void> {
    if (!Number.isInteger(step) || step < 0 || step >= views.steps) {
      throw new HostError('session', `step ${step} is not in the trace (${views.steps} steps)`);
    }
    const view = views.step(step);
    this.post({ type: 'inspected', id, view }, viewTransferables(view));
  }

  /** The imported trace, written again (what was read, in the current JSON form). */
  private async exportReplay(id: number, replay: { views: TraceViews; fileName: string }): Promise<void> {
    const { header, events } = replay.views.trace;
    const { prompt, reference, next, protects } = header;
    const json = JSON.stringify(traceToJson(header, events, { prompt, reference, next, protects }));
    this.post({ type: 'trace', id, json, fileName: replay.fileName });
  }
}

/** The recorded steps (from, to] of a trace by decode step, to replay them as they were. */
function recordedSteps(events: readonly TraceEvent[], from: number, to: number): Map<number, StepTrace> {
  const out = new Map<number, StepTrace>();
  for (const event of events) if (event.kind === 'step' && event.step >= from && event.step < to) out.set(event.step, event);
  return out;
}

/**
 * Replays one step: a plain step is drawn again (the sampler's state makes it the same token); a
 * step speculative decoding fed is fed with its recorded token (its draw came from the decoder's
 * generator, not the session's sampler) and keeps its record of how it was fed.
 */
async function replayStep(session: Session, recorded: StepTrace | undefined): Promise<StepTrace> {
  return recorded?.speculative ? session.step({ as: recorded }) : session.step();
}
