/**
 * Lanes: several sessions with different policies decoding the same prompt with the same sampler
 * and seed, stepping together (the app's /compare page). Each lane is measured against the full
 * cache on its *own* tokens by a reference lane (engine/reference.ts: a full-cache session
 * teacher-forced on every token the lane produces), so at every step both hold the same token
 * history and differ only in what the cache keeps. Per lane and step s (token t_s fed):
 *
 *   kl    KL(full ‖ lane) in nats between the next-token distributions after feeding t_s
 *   top1  whether both put their maximum on the same next token
 *   mass  share of the full cache's attention (t_s's query) on tokens the lane's cache held
 *
 * A lane whose policy is `full` is its own reference (kl 0, top1 true, mass 1) and needs no extra
 * session. Stepping back restores the nearest checkpoint at or before the target and replays
 * (runs are deterministic); checkpoints are thinned as decoding goes on, so memory stays bounded.
 *
 * Speculative lanes (docs/architecture.md, "Speculative decoding"). A lane may also name a drafter
 * (`drafters[i]`, a drafter spec such as `lookup` or `model:gamma=4`): it then decodes with a
 * SpeculativeDecoder (engine/spec/decoder.ts) over its session, in verification rounds of one
 * target forward each. The lanes still step together token by token:
 *
 *   - a Step shows exactly one more token of every lane, so step s is token s in every lane and
 *     the per-step metrics line up. A speculative lane whose produced tokens are all shown runs
 *     one round (1 … γ+1 tokens); the first is shown now, the rest are *held back* and shown by
 *     the next Steps without another forward (LaneState.ahead counts them);
 *   - every row of a round is measured exactly as a plain step would have been: the lane's logits
 *     after the row and what its cache held when the row's query attended are captured while the
 *     round commits the row (the decoder's onRow), and the reference lane is teacher-forced on the row's
 *     token right after the round (ReferenceLane.observeCaptured). Rows of a round other than the
 *     last never change the cache (the decoder cuts the round where the policy does), so the
 *     metrics are those of the same tokens decoded one by one;
 *   - per token: its origin (draft = an accepted draft token; correction, bonus or target = the
 *     target's own draw) and, cumulative up to that token, the round statistics: target calls per
 *     token, acceptance rate α (counted when a round's verdict is in, i.e. on its last row), mean
 *     accepted length. Reference-lane forwards are measurement, not target calls;
 *   - at temperature 0 a speculative lane's tokens equal the same policy's plain lane (speculative
 *     decoding is lossless); at temperature > 0 its draws come from the decoder's own seeded
 *     generator, so they follow the same distribution but are not the plain lane's tokens;
 *   - stepping back moves a speculative lane's shown point back; its session, drafter and
 *     reference stay where they are and the steps up to what it produced are shown again from
 *     what it recorded (runs are deterministic, so a replay would give the same), after that it
 *     runs new rounds. Reset (start) builds fresh drafters and decoders.
 */
import { ContextFullError, SessionError } from './errors.ts';
import { heldBeforeDecision, ReferenceLane, type ReferenceMetrics, type ReferenceSnapshot } from './reference.ts';
import type { SamplerOptions } from './sampling.ts';
import { Session, type BlockRowInfo, type EngineModel, type SessionSnapshot } from './session.ts';
import type { DrafterEnv } from './spec/drafter.ts';
import { createDrafter, formatDrafter, parseDrafter } from './spec/index.ts';
import { SpeculativeDecoder } from './spec/decoder.ts';
import type { SpeculativeOrigin, TokenProb, VerifyTrace } from './trace/schema.ts';

export const MIN_LANES = 1;
export const MAX_LANES = 4;

export interface LaneOptions {
  /** policy spec per lane (1–4) */
  policies: readonly string[];
  sampler?: SamplerOptions;
  /** drafter spec per lane (engine/spec/spec.ts; null, '' or `none`: plain decoding); default none */
  drafters?: readonly (string | null)[];
  /** what drafters may load (draft models, token indexes); the target is the group's model */
  drafterEnv?: Omit<DrafterEnv, 'target'>;
  /** teacher-forced full-cache references for KL / top-1 (default true) */
  reference?: boolean;
  prefillChunk?: number;
}

