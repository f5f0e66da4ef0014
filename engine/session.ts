/**
 * A Session owns a model, a KV cache, a policy, a seeded sampler and a trace (docs/architecture.md, "Data flow").
 *
 *   prefill(ids)  feeds the prompt in chunks (causal inside each chunk), then asks the policy once
 *   step()        samples the next token from the pending logits, feeds it, lets the policy decide,
 *                 and returns its StepTrace
 *   run(n)        steps until n tokens, EOS, a full context or an abort signal
 *   snapshot() / restore() / fork()   cheap step-back and A/B branches
 *   setPolicy()   swaps the policy mid-decode; the existing cache is handed to the new one
 *   feedBlock()   speculative verification: q given tokens in one forward, committed row by row
 *   speculate() / rewindSpeculation() / settle()   steps that can be taken back (a drafter's)
 *
 * Steps are atomic: prefill, step and setPolicy run inside a cache transaction (cache/store.ts).
 * If the forward, a policy or its decision fails, the cache, positions, pending logits, policy
 * state, sampler and trace are exactly as before the call, and the error propagates as is.
 *
 * Token flow: after prefill the session holds the logits for the next token ("pending"). A step
 * draws the token from them, feeds it at the next position, and the new logits become pending.
 * Positions never exceed context_length − 1: a step that would need one more throws
 * ContextFullError (run() stops with reason 'context-full').
 */
import { KVCacheStore, type AppliedDecision, type MemoryReport } from './cache/store.ts';
import { checkCalibration, type Calibration } from './calibration/format.ts';
import { ContextFullError, SessionError } from './errors.ts';
import { Rope } from './model/rope.ts';
import { summarizeLogits } from './metrics/softmax.ts';
import type { Policy, PolicyContext, PolicyDefinition } from './policies/types.ts';
import { captureAttention, decisionTrace, emptyApplied, summarizeAttention } from './capture.ts';
import { blockRowAttention, blockRows, emptyPrefillObservation, headLengths, observePrefillChunk, startPrefillObservation, stepAttention } from './observe.ts';
import { PolicyChain, type Hook } from './policies/chain.ts';
import { POLICIES } from './policies/index.ts';
import { formatPolicyChain, parsePolicyChain, type PolicySpec } from './policies/spec.ts';
import type { ForwardResult, ModelDims } from './runtime/forward.ts';
import { Sampler, samplingDistribution, type SamplerOptions } from './sampling.ts';
import {
  DEFAULT_TRACE_OPTIONS,
  TRACE_VERSION,
  TraceRecorder,
  type PolicySwitchTrace,
  type PrefillTrace,
  type StepTrace,
  type TokenProb,
  type TraceOptions,
} from './trace/schema.ts';
import type {
  BlockResult,
  BlockRowInfo,
  BlockRowVerdict,
  EngineModel,
  FedRow,
  PrefillOptions,
  PrefillResult,
  RunOptions,
  RunResult,
  SavedFields,
  SessionOptions,
  SessionSnapshot,
  StepOptions,
} from './session-types.ts';

export type {
  BlockResult,
  BlockRowInfo,
  BlockRowVerdict,
  EngineModel,
  PrefillOptions,
  PrefillResult,
  RunOptions,
  RunResult,
  SessionOptions,
  SessionSnapshot,
  StepOptions,
  StopReason,
} from './session-types.ts';

const DEFAULT_PREFILL_CHUNK = 128;

function now(): number {
  return globalThis.performance.now();
}

export class Session {
  readonly model: EngineModel;
  readonly dims: ModelDims;
  readonly rope: Rope;
  readonly cache: KVCacheStore;
  readonly prefillChunk: number;
  readonly registry: readonly PolicyDefinition[];
  readonly calibration: Calibration | null;
  readonly keepQueries: boolean;
  private trace_: TraceRecorder;
  private chain: PolicyChain;
  private sampler: Sampler;
  private tokenIds: number[] = [];
  private nextPosition = 0;
  private stepCount_ = 0;
  private pendingLogits: Float32Array | null = null;
  /** [layer] the newest token's queries [nHeads × headDim] (keepQueries), null before any forward */
  private queries_: Float32Array[] | null = null;
  /** open speculative section (speculate()): per step taken in it, the cache savepoint and fields before it */
  private speculation: { savepoint: number; saved: SavedFields }[] | null = null;

