/**
 * The reference lane (README, "Reference lane"): a second Session with the full cache that follows a policy
 * session in lockstep, teacher-forced on the tokens the policy lane produced, so that every step
 * can be compared with what the full cache would have done.
 *
 * Per decode step s (the policy lane fed token t_s and its forward produced the next-token logits):
 *  - `kl`          KL(full ‖ policy) in nats between the two lanes' next-token distributions after
 *                  feeding t_s (temperature 1, the model's own distributions, not the sampler's);
 *  - `agree`       both lanes' most likely next token is the same (top-1 agreement);
 *  - `mass`        the share of the full lane's attention that falls on tokens the policy's cache
 *                  held for this query: for every layer and query head, the full lane's attention
 *                  of t_s's query summed over the token indices the policy's KV head held when t_s
 *                  attended (the cache as fed plus t_s itself, through entry origins, so a merged
 *                  entry holds every token it stands for); `massByLayer` is the mean over a layer's
 *                  query heads, `mass` the mean over all layers and query heads (1 = nothing lost);
 *  - `memoryRatio` bytes the policy holds after the step's decision / bytes of the full lane.
 *
 * Use: `ReferenceLane.follow(model, policySession)` builds the lane at the policy's current point
 * (one prefill of every token fed so far); then call `observe(policySession, stepTrace)` right
 * after every policy step (or let `step(policySession)` do both). What the policy's cache held when
 * the step's query attended is reconstructed exactly from the cache after the step plus the step's
 * decision (AppliedHead.evictedTokens lists the origins of every entry it evicted), so `observe`
 * works inside Session.run's onStep callback. Policy switches (Session.setPolicy) need nothing:
 * the full lane is unaffected and the held sets are read at every step. `snapshot()/restore()`
 * follow the policy session's own snapshots (stepping back).
 */
import { ContextFullError, SessionError } from './errors.ts';
import { klDivergenceFromLogits } from './metrics/kl.ts';
import { argmax } from './sampling.ts';
import { Session, type EngineModel, type SessionSnapshot, type StepOptions } from './session.ts';
import type { StepTrace } from './trace/schema.ts';

export interface ReferenceMetrics {
  /** decode step of the policy lane (0-based) */
  step: number;
  /** token index of the token both lanes were fed */
  tokenIndex: number;
  /** KL(full ‖ policy) of the next-token distributions, nats (≥ 0) */
  kl: number;
  /** both lanes put their maximum on the same next token */
  agree: boolean;
  /** most likely next token of the full lane and of the policy lane */
  fullTop: number;
  policyTop: number;
  /** mean over layers × query heads of the full lane's attention mass on tokens the policy held */
  mass: number;
  /** [layer] mean over the layer's query heads */
  massByLayer: number[];
  /** [layer][queryHead] */
  massByHead: number[][];
  /** bytes the policy holds after the step / bytes the full lane holds */
  memoryRatio: number;
  policyBytes: number;
  fullBytes: number;
}

export interface ReferenceSnapshot {
  session: SessionSnapshot;
  stopped: string | null;
}

export interface ReferenceOptions {
  /** prompt tokens per prefill forward of the full lane (default: the Session default) */
  prefillChunk?: number;
}

/**
 * Per layer × KV head, which token indices the policy's cache held when the latest step's query
 * attended: the entries after the step's decision plus those the decision evicted (by origin).
 * Returns [layer][kvHead] → Uint8Array(tokenCount), 1 = held.
 */
export function heldBeforeDecision(policy: Session, trace: StepTrace): Uint8Array[][] {
  const cache = policy.cache;
  const tokens = cache.tokenCount;
  const held: Uint8Array[][] = [];
  for (let l = 0; l < cache.nLayers; l++) {
    const row: Uint8Array[] = [];
    for (let h = 0; h < cache.nKvHeads; h++) {
      const mark = new Uint8Array(tokens);
      const n = cache.length(l, h);
      for (let i = 0; i < n; i++) for (const t of cache.origin(l, h, i)) if (t >= 0 && t < tokens) mark[t] = 1;
      row.push(mark);
    }
    held.push(row);
  }
  for (const head of trace.decision.heads) {
    const mark = held[head.layer][head.kvHead];
    for (const t of head.evictedTokens) if (t >= 0 && t < tokens) mark[t] = 1;
  }
  return held;
}

export class ReferenceLane {
  /** the full-cache session (policy "full"); read it, do not step it yourself */
  readonly session: Session;
  private stopped_: string | null = null;

  private constructor(session: Session) {
    this.session = session;
  }

  /**
   * A full-cache lane at the policy session's current point: every token the policy lane was fed
   * so far is prefilled (chunked). Its pending logits are the full cache's next-token distribution.
   */
  static async follow(model: EngineModel, policy: Session, options: ReferenceOptions = {}): Promise<ReferenceLane> {
    const session = new Session(model, {
      policy: 'full',
      prefillChunk: options.prefillChunk ?? policy.prefillChunk,
      calibration: policy.calibration,
      // one step of full attention is all the lane reads (the newest); nothing else is kept in full
      trace: { fullSteps: 1, topTokens: 1, attentionTop: 1, attention: true },
    });
    const lane = new ReferenceLane(session);
    if (policy.tokens.length > 0) await session.prefill(policy.tokens);
    return lane;
  }

  /** Why the lane stopped following (the full cache ran out of context), or null. */
  get stopped(): string | null {
    return this.stopped_;
  }

