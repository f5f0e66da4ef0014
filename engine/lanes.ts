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
 */
import { ContextFullError, SessionError } from './errors.ts';
import { ReferenceLane, type ReferenceSnapshot } from './reference.ts';
import type { SamplerOptions } from './sampling.ts';
import { Session, type EngineModel, type SessionSnapshot } from './session.ts';
import type { TokenProb } from './trace/schema.ts';

export const MIN_LANES = 1;
export const MAX_LANES = 4;

export interface LaneOptions {
  /** policy spec per lane (1–4) */
  policies: readonly string[];
  sampler?: SamplerOptions;
  /** teacher-forced full-cache references for KL / top-1 (default true) */
  reference?: boolean;
  prefillChunk?: number;
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
}

export interface LanesStep {
  /** decode step (0-based) */
  step: number;
  lanes: LaneStep[];
}

export interface LaneState {
  policy: string;
  memory: LaneMemory;
  position: number;
}

interface Lane {
  session: Session;
  /** null: no references, or the lane is its own reference (full) */
  reference: ReferenceLane | null;
  full: boolean;
}

interface Checkpoint {
  step: number;
  lanes: { session: SessionSnapshot; reference: ReferenceSnapshot | null }[];
  pinned: boolean;
}

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
  readonly sampler: SamplerOptions;
  readonly withReference: boolean;
  private lanes: Lane[];
  private readonly prefillChunk: number | undefined;
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
    this.lanes = options.policies.map((policy) => {
      const session = new Session(model, { policy, sampler: this.sampler, prefillChunk: options.prefillChunk, trace: QUIET });
      return { session, reference: null, full: session.policy.id === 'full' };
    });
    this.policies = this.lanes.map((l) => l.session.policySpec);
  }

  get stepCount(): number {
    return this.steps_;
  }
  get laneCount(): number {
    return this.lanes.length;
  }
  /** Every token of lane i (prompt + generated). */
  tokens(lane: number): readonly number[] {
    return this.lanes[lane].session.tokens;
  }
  session(lane: number): Session {
    return this.lanes[lane].session;
  }

  state(): LaneState[] {
    return this.lanes.map((l) => ({ policy: l.session.policySpec, memory: laneMemory(l.session), position: l.session.position }));
  }

  /** Prefills every lane (and reference) with the prompt. */
  async start(prompt: readonly number[]): Promise<LaneState[]> {
    for (const lane of this.lanes) {
      lane.session.reset();
      await lane.session.prefill(prompt);
      lane.reference = this.withReference && !lane.full ? await ReferenceLane.follow(this.model, lane.session, { prefillChunk: this.prefillChunk }) : null;
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
      if (lane.session.position >= context) {
        throw new ContextFullError(`the context is full (${context} positions) in lane ${lane.session.policySpec}`);
      }
    }
    const out: LaneStep[] = [];
    for (const lane of this.lanes) {
      const trace = await lane.session.step();
      let kl: number | null = null;
      let top1: boolean | null = null;
      let mass: number | null = null;
      let referenceMs = 0;
      if (lane.full && this.withReference) {
        kl = 0;
        top1 = true;
        mass = 1;
      } else if (lane.reference) {
        const t0 = globalThis.performance.now();
        const metrics = await lane.reference.observe(lane.session, trace);
        referenceMs = globalThis.performance.now() - t0;
        if (metrics) ({ kl, agree: top1, mass } = metrics);
      }
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

  /** Returns to `target` decode steps (0 = right after the prompt): nearest checkpoint + replay. */
  async rewind(target: number, onReplay?: (step: LanesStep) => void): Promise<LaneState[]> {
    const goal = Math.max(0, Math.min(this.steps_, Math.floor(target)));
    let checkpoint: Checkpoint | undefined;
    for (const c of this.checkpoints) if (c.step <= goal && (!checkpoint || c.step > checkpoint.step)) checkpoint = c;
    if (!checkpoint) throw new SessionError(`no checkpoint at or before step ${goal}`);
    this.lanes.forEach((lane, i) => {
      lane.session.restore(checkpoint!.lanes[i].session);
      const reference = checkpoint!.lanes[i].reference;
      if (lane.reference && reference) lane.reference.restore(reference);
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
      lanes: this.lanes.map((l) => ({ session: l.session.snapshot(), reference: l.reference?.snapshot() ?? null })),
    });
    this.checkpoints = this.checkpoints.filter((c) => keepCheckpoint(c.step, this.steps_, c.pinned));
  }
}