  constructor(model: EngineModel, options: SessionOptions = {}) {
    this.model = model;
    this.dims = model.forward.dims;
    const { manifest } = model;
    this.rope = new Rope(manifest.rope, this.dims.headDim);
    this.cache = new KVCacheStore(this.dims, this.rope);
    this.prefillChunk = options.prefillChunk ?? DEFAULT_PREFILL_CHUNK;
    if (!Number.isInteger(this.prefillChunk) || this.prefillChunk < 1) {
      throw new SessionError(`prefillChunk must be an integer ≥ 1, got ${options.prefillChunk}`);
    }
    this.registry = options.registry ?? POLICIES;
    if (options.calibration) checkCalibration(options.calibration, manifest);
    this.calibration = options.calibration !== undefined ? options.calibration : (model.calibration ?? null);
    this.keepQueries = options.keepQueries ?? false;
    this.chain = new PolicyChain(this.parsePolicy(options.policy ?? 'full'), this.policyContext(), this.registry);
    this.sampler = new Sampler(options.sampler);
    const traceOptions: TraceOptions = { ...DEFAULT_TRACE_OPTIONS, ...options.trace };
    this.trace_ = new TraceRecorder({
      version: TRACE_VERSION,
      model: {
        id: manifest.id,
        name: manifest.name,
        layers: this.dims.nLayers,
        heads: this.dims.nHeads,
        kvHeads: this.dims.nKvHeads,
        headDim: this.dims.headDim,
        context: this.dims.contextLength,
      },
      sampler: { ...this.sampler.options },
      policy: this.chain.spec,
      options: traceOptions,
    });
  }

  private parsePolicy(policy: string | PolicySpec | readonly PolicySpec[]): PolicySpec[] {
    if (typeof policy === 'string') return parsePolicyChain(policy, this.registry);
    return Array.isArray(policy) ? [...(policy as readonly PolicySpec[])] : [policy as PolicySpec];
  }

  private policyContext(): PolicyContext {
    const context: PolicyContext = { dims: this.dims, rope: this.rope, calibration: this.calibration };
    if (!this.calibration && this.model.calibrationError) context.calibrationError = this.model.calibrationError;
    return context;
  }

  // ---- read access ----------------------------------------------------------------------------

  /** Every token fed so far (prompt + generated), in order. */
  get tokens(): readonly number[] {
    return this.tokenIds;
  }
  /** RoPE position the next token will be fed at. */
  get position(): number {
    return this.nextPosition;
  }
  get stepCount(): number {
    return this.stepCount_;
  }
  /** the policy in charge: the policy itself, or the composition when several run in order */
  get policy(): Policy | PolicyChain {
    return this.chain.members.length === 1 ? this.chain.members[0] : this.chain;
  }
  /** canonical spec string of the current policy (members joined with " + ") */
  get policySpec(): string {
    return this.chain.spec;
  }
  get trace(): TraceRecorder {
    return this.trace_;
  }
  get samplerOptions(): Required<SamplerOptions> {
    return { ...this.sampler.options };
  }
  /** Logits for the next token (null before prefill). Do not mutate. */
  get nextTokenLogits(): Float32Array | null {
    return this.pendingLogits;
  }
  memory(): MemoryReport {
    return this.cache.memory();
  }
  /**
   * Per layer, the post-RoPE query of the newest token fed, [nHeads × headDim] (query head h in
   * row h); null unless the session keeps queries (SessionOptions.keepQueries) and has run a forward. Do not mutate.
   */
  lastQueries(): readonly Float32Array[] | null {
    return this.queries_;
  }
  /** Readable piece of a token (tokenizer.tokenPiece, or "#id" without a tokenizer). */
  piece(id: number): string {
    return this.model.tokenizer?.tokenPiece(id) ?? `#${id}`;
  }