  /** Tokens fed to the full lane so far. */
  get tokens(): readonly number[] {
    return this.session.tokens;
  }

  /** One policy step followed by the lane: the policy's StepTrace and the metrics (null once stopped). */
  async step(policy: Session, options: StepOptions = {}): Promise<{ trace: StepTrace; metrics: ReferenceMetrics | null }> {
    const trace = await policy.step(options);
    return { trace, metrics: await this.observe(policy, trace) };
  }

  /**
   * Feeds the token of the policy's latest step to the full lane and compares the two lanes.
   * Call it right after every policy step (before the next one): the held sets are read from the
   * policy's cache as that step left it. Returns null when the lane has stopped (context full).
   */
  async observe(policy: Session, trace: StepTrace): Promise<ReferenceMetrics | null> {
    if (this.stopped_) return null;
    const full = this.session;
    if (full.tokens.length !== trace.tokenIndex) {
      throw new SessionError(
        `the reference lane holds ${full.tokens.length} tokens but the policy step fed token #${trace.tokenIndex}: observe every step, in order`,
      );
    }
    if (policy.tokens.length !== trace.tokenIndex + 1 || policy.tokens[trace.tokenIndex] !== trace.token.id) {
      throw new SessionError(`observe() needs the policy session right after step ${trace.step}`);
    }
    return this.observeCaptured(trace, policy.nextTokenLogits!, heldBeforeDecision(policy, trace));
  }

  /**
   * observe() for a step the policy session has already moved past (the earlier rows of a
   * speculative verification round, engine/lanes.ts): `policyLogits` are the policy's logits after
   * the step and `held` what its cache held when the step's query attended (heldBeforeDecision),
   * both captured right after the step. Same metrics as observe() would have given then.
   */
  async observeCaptured(trace: StepTrace, policyLogits: Float32Array, held: Uint8Array[][]): Promise<ReferenceMetrics | null> {
    if (this.stopped_) return null;
    const full = this.session;
    if (full.tokens.length !== trace.tokenIndex) {
      throw new SessionError(
        `the reference lane holds ${full.tokens.length} tokens but the policy step fed token #${trace.tokenIndex}: observe every step, in order`,
      );
    }
    let fullTrace: StepTrace;
    try {
      fullTrace = await full.step({ token: trace.token.id });
    } catch (error) {
      if (error instanceof ContextFullError) {
        this.stopped_ = `the full-cache lane ran out of context at token #${trace.tokenIndex}: ${error.message}`;
        return null;
      }
      throw error;
    }
    const fullLogits = full.nextTokenLogits!;
    const fullTop = argmax(fullLogits);
    const policyTop = argmax(policyLogits);

    const attention = fullTrace.attention;
    if (!attention) throw new SessionError('the reference lane recorded no attention for its step');
    const { nLayers, nHeads, groupSize } = full.dims;
    const massByHead: number[][] = [];
    const massByLayer: number[] = [];
    let total = 0;
    for (let l = 0; l < nLayers; l++) {
      const row: number[] = [];
      let layerSum = 0;
      for (let qh = 0; qh < nHeads; qh++) {
        const kvHead = Math.floor(qh / groupSize);
        const entries = attention[l].entries[kvHead];
        const weights = attention[l].weights[qh];
        const mark = held[l][kvHead];
        let mass = 0;
        // the full lane never merges: entry i stands for token entries.tokens[i]
        for (let i = 0; i < weights.length; i++) if (mark[entries.tokens[i]] === 1) mass += weights[i];
        row.push(mass);
        layerSum += mass;
      }
      massByHead.push(row);
      massByLayer.push(layerSum / nHeads);
      total += layerSum;
    }
    const policyBytes = trace.memory.bytes;
    const fullBytes = fullTrace.memory.bytes;
    return {
      step: trace.step,
      tokenIndex: trace.tokenIndex,
      kl: klDivergenceFromLogits(fullLogits, policyLogits),
      agree: fullTop === policyTop,
      fullTop,
      policyTop,
      mass: total / (nLayers * nHeads),
      massByLayer,
      massByHead,
      memoryRatio: fullBytes === 0 ? 1 : policyBytes / fullBytes,
      policyBytes,
      fullBytes,
    };
  }

  /**
   * Teacher-forces the tokens the policy lane was fed after the lane's last one, without metrics
   * (after the policy session replayed steps on its own, e.g. stepping back to a point between
   * snapshots). The lane's tokens must be a prefix of the policy's.
   */
  async catchUp(policy: Session): Promise<void> {
    const have = this.session.tokens;
    const want = policy.tokens;
    if (have.length > want.length || have.some((t, i) => want[i] !== t)) {
      throw new SessionError(`the reference lane's ${have.length} tokens are not a prefix of the policy's ${want.length}: build a new lane (ReferenceLane.follow)`);
    }
    for (let i = have.length; i < want.length && !this.stopped_; i++) {
      try {
        await this.session.step({ token: want[i] });
      } catch (error) {
        if (!(error instanceof ContextFullError)) throw error;
        this.stopped_ = `the full-cache lane ran out of context at token #${i}: ${error.message}`;
      }
    }
  }

  snapshot(): ReferenceSnapshot {
    return { session: this.session.snapshot(), stopped: this.stopped_ };
  }

  restore(snapshot: ReferenceSnapshot): void {
    this.session.restore(snapshot.session);
    this.stopped_ = snapshot.stopped;
  }
}