/** A speculative lane's round statistics, cumulative up to a shown token (engine/spec/stats.ts's terms). */
export interface LaneSpecStats {
  /** target forwards (verification rounds) that fed the tokens so far */
  rounds: number;
  tokens: number;
  /** drafted, verified and accepted tokens of the rounds whose verdict is in (on or before this token) */
  drafted: number;
  verified: number;
  accepted: number;
  /** accepted / verified (as SpeculativeStats); null while nothing was verified */
  acceptanceRate: number | null;
  /** tokens per target call (the target's own token included) */
  meanAcceptedLength: number;
  targetCallsPerToken: number;
}

/** How speculative decoding fed a lane's token. */
export interface LaneSpeculation {
  origin: SpeculativeOrigin;
  /** verification round (0-based since the lanes started) and the token's row in its forward */
  round: number;
  row: number;
  /** on the round's last token: what was drafted and kept, and why the round ended */
  verdict?: { gamma: number; drafted: number; accepted: number; end: VerifyTrace['end'] };
  stats: LaneSpecStats;
}

export interface LaneMemory {
  bytes: number;
  fullBytes: number;
  ratio: number;
  /** entries held, all heads, and per KV head on average */
  heldEntries: number;
  entriesPerHead: number;
}

export interface LaneStep {
  token: TokenProb;
  /** probability of the token under the sampling distribution */
  sampleProb: number;
  /** KL(full ‖ lane) of the next-token distributions after this step; null without a reference (or once it stopped) */
  kl: number | null;
  top1: boolean | null;
  /** share of the full cache's attention on tokens the lane held (mean over layers × heads) */
  mass: number | null;
  memory: LaneMemory;
  timings: { forwardMs: number; policyMs: number; referenceMs: number };
  /** speculative lanes only */
  speculative?: LaneSpeculation;
}

export interface LanesStep {
  /** decode step (0-based) */
  step: number;
  lanes: LaneStep[];
}

export interface LaneState {
  policy: string;
  /** canonical drafter spec (once started, as the drafter resolved it: `model=` names the draft model), null for a plain lane */
  drafter: string | null;
  memory: LaneMemory;
  position: number;
  /** speculative lanes: tokens decoded but not shown yet (held back until the other lanes catch up) */
  ahead: number;
  /** speculative lanes: the round statistics up to the shown token */
  speculative: LaneSpecStats | null;
}

/** What a round's row left behind, captured while the round committed it. */
interface CapturedRow {
  /** the lane's logits after the row (its own array) */
  logits: Float32Array;
  /** [layer][kvHead] token marks: what the cache held when the row's query attended (null without a reference) */
  held: Uint8Array[][] | null;
  memory: LaneMemory;
  position: number;
}

interface SpecLane {
  decoder: SpeculativeDecoder;
  /** what the current round's rows left behind (the decoder's onRow), taken after the round */
  rows: CapturedRow[];
  /** every token the lane fed since the start, with its metrics, and the session's position after it */
  produced: { view: LaneStep; position: number }[];
  /** tokens shown (= the group's step count) */
  shown: number;
  /** running totals of the rounds recorded in `produced` */
  drafted: number;
  verified: number;
  accepted: number;
}

interface Lane {
  session: Session;
  /** null: no references, or the lane is its own reference (full) */
  reference: ReferenceLane | null;
  full: boolean;
  /** canonical drafter spec; null = plain decoding */
  drafter: string | null;
  /** built by start() for lanes with a drafter */
  spec: SpecLane | null;
  promptLength: number;
  startMemory: LaneMemory;
  startPosition: number;
}

interface Checkpoint {
  step: number;
  /** null for speculative lanes (they keep every step they produced instead) */
  lanes: ({ session: SessionSnapshot; reference: ReferenceSnapshot | null } | null)[];
  pinned: boolean;
}