  // ---- prefill --------------------------------------------------------------------------------

  /** Encodes text with the model's tokenizer (BOS per manifest) and prefills it. */
  async prefillText(text: string, options: PrefillOptions = {}): Promise<PrefillResult> {
    if (!this.model.tokenizer) throw new SessionError('this model has no tokenizer: prefill token ids instead');
    return this.prefill(this.model.tokenizer.encode(text), { ...options, text });
  }

  /**
   * Feeds prompt tokens in chunks of prefillChunk (causal mask inside each chunk, the cache so far
   * before it), then lets the policy decide once over the whole prompt.
   */
  async prefill(ids: readonly number[], options: PrefillOptions = {}): Promise<PrefillResult> {
    const started = now();
    const { contextLength } = this.dims;
    const n = ids.length;
    if (n === 0) throw new SessionError('empty prompt: prefill needs at least one token');
    const left = contextLength - this.nextPosition;
    if (n > left) {
      throw new SessionError(
        this.tokenIds.length === 0
          ? `prompt has ${n} tokens but the model's context is ${contextLength}`
          : `prompt has ${n} tokens but only ${Math.max(0, left)} of the model's ${contextLength} positions are left`,
      );
    }
    ids.forEach((id, i) => this.checkTokenId(id, `prompt token ${i}`));
    return this.atomically(() => this.feedPrompt(ids, options, started));
  }

  private async feedPrompt(ids: readonly number[], options: PrefillOptions, started: number): Promise<PrefillResult> {
    const { nLayers, vocabSize: width } = this.dims;
    const n = ids.length;
    const needs = this.chain.needs;
    const window = Math.min(needs.prefillWindow ?? 0, n);
    const observation = startPrefillObservation(this.dims, this.cache, needs, n, window, this.tokenIds.length);
    const firstToken = this.tokenIds.length;
    const firstPosition = this.nextPosition;
    const allLogits = options.allLogits ? new Float32Array(n * width) : null;
    let lastLogits: Float32Array = new Float32Array(0);
    let forwardMs = 0;
    let chunks = 0;

    for (let start = 0; start < n; start += this.prefillChunk) {
      const q = Math.min(this.prefillChunk, n - start);
      const chunkIds = ids.slice(start, start + q);
      const positions = Array.from({ length: q }, (_, i) => this.nextPosition + i);
      const before = headLengths(this.cache);
      const feeds = this.cache.buildFeeds(q);
      const t0 = now();
      const result = await this.model.forward.run({
        inputIds: chunkIds,
        positionIds: positions,
        layers: feeds,
        attention: needs.attention || window > 0,
        queries: (needs.queries && window > 0) || (this.keepQueries && start + q >= n),
      });
      forwardMs += now() - t0;
      chunks++;
      if (this.keepQueries && result.queries) this.queries_ = blockRows(result.queries, this.dims.nHeads, q, this.dims.headDim, q - 1);
      this.cache.appendForward(result.keys, result.values, q, positions, this.tokenIds.length);
      for (const id of chunkIds) this.tokenIds.push(id);
      this.nextPosition += q;
      if (observation) observePrefillChunk(this.dims, observation, result, before, start, n, window);
      allLogits?.set(result.logits, start * width);
      lastLogits = result.logits.slice((q - 1) * width, q * width);
    }
    this.pendingLogits = lastLogits;

    const p0 = now();
    const { applied, decisions } = this.chain.run(this.cache, { kind: 'prefill', observation: observation ?? emptyPrefillObservation(firstToken, n) });
    this.takePosition(applied);
    const policyMs = now() - p0;

    const next = summarizeLogits(lastLogits, this.trace_.options.topTokens);
    const trace: PrefillTrace = {
      kind: 'prefill',
      firstToken,
      tokenIds: [...ids],
      pieces: ids.map((id) => this.piece(id)),
      firstPosition,
      chunks,
      policy: this.policySpec,
      decision: decisionTrace(applied, decisions, nLayers, this.dims.nKvHeads),
      memory: this.cache.memory(),
      timings: { forwardMs, policyMs, totalMs: now() - started },
      next: next.top.map(({ index, value }) => ({ id: index, piece: this.piece(index), prob: Math.exp(value - next.logSumExp) })),
      protects: this.chain.protects ?? null,
    };
    if (options.text !== undefined) trace.promptText = options.text;
    this.trace_.record(trace);
    return { tokens: n, logits: allLogits, lastLogits, trace };
  }

