/**
 * The explorer session's drafter (issue 10, speculative decoding), kept apart from host.ts: which
 * drafter is in charge, the SpeculativeDecoder over the live session (re-created when the session
 * is rebuilt: its statistics start fresh), draft models loaded by id, and the speed-up of the last
 * speculative Run against plain decoding of the same tokens.
 *
 * How the speed-up is measured (issue 10: "wall-clock speed-up against plain decoding in the same
 * run"): the Run's rounds are timed end to end (drafting, the target's block forward, committing,
 * recording the trace; the host's view packing and posting between rounds is excluded, a plain Run
 * pays it too). Then, on a fork of the session restored to the snapshot taken when the Run started,
 * the same tokens are fed one decode step at a time (Session.step with the token given: the forward
 * path and trace recording a plain decode takes; only the draw from the sampler is skipped) and
 * timed the same way. Same model, same cache and policy, same worker, seconds apart.
 */
import { createDrafter, DRAFTERS, formatDrafter, parseDrafter, SpeculativeDecoder, type Drafter, type DrafterEnv } from '../../../engine/spec/index.ts';
import type { Session, SessionSnapshot } from '../../../engine/session.ts';
import type { StepTrace, TraceEvent } from '../../../engine/trace/schema.ts';
import { packSpecView } from './pack-spec.ts';
import type { DrafterInfo, DrafterState, SpecView, SpeedupView } from './spec-protocol.ts';

export function drafterInfo(): DrafterInfo[] {
  return DRAFTERS.map((d) => ({
    id: d.id,
    label: d.label,
    description: d.description,
    paper: { ...d.paper },
    gammaParam: d.gammaParam,
    params: d.params.map((p) => (p.kind === 'text' ? { ...p, pattern: p.pattern?.source } : { ...p })),
  }));
}

export class SpeculativeHost {
  private spec: string | null = null;
  private drafter: Drafter | null = null;
  private decoder_: SpeculativeDecoder | null = null;
  /** decode steps when the drafter was set (statistics count from here) */
  private since = 0;
  private speedup: SpeedupView | null = null;

  get decoder(): SpeculativeDecoder | null {
    return this.decoder_;
  }

  get active(): boolean {
    return this.drafter !== null;
  }

  /**
   * Sets the drafter (`''` / `none`: plain decoding). A spec that does not parse, or a drafter that
   * cannot be created (a draft model that fails to load, a tokenizer mismatch) throws and changes nothing.
   */
  async set(text: string, env: DrafterEnv, session: Session | null): Promise<DrafterState> {
    const parsed = parseDrafter(text);
    const drafter = parsed ? await createDrafter(parsed, env) : null;
    this.spec = parsed ? formatDrafter(parsed) : null;
    this.drafter = drafter;
    this.speedup = null;
    this.since = session?.stepCount ?? 0;
    this.decoder_ = drafter && session ? new SpeculativeDecoder(session, drafter) : null;
    return this.state();
  }

  /** A new session (start / reset): a new decoder over it, statistics from its first step. */
  attach(session: Session): void {
    this.since = 0;
    this.speedup = null;
    this.decoder_ = this.drafter ? new SpeculativeDecoder(session, this.drafter) : null;
  }

  /** The session was cut back to `steps` decode steps: nothing counted lies beyond it. */
  rewound(steps: number): void {
    this.since = Math.min(this.since, steps);
    if (this.speedup && this.speedup.toStep > steps) this.speedup = null;
  }

  state(): DrafterState {
    return { spec: this.spec, since: this.since, describe: this.drafter?.describe?.() ?? null };
  }

  view(events: readonly TraceEvent[]): SpecView {
    return packSpecView(events, { source: 'live', drafter: this.spec, since: this.since, speedup: this.speedup, describe: this.drafter?.describe?.() ?? null });
  }

  /**
   * Times plain decoding of `steps` (the tokens a speculative Run fed from `start`) on a fork of
   * `session` restored to `start`, and keeps the result against the Run's own `speculativeMs`.
   * Returns null when the Run fed fewer than 2 tokens or the measurement was stopped.
   */
  async measure(session: Session, start: SessionSnapshot, steps: readonly StepTrace[], speculativeMs: number, signal: AbortSignal | null): Promise<SpeedupView | null> {
    if (!this.spec || steps.length < 2) return null;
    const fork = session.fork();
    fork.restore(start);
    const greedy = session.samplerOptions.temperature === 0;
    let same = true;
    let plainMs = 0;
    for (const step of steps) {
      if (signal?.aborted) return null;
      if (greedy) same &&= argmax(fork.nextTokenLogits!) === step.token.id;
      const t0 = performance.now();
      await fork.step({ token: step.token.id });
      plainMs += performance.now() - t0;
    }
    const tokens = steps.length;
    this.speedup = {
      drafter: this.spec,
      fromStep: steps[0].step,
      toStep: steps[tokens - 1].step + 1,
      tokens,
      speculativeMs,
      plainMs,
      speculativeMsPerToken: speculativeMs / tokens,
      plainMsPerToken: plainMs / tokens,
      ratio: speculativeMs > 0 ? plainMs / speculativeMs : 0,
      sameTokens: greedy ? same : null,
    };
    return this.speedup;
  }
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