const NO_ROUNDS: LaneSpecStats = { rounds: 0, tokens: 0, drafted: 0, verified: 0, accepted: 0, acceptanceRate: null, meanAcceptedLength: 0, targetCallsPerToken: 0 };

const QUIET = { attention: false, fullSteps: 0, topTokens: 0 } as const;

function laneMemory(session: Session): LaneMemory {
  const m = session.memory();
  const heads = session.dims.nLayers * session.dims.nKvHeads;
  return { bytes: m.bytes, fullBytes: m.fullBytes, ratio: m.ratio, heldEntries: m.heldEntries, entriesPerHead: m.heldEntries / heads };
}

/** Checkpoints are taken every CHECKPOINT_EVERY steps (stepping back replays fewer than that). */
export const CHECKPOINT_EVERY = 8;

/** Which checkpoints to keep at `now` steps: every 8th in the last 64 steps, every 32nd in the last 256, every 128th before; pinned ones. */
export function keepCheckpoint(step: number, now: number, pinned: boolean): boolean {
  if (pinned) return true;
  const age = now - step;
  if (age <= 64) return step % CHECKPOINT_EVERY === 0;
  if (age <= 256) return step % 32 === 0;
  return step % 128 === 0;
}

export class LaneGroup {
  readonly model: EngineModel;
  readonly policies: readonly string[];
  /** canonical drafter spec per lane (null: plain) */
  readonly drafters: readonly (string | null)[];
  readonly sampler: SamplerOptions;
  readonly withReference: boolean;
  private lanes: Lane[];
  private readonly prefillChunk: number | undefined;
  private readonly drafterEnv: Omit<DrafterEnv, 'target'>;
  private checkpoints: Checkpoint[] = [];
  private steps_ = 0;
  private started = false;

  constructor(model: EngineModel, options: LaneOptions) {
    const n = options.policies.length;
    if (n < MIN_LANES || n > MAX_LANES) throw new SessionError(`compare needs ${MIN_LANES}–${MAX_LANES} lanes, got ${n}`);
    this.model = model;
    this.sampler = { ...options.sampler };
    this.withReference = options.reference ?? true;
    this.prefillChunk = options.prefillChunk;
    this.drafterEnv = options.drafterEnv ?? {};
    const drafters = options.drafters ?? [];
    if (drafters.length > n) throw new SessionError(`${drafters.length} drafters for ${n} lanes`);
    this.lanes = options.policies.map((policy, i) => {
      const session = new Session(model, { policy, sampler: this.sampler, prefillChunk: options.prefillChunk, trace: QUIET });
      // checked here (DraftSpecError), created by start(): a drafter may load a model
      const parsed = parseDrafter(drafters[i] ?? '');
      const memory = laneMemory(session);
      return { session, reference: null, full: session.policy.id === 'full', drafter: parsed ? formatDrafter(parsed) : null, spec: null, promptLength: 0, startMemory: memory, startPosition: 0 };
    });
    this.policies = this.lanes.map((l) => l.session.policySpec);
    this.drafters = this.lanes.map((l) => l.drafter);
  }

  get stepCount(): number {
    return this.steps_;
  }
  get laneCount(): number {
    return this.lanes.length;
  }
  /** Every token of lane i shown so far (prompt + generated; a speculative lane's held-back tokens not included). */
  tokens(lane: number): readonly number[] {
    const l = this.lanes[lane];
    return l.spec ? l.session.tokens.slice(0, l.promptLength + l.spec.shown) : l.session.tokens;
  }
  /** Lane i's session (a speculative lane's may be ahead of the shown step). */
  session(lane: number): Session {
    return this.lanes[lane].session;
  }
  /** A speculative lane's decoder (its statistics cover every round, held-back tokens included); null for a plain lane. */
  decoder(lane: number): SpeculativeDecoder | null {
    return this.lanes[lane].spec?.decoder ?? null;
  }