  // ---- decode ---------------------------------------------------------------------------------

  /** One decode step: draw (or take) the next token, feed it, apply the policy, record the trace. */
  async step(options: StepOptions = {}): Promise<StepTrace> {
    const started = now();
    const logits = this.pendingLogits;
    if (!logits) throw new SessionError('nothing to decode yet: call prefill() first');
    const { contextLength } = this.dims;
    const position = this.nextPosition;
    if (position > contextLength - 1) {
      throw new ContextFullError(
        `context is full: the next token would need position ${position}, but the model's context is ${contextLength} (positions 0..${contextLength - 1})`,
      );
    }
    if (options.token !== undefined) this.checkTokenId(options.token, 'forced token');
    if (options.as !== undefined) this.checkTokenId(options.as.token.id, 'replayed token');
    return this.atomically(() => this.decode(logits, position, options, started));
  }

  private async decode(logits: Float32Array, position: number, options: StepOptions, started: number): Promise<StepTrace> {
    let token: number;
    let sampleProb: number;
    const forced = options.as ? options.as.forced : options.token !== undefined;
    if (options.as) {
      token = options.as.token.id;
      sampleProb = options.as.sampleProb;
    } else if (options.token !== undefined) {
      token = options.token;
      sampleProb = 1;
    } else {
      ({ token, sampleProb } = this.sampler.sample(logits));
    }
    const wantAttention = this.chain.needs.attention || this.trace_.options.attention;
    const before = headLengths(this.cache);
    const result = await this.forward([token], position, wantAttention);
    const step = this.absorb({
      token,
      sampleProb,
      forced,
      drawnFrom: logits,
      position,
      keys: result.keys,
      values: result.values,
      queries: result.queries, // q = 1: [H, 1, D] is already one row per head
      attention: wantAttention && result.attention ? stepAttention(this.dims, result, before) : null,
      logits: result.logits,
      forwardMs: result.ms,
      started,
    });
    if (options.as?.speculative) step.speculative = options.as.speculative;
    this.trace_.record(step);
    return step;
  }

  /** One forward over `tokens` fed at positions from `position` on, with the cache's feeds. */
  private async forward(tokens: readonly number[], position: number, attention: boolean): Promise<ForwardResult & { ms: number }> {
    const feeds = this.cache.buildFeeds(tokens.length);
    const t0 = now();
    const result = await this.model.forward.run({
      inputIds: tokens,
      positionIds: tokens.map((_, i) => position + i),
      layers: feeds,
      attention,
      queries: this.chain.needs.queries || this.keepQueries,
    });
    return { ...result, ms: now() - t0 };
  }

