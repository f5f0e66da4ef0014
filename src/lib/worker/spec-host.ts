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
 * timed the same way, twice (PLAIN_REPLAYS, each on a fresh fork); the faster replay counts. The Run
 * itself is one sample (it cannot be re-run without re-drafting), so the figure is one Run's and,
 * with plain decoding given its best of two, if anything an understatement; both replays' times are
 * kept so the view can show their spread. Same model, same cache and policy, same worker, seconds apart.
 *
 * The reference lane (host.ts) compares every step of a round: while `capture()` says a lane exists,
 * each committed row's logits and what its cache held when its query attended are captured as the
 * round commits it (the decoder's onRow), and handed to the host after the round (takeRows).
 */
import { createDrafter, DRAFTERS, formatDrafter, parseDrafter, SpeculativeDecoder, type Drafter, type DrafterEnv } from '../../../engine/spec/index.ts';
import type { DraftSpec } from '../../../engine/spec/spec.ts';
import { heldBeforeDecision } from '../../../engine/reference.ts';
import type { BlockRowInfo, Session, SessionSnapshot } from '../../../engine/session.ts';
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

/** plain replays of a Run's tokens in a speed-up measurement (the faster counts) */
export const PLAIN_REPLAYS = 2;

/** What a round's row left behind, captured while the round committed it (for the reference lane). */
export interface CapturedRow {
  logits: Float32Array;
  held: Uint8Array[][];
}

export class SpeculativeHost {
  private spec: string | null = null;
  private drafter: Drafter | null = null;
  /** how the drafter was made, to make a learning one afresh for a new session */
  private made: { parsed: DraftSpec; env: DrafterEnv } | null = null;
  private decoder_: SpeculativeDecoder | null = null;
  /** decode steps when the drafter was set (statistics count from here) */
  private since = 0;
  private speedup: SpeedupView | null = null;
  private rows: CapturedRow[] = [];

  /** `capture`: whether rows are to be captured for a reference lane (one exists) */
  constructor(private readonly capture: () => boolean = () => false) {}

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
    this.made = parsed ? { parsed, env } : null;
    this.speedup = null;
    this.since = session?.stepCount ?? 0;
    this.decoder_ = drafter && session ? this.decoderOver(session, drafter) : null;
    this.rows = [];
    return this.state();
  }

  /**
   * A new session (start / reset): the drafter made afresh from its spec, a new decoder over it,
   * statistics from its first step — so a Reset decodes what the same setup decodes in a new tab
   * (experiment links replay it), whatever a drafter kept from the last session (what OmniDraft and
   * OSD learned). Draft models and index files come from the env's caches, not loaded again.
   */
  async attach(session: Session): Promise<void> {
    // nothing drives the new session until its drafter is made (a failure leaves plain decoding, said)
    this.decoder_ = null;
    if (this.made) {
      try {
        this.drafter = await createDrafter(this.made.parsed, this.made.env);
      } catch (error) {
        this.drafter = null;
        this.spec = null;
        this.made = null;
        throw error;
      }
    }
    this.since = 0;
    this.speedup = null;
    this.decoder_ = this.drafter ? this.decoderOver(session, this.drafter) : null;
    this.rows = [];
  }

  private decoderOver(session: Session, drafter: Drafter): SpeculativeDecoder {
    const onRow = (info: BlockRowInfo) => {
      if (this.capture()) this.rows.push({ logits: info.logits, held: heldBeforeDecision(session, info.step) });
    };
    return new SpeculativeDecoder(session, drafter, { onRow });
  }

  /** The rows captured since the last call (the last round's, in order); empty while nothing captures. */
  takeRows(): CapturedRow[] {
    const rows = this.rows;
    this.rows = [];
    return rows;
  }

  /** A Run starts: the last speed-up no longer describes the session's latest Run. */
  clearSpeedup(): void {
    this.speedup = null;
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
   * Times plain decoding of `steps` (the tokens a speculative Run fed from `start`) PLAIN_REPLAYS
   * times, each on a fresh fork of `session` restored to `start`, and keeps the faster against the
   * Run's own `speculativeMs`. `onProgress` hears replayed tokens (all replays together). Returns
   * null (and keeps no figure) when the Run fed fewer than 2 tokens or the measurement was stopped.
   */
  async measure(
    session: Session,
    start: SessionSnapshot,
    steps: readonly StepTrace[],
    speculativeMs: number,
    signal: AbortSignal | null,
    onProgress?: (done: number, total: number) => void | Promise<void>,
  ): Promise<SpeedupView | null> {
    this.speedup = null;
    if (!this.spec || steps.length < 2) return null;
    const drafter = this.spec;
    const greedy = session.samplerOptions.temperature === 0;
    const tokens = steps.length;
    const total = tokens * PLAIN_REPLAYS;
    let same = true;
    const runs: number[] = [];
    for (let replay = 0; replay < PLAIN_REPLAYS; replay++) {
      const fork = session.fork();
      fork.restore(start);
      let ms = 0;
      for (let i = 0; i < tokens; i++) {
        if (signal?.aborted) return null;
        const step = steps[i];
        if (greedy && replay === 0) same &&= argmax(fork.nextTokenLogits!) === step.token.id;
        const t0 = performance.now();
        await fork.step({ token: step.token.id });
        ms += performance.now() - t0;
        // between steps, outside the timed span
        if ((i + 1) % 8 === 0 || i === tokens - 1) await onProgress?.(replay * tokens + i + 1, total);
      }
      runs.push(ms);
    }
    if (signal?.aborted) return null;
    const plainMs = Math.min(...runs);
    this.speedup = {
      drafter,
      fromStep: steps[0].step,
      toStep: steps[tokens - 1].step + 1,
      tokens,
      speculativeMs,
      plainMs,
      plainRunsMs: runs,
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