  state(): LaneState[] {
    return this.lanes.map((l) => {
      const spec = l.spec;
      if (!spec) return { policy: l.session.policySpec, drafter: l.drafter, memory: laneMemory(l.session), position: l.session.position, ahead: 0, speculative: null };
      const last = spec.shown > 0 ? spec.produced[spec.shown - 1] : null;
      return {
        policy: l.session.policySpec,
        // the drafter's own spec: `model` names the draft model it resolved
        drafter: spec.decoder.drafter.spec,
        memory: last ? last.view.memory : l.startMemory,
        position: last ? last.position : l.startPosition,
        ahead: spec.produced.length - spec.shown,
        speculative: last?.view.speculative?.stats ?? NO_ROUNDS,
      };
    });
  }

  /** Prefills every lane (and reference) with the prompt. */
  async start(prompt: readonly number[]): Promise<LaneState[]> {
    for (const lane of this.lanes) {
      lane.session.reset();
      lane.spec = null;
      await lane.session.prefill(prompt);
      lane.reference = this.withReference && !lane.full ? await ReferenceLane.follow(this.model, lane.session, { prefillChunk: this.prefillChunk }) : null;
      lane.promptLength = lane.session.tokens.length;
      lane.startMemory = laneMemory(lane.session);
      lane.startPosition = lane.session.position;
      if (lane.drafter) {
        const drafter = await createDrafter(lane.drafter, { ...this.drafterEnv, target: this.model });
        if (!drafter) throw new SessionError(`internal error: no drafter for ${lane.drafter}`);
        const session = lane.session;
        const rows: CapturedRow[] = [];
        // right after each row's step: what a plain step would leave the reference lane to read
        const onRow = ({ step, logits }: BlockRowInfo) =>
          rows.push({ logits, held: lane.reference ? heldBeforeDecision(session, step) : null, memory: laneMemory(session), position: session.position });
        lane.spec = { decoder: new SpeculativeDecoder(session, drafter, { onRow }), rows, produced: [], shown: 0, drafted: 0, verified: 0, accepted: 0 };
      }
    }
    this.steps_ = 0;
    this.started = true;
    this.checkpoints = [];
    this.checkpoint(true);
    return this.state();
  }

  /** One step of every lane. Throws ContextFullError (nothing changed) when a lane has no position left. */
  async step(): Promise<LanesStep> {
    if (!this.started) throw new SessionError('nothing to decode yet: start the lanes with a prompt first');
    const context = this.model.forward.dims.contextLength;
    for (const lane of this.lanes) {
      // a speculative lane with held-back tokens needs no forward for this step
      const needsForward = !lane.spec || lane.spec.shown >= lane.spec.produced.length;
      if (needsForward && lane.session.position >= context) {
        throw new ContextFullError(`the context is full (${context} positions) in lane ${lane.session.policySpec}`);
      }
    }
    const out: LaneStep[] = [];
    for (const lane of this.lanes) {
      if (lane.spec) {
        if (lane.spec.shown >= lane.spec.produced.length) await this.round(lane, lane.spec);
        out.push(lane.spec.produced[lane.spec.shown++].view);
        continue;
      }
      const trace = await lane.session.step();
      const reference = lane.reference;
      const { kl, top1, mass, referenceMs } = await this.metrics(lane, reference && (() => reference.observe(lane.session, trace)));
      out.push({
        token: trace.token,
        sampleProb: trace.sampleProb,
        kl,
        top1,
        mass,
        memory: laneMemory(lane.session),
        timings: { forwardMs: trace.timings.forwardMs, policyMs: trace.timings.policyMs, referenceMs },
      });
    }
    const result: LanesStep = { step: this.steps_, lanes: out };
    this.steps_++;
    if (this.steps_ % CHECKPOINT_EVERY === 0) this.checkpoint(false);
    return result;
  }

  /** A lane step's comparison with the full cache: exact for the full lane itself, else what `observe` measures. */
  private async metrics(lane: Lane, observe: (() => Promise<ReferenceMetrics | null>) | null | undefined): Promise<{ kl: number | null; top1: boolean | null; mass: number | null; referenceMs: number }> {
    if (lane.full && this.withReference) return { kl: 0, top1: true, mass: 1, referenceMs: 0 };
    if (!observe) return { kl: null, top1: null, mass: null, referenceMs: 0 };
    const t0 = globalThis.performance.now();
    const metrics = await observe();
    const referenceMs = globalThis.performance.now() - t0;
    return metrics ? { kl: metrics.kl, top1: metrics.agree, mass: metrics.mass, referenceMs } : { kl: null, top1: null, mass: null, referenceMs };
  }