  /** Feeds one token's graph outputs into the cache and lets the policy decide; the caller records the step. */
  private absorb(row: FedRow): StepTrace {
    const { nLayers, nKvHeads } = this.dims;
    const traceOptions = this.trace_.options;
    const needs = this.chain.needs;
    const { token, position } = row;
    const { logSumExp, top } = summarizeLogits(row.drawnFrom, traceOptions.topTokens);
    const tokenProb: TokenProb = { id: token, piece: this.piece(token), prob: Math.exp(row.drawnFrom[token] - logSumExp) };
    const topTokens = top.map(({ index, value }) => ({ id: index, piece: this.piece(index), prob: Math.exp(value - logSumExp) }));

    if (this.keepQueries && row.queries) this.queries_ = row.queries;
    const tokenIndex = this.tokenIds.length;
    this.cache.appendForward(row.keys, row.values, 1, [position], tokenIndex);
    this.tokenIds.push(token);

    const entryAttention = row.attention;
    // Captured before the policy changes the cache: what this step's query actually attended to.
    const keepFull = traceOptions.attention && traceOptions.fullSteps > 0 && entryAttention !== null;
    const attention = keepFull ? captureAttention(this.cache, entryAttention!) : null;
    const attentionTop = traceOptions.attention && entryAttention ? summarizeAttention(this.dims, this.cache, entryAttention, traceOptions.attentionTop) : null;

    const p0 = now();
    const hook: Hook = {
      kind: 'step',
      observation: { step: this.stepCount_, tokenIndex, position, attention: needs.attention ? entryAttention : null, queries: needs.queries ? row.queries : null },
    };
    const { applied, decisions } = this.chain.run(this.cache, hook);
    this.takePosition(applied, position + 1);
    const policyMs = now() - p0;
    this.pendingLogits = row.logits;

    const step: StepTrace = {
      kind: 'step',
      step: this.stepCount_,
      tokenIndex,
      position,
      token: tokenProb,
      sampleProb: row.sampleProb,
      forced: row.forced,
      topK: topTokens,
      attention,
      attentionTop,
      policy: this.policySpec,
      decision: decisionTrace(applied, decisions, nLayers, nKvHeads, traceOptions.fullSteps > 0),
      memory: this.cache.memory(),
      timings: { forwardMs: row.forwardMs, policyMs, totalMs: now() - row.started },
    };
    this.stepCount_++;
    return step;
  }

  // ---- speculative verification ---------------------------------------------------------------

  /**
   * Feeds `tokens` in one forward over the cache as it is and commits their rows in order, each as
   * the step a token-by-token decode would take: append, policy decision, trace. After each row
   * `decide` sees its logits and says whether the next row stands. A row's logits are exact only
   * while nothing changed the cache between rows (causal masking hides the later rows): when the
   * policy's decision after a row changes what the graph sees (`cacheChanged`), the rows after it
   * are dropped, whatever `decide` says. Row 0 is always committed: its token must already be the
   * session's to feed. Atomic like step(): on any error the session is as before.
   */
  async feedBlock(tokens: readonly number[], decide: (info: BlockRowInfo) => BlockRowVerdict, firstSampleProb?: number): Promise<BlockResult> {
    const started = now();
    const logits = this.pendingLogits;
    if (!logits) throw new SessionError('nothing to decode yet: call prefill() first');
    if (tokens.length === 0) throw new SessionError('feedBlock needs at least one token');
    const position = this.nextPosition;
    const last = position + tokens.length - 1;
    if (last > this.dims.contextLength - 1) {
      throw new ContextFullError(`context is full: a block of ${tokens.length} tokens from position ${position} would need position ${last}, but the model's context is ${this.dims.contextLength}`);
    }
    tokens.forEach((id, i) => this.checkTokenId(id, `block token ${i}`));
    return this.atomically(() => this.verifyBlock(tokens, logits, position, decide, started, firstSampleProb));
  }