  /** One verification round of a speculative lane: every row it fed, measured, appended to `produced`. */
  private async round(lane: Lane, spec: SpecLane): Promise<void> {
    // like a plain lane's steps: EOS is a token like any other
    spec.rows.length = 0;
    const { steps } = await spec.decoder.round(Infinity, false);
    const rows = spec.rows.splice(0);
    if (rows.length !== steps.length) throw new SessionError(`internal error: a round fed ${steps.length} tokens but ${rows.length} rows were captured`);
    for (let r = 0; r < steps.length; r++) {
      const trace = steps[r];
      const row = rows[r];
      const reference = lane.reference;
      const held = row.held;
      const { kl, top1, mass, referenceMs } = await this.metrics(lane, reference && held && (() => reference.observeCaptured(trace, row.logits, held)));
      const info = trace.speculative;
      if (!info) throw new SessionError('internal error: a speculative step without its round');
      const verify = info.verify;
      if (verify) {
        spec.drafted += verify.drafted.length;
        spec.verified += verify.drafted.filter((token) => token.p !== null).length;
        spec.accepted += verify.accepted;
      }
      const tokens = spec.produced.length + 1;
      const rounds = info.round + 1;
      const stats: LaneSpecStats = {
        rounds,
        tokens,
        drafted: spec.drafted,
        verified: spec.verified,
        accepted: spec.accepted,
        acceptanceRate: spec.verified ? spec.accepted / spec.verified : null,
        meanAcceptedLength: tokens / rounds,
        targetCallsPerToken: rounds / tokens,
      };
      spec.produced.push({
        position: row.position,
        view: {
          token: trace.token,
          sampleProb: trace.sampleProb,
          kl,
          top1,
          mass,
          memory: row.memory,
          timings: { forwardMs: trace.timings.forwardMs, policyMs: trace.timings.policyMs, referenceMs },
          speculative: {
            origin: info.origin,
            round: info.round,
            row: info.row,
            ...(verify ? { verdict: { gamma: verify.gamma, drafted: verify.drafted.length, accepted: verify.accepted, end: verify.end } } : {}),
            stats,
          },
        },
      });
    }
  }

  /** Returns to `target` decode steps (0 = right after the prompt): nearest checkpoint + replay. */
  async rewind(target: number, onReplay?: (step: LanesStep) => void): Promise<LaneState[]> {
    const goal = Math.max(0, Math.min(this.steps_, Math.floor(target)));
    let checkpoint: Checkpoint | undefined;
    for (const c of this.checkpoints) if (c.step <= goal && (!checkpoint || c.step > checkpoint.step)) checkpoint = c;
    if (!checkpoint) throw new SessionError(`no checkpoint at or before step ${goal}`);
    this.lanes.forEach((lane, i) => {
      if (lane.spec) {
        // its produced steps are shown again by the replay below
        lane.spec.shown = checkpoint!.step;
        return;
      }
      const saved = checkpoint!.lanes[i];
      if (!saved) return;
      lane.session.restore(saved.session);
      if (lane.reference && saved.reference) lane.reference.restore(saved.reference);
    });
    this.steps_ = checkpoint.step;
    this.checkpoints = this.checkpoints.filter((c) => c.step <= checkpoint!.step);
    while (this.steps_ < goal) {
      const step = await this.step();
      onReplay?.(step);
    }
    return this.state();
  }

  private checkpoint(pinned: boolean): void {
    this.checkpoints.push({
      step: this.steps_,
      pinned,
      lanes: this.lanes.map((l) => (l.spec ? null : { session: l.session.snapshot(), reference: l.reference?.snapshot() ?? null })),
    });
    this.checkpoints = this.checkpoints.filter((c) => keepCheckpoint(c.step, this.steps_, c.pinned));
  }
}