  private async verifyBlock(
    tokens: readonly number[],
    logits: Float32Array,
    position: number,
    decide: (info: BlockRowInfo) => BlockRowVerdict,
    started: number,
    firstSampleProb: number | undefined,
  ): Promise<BlockResult> {
    const { nHeads, nKvHeads, headDim, vocabSize } = this.dims;
    const q = tokens.length;
    const wantAttention = this.chain.needs.attention || this.trace_.options.attention;
    // A hide lasts one forward: rows after the first would see the hidden entries again.
    const hiddenAtStart = this.cache.hiddenCount() > 0;
    const before = headLengths(this.cache);
    const result = await this.forward(tokens, position, wantAttention);
    const steps: StepTrace[] = [];
    let drawnFrom = logits;
    let sampleProb = firstSampleProb;
    for (let row = 0; row < q; row++) {
      const rowLogits = result.logits.slice(row * vocabSize, (row + 1) * vocabSize);
      const step = this.absorb({
        token: tokens[row],
        sampleProb: sampleProb ?? samplingDistribution(drawnFrom, this.sampler.options)[tokens[row]],
        forced: false,
        drawnFrom,
        position: position + row,
        keys: blockRows(result.keys, nKvHeads, q, headDim, row),
        values: blockRows(result.values, nKvHeads, q, headDim, row),
        queries: result.queries ? blockRows(result.queries, nHeads, q, headDim, row) : null,
        attention: wantAttention && result.attention ? blockRowAttention(this.dims, result, before, row) : null,
        logits: rowLogits,
        forwardMs: row === 0 ? result.ms : 0,
        started: row === 0 ? started : now(),
      });
      const cacheChanged = (row === 0 && hiddenAtStart) || changesForward(step.decision, position + row + 1, this.nextPosition);
      const verdict = decide({ row, logits: rowLogits, cacheChanged, step });
      if (verdict.speculative) step.speculative = verdict.speculative;
      this.trace_.record(step);
      steps.push(step);
      if (!verdict.next || cacheChanged || row === q - 1) break;
      drawnFrom = rowLogits;
      sampleProb = verdict.nextSampleProb;
    }
    return { committed: steps.length, steps, forwardMs: result.ms };
  }

  /**
   * Steps up to `maxSteps` times; stops early at EOS (unless stopAtEos is false), when the context
   * is full, or when the signal aborts. Never throws for those; other errors propagate.
   */
  async run(maxSteps: number, options: RunOptions = {}): Promise<RunResult> {
    const steps: StepTrace[] = [];
    const stopAtEos = options.stopAtEos ?? true;
    const eos = this.model.manifest.tokenizer.eos_id;
    for (let i = 0; i < maxSteps; i++) {
      if (options.signal?.aborted) return { steps, stopReason: 'aborted', message: 'stopped by the caller' };
      let step: StepTrace;
      try {
        step = await this.step();
      } catch (error) {
        if (error instanceof ContextFullError) return { steps, stopReason: 'context-full', message: error.message };
        throw error;
      }
      steps.push(step);
      await options.onStep?.(step);
      if (stopAtEos && step.token.id === eos) return { steps, stopReason: 'eos', message: 'the model produced the end-of-sequence token' };
    }
    return { steps, stopReason: 'length' };
  }

  // ---- policy switching -----------------------------------------------------------------------

  /**
   * Swaps the policy; the new one gets the current cache (onAttach) and the trace marks the switch,
   * saying what the new policy does without the history it would have kept (`withoutHistory`).
   * A spec, attach or decision that fails leaves the old policy and the cache as they were.
   */
  setPolicy(spec: string | PolicySpec | readonly PolicySpec[]): PolicySwitchTrace {
    if (this.speculation) throw new SessionError('cannot switch the policy inside a speculative section: settle() it first');
    const chain = new PolicyChain(this.parsePolicy(spec), this.policyContext(), this.registry);
    const from = this.policySpec;
    const previous = this.chain;
    const position = this.nextPosition;
    this.cache.begin();
    try {
      this.chain = chain;
      this.cache.resetColumns();
      this.cache.clearScores();
      const { applied, decisions } = this.tokenIds.length > 0 ? chain.run(this.cache, { kind: 'attach' }) : { applied: emptyApplied(), decisions: [] };
      this.takePosition(applied);
      const event: PolicySwitchTrace = {
        kind: 'policy',
        atStep: this.stepCount_,
        from,
        to: this.policySpec,
        decision: decisionTrace(applied, decisions, this.dims.nLayers, this.dims.nKvHeads),
        memory: this.cache.memory(),
        protects: chain.protects ?? null,
      };
      if (this.tokenIds.length > 0 && chain.withoutHistory) event.withoutHistory = chain.withoutHistory;
      this.cache.commit();
      this.trace_.record(event);
      return event;
    } catch (error) {
      this.cache.rollback();
      this.chain = previous;
      this.nextPosition = position;
      throw error;
    }
  }

  /**
   * Runs `work` so that it happens entirely or not at all: on any error the cache transaction is
   * rolled back and the session's own fields, the policy state and the sampler are put back.
   * Inside a speculative section the step is one savepoint of the section's transaction instead.
   */
  private async atomically<T>(work: () => Promise<T>): Promise<T> {
    const saved = this.saveFields();
    if (this.speculation) {
      const savepoint = this.cache.savepoint();
      try {
        const result = await work();
        this.speculation.push({ savepoint, saved });
        return result;
      } catch (error) {
        this.cache.rollbackTo(savepoint);
        this.restoreFields(saved);
        throw error;
      }
    }
    this.cache.begin();
    try {
      const result = await work();
      this.cache.commit();
      return result;
    } catch (error) {
      this.cache.rollback();
      this.restoreFields(saved);
      throw error;
    }
  }

  private saveFields(): SavedFields {
    return {
      tokens: this.tokenIds.length,
      nextPosition: this.nextPosition,
      stepCount: this.stepCount_,
      pendingLogits: this.pendingLogits,
      sampler: this.sampler.getState(),
      policy: this.chain.getState('session'),
      trace: this.trace_.length,
      queries: this.queries_,
    };
  }

  private restoreFields(saved: SavedFields): void {
    this.tokenIds.length = saved.tokens;
    this.nextPosition = saved.nextPosition;
    this.stepCount_ = saved.stepCount;
    this.pendingLogits = saved.pendingLogits;
    this.sampler = Sampler.fromState(saved.sampler);
    this.chain.setState(saved.policy);
    this.trace_.truncate(saved.trace);
    this.queries_ = saved.queries;
  }

  // ---- speculative sections -------------------------------------------------------------------

  /**
   * Opens a speculative section: the steps taken until settle() can be taken back, newest first,
   * with rewindSpeculation(keep) — cache (under the session's own policy), policy state, sampler
   * and trace exactly as they were after the first `keep` of them. A drafter proposes tokens this
   * way and keeps only the accepted ones. Snapshots and policy switches wait for settle().
   */
  speculate(): void {
    if (this.speculation) throw new SessionError('a speculative section is already open');
    if (this.cache.inTransaction) throw new SessionError('cannot speculate while a step is running');
    this.cache.begin();
    this.speculation = [];
  }

  get speculating(): boolean {
    return this.speculation !== null;
  }

  /** steps taken in the open speculative section (0 when none is open) */
  get speculativeSteps(): number {
    return this.speculation?.length ?? 0;
  }

  /** Undoes every step of the open section after its first `keep`. */
  rewindSpeculation(keep: number): void {
    const section = this.speculation;
    if (!section) throw new SessionError('no speculative section is open');
    if (!Number.isInteger(keep) || keep < 0 || keep > section.length) {
      throw new SessionError(`cannot keep ${keep} speculative steps: the section has ${section.length}`);
    }
    if (keep === section.length) return;
    const { savepoint, saved } = section[keep];
    this.cache.rollbackTo(savepoint);
    this.restoreFields(saved);
    section.length = keep;
  }

  /** Closes the open section, keeping the steps it still holds. */
  settle(): void {
    if (!this.speculation) throw new SessionError('no speculative section is open');
    this.cache.commit();
    this.speculation = null;
  }

  // ---- snapshots ------------------------------------------------------------------------------

  snapshot(): SessionSnapshot {
    if (this.speculation) throw new SessionError('cannot snapshot inside a speculative section: settle() it first');
    return {
      tokenIds: [...this.tokenIds],
      nextPosition: this.nextPosition,
      stepCount: this.stepCount_,
      pendingLogits: this.pendingLogits ? this.pendingLogits.slice() : null,
      cache: this.cache.snapshot(),
      policy: { specs: this.chain.specs.map((spec) => ({ id: spec.id, params: { ...spec.params } })), state: this.chain.getState('session') },
      sampler: this.sampler.getState(),
      traceLength: this.trace_.length,
      ...(this.keepQueries ? { queries: this.queries_?.map((q) => q.slice()) ?? null } : {}),
    };
  }

  /** Returns to a snapshot of this session (or of the session it was forked from). */
  restore(snapshot: SessionSnapshot): void {
    if (this.cache.inTransaction) throw new SessionError('cannot restore a snapshot while a step is running');
    if (formatPolicyChain(snapshot.policy.specs, this.registry) !== this.policySpec) {
      this.chain = new PolicyChain(snapshot.policy.specs, this.policyContext(), this.registry);
    }
    this.chain.setState(snapshot.policy.state);
    this.cache.restore(snapshot.cache);
    this.sampler = Sampler.fromState(snapshot.sampler);
    this.tokenIds = [...snapshot.tokenIds];
    this.nextPosition = snapshot.nextPosition;
    this.stepCount_ = snapshot.stepCount;
    this.pendingLogits = snapshot.pendingLogits ? snapshot.pendingLogits.slice() : null;
    this.trace_.truncate(snapshot.traceLength);
    this.queries_ = snapshot.queries?.map((q) => q.slice()) ?? null;
  }

  /** An independent session continuing from here: same model (shared graph), copied state and trace. */
  fork(): Session {
    const copy = new Session(this.model, {
      policy: this.chain.specs,
      sampler: this.sampler.options,
      prefillChunk: this.prefillChunk,
      trace: this.trace_.options,
      registry: this.registry,
      calibration: this.calibration,
      keepQueries: this.keepQueries,
    });
    copy.trace_ = this.trace_.clone();
    copy.restore(this.snapshot());
    return copy;
  }

  /** Forgets the prompt, cache, policy state and trace; the sampler restarts from its seed. */
  reset(): void {
    if (this.speculation) throw new SessionError('cannot reset inside a speculative section: settle() it first');
    this.cache.clear();
    this.chain.reset();
    this.sampler = new Sampler(this.sampler.options);
    this.tokenIds = [];
    this.nextPosition = 0;
    this.stepCount_ = 0;
    this.pendingLogits = null;
    this.trace_.truncate(0);
    this.queries_ = null;
  }

  // ---- helpers --------------------------------------------------------------------------------

  private checkTokenId(id: number, what: string): void {
    const { vocabSize } = this.dims;
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new SessionError(`${what} id ${id} is outside the vocabulary (0..${vocabSize - 1})`);
    }
  }

  /** The next RoPE position after a decision: the policy's (P2), else `fallback`, else unchanged. */
  private takePosition(applied: AppliedDecision, fallback?: number): void {
    this.nextPosition = applied.nextPosition ?? fallback ?? this.nextPosition;
  }
}

/**
 * Whether a decision changed what the next forward sees: entries evicted, merged, re-encoded,
 * moved or hidden, or the next position moved away from `expected` (P2). Score-only decisions do not.
 */
function changesForward(decision: AppliedDecision, expected: number, nextPosition: number): boolean {
  if (decision.evicted > 0 || decision.merged > 0 || decision.reencoded > 0 || (decision.hidden ?? 0) > 0) return true;
  if (nextPosition !== expected) return true;
  return decision.heads.some((h) => h.before !== h.after || h.repositioned > 0);
}
