/**
 * The speculative-decoding view (spec-protocol.ts SpecView), packed from trace events alone: the
 * steps' `speculative` records group them into verification rounds (row 0 starts a round; the
 * round's last step carries its VerifyTrace), and the statistics are engine/spec/stats.ts's over
 * the rounds at or after `since`, so the view and the CLI's `--json` count the same way. An
 * imported trace packs the same as the live session (no model needed).
 */
import { SpeculativeStats } from '../../../engine/spec/stats.ts';
import type { StepTrace, TraceEvent } from '../../../engine/trace/schema.ts';
import { SPEC_AVERAGE_WINDOW, type SpecRoundView, type SpecView, type SpeedupView } from './spec-protocol.ts';

export interface SpecPackOptions {
  source: 'live' | 'trace';
  /** the drafter in charge (live), null = plain decoding */
  drafter: string | null;
  /** count rounds that start at or after this decode step */
  since: number;
  speedup?: SpeedupView | null;
  describe?: Record<string, number | string> | null;
}

function openRound(step: StepTrace): SpecRoundView {
  return { round: step.speculative!.round, tokens: [], drafted: [], accepted: 0, end: 'cut', next: null, drafter: '', gamma: 0, draftMs: 0, verifyMs: 0, counted: false };
}

/** Verification rounds of the trace's steps, in order; a round the trace holds only part of ends 'cut'. */
export function specRounds(events: readonly TraceEvent[]): SpecRoundView[] {
  const rounds: SpecRoundView[] = [];
  let open: SpecRoundView | null = null;
  let lastRow = -1;
  for (const event of events) {
    if (event.kind !== 'step') continue;
    const spec = event.speculative;
    if (!spec) {
      open = null;
      continue;
    }
    // a new round: row 0, another round number, or rows out of order (a new decoder restarts its count)
    if (!open || spec.row === 0 || spec.round !== open.round || spec.row !== lastRow + 1) {
      open = openRound(event);
      rounds.push(open);
    }
    lastRow = spec.row;
    open.tokens.push({ step: event.step, tokenIndex: event.tokenIndex, id: event.token.id, piece: event.token.piece, origin: spec.origin });
    const verify = spec.verify;
    if (verify) {
      open.drafted = verify.drafted.map((d) => ({ id: d.id, piece: d.piece, q: d.q, p: d.p, accepted: d.accepted }));
      open.accepted = verify.accepted;
      open.end = verify.end;
      open.next = { ...verify.next };
      open.drafter = verify.drafter;
      open.gamma = verify.gamma;
      open.draftMs = verify.draftMs;
      open.verifyMs = verify.verifyMs;
      open = null;
    }
  }
  return rounds;
}

export function packSpecView(events: readonly TraceEvent[], options: SpecPackOptions): SpecView {
  const rounds = specRounds(events);
  let steps = 0;
  let plainSteps = 0;
  for (const event of events) {
    if (event.kind !== 'step') continue;
    steps = Math.max(steps, event.step + 1);
    if (!event.speculative && event.step >= options.since) plainSteps++;
  }
  let stats: SpeculativeStats | null = null;
  const drafters: string[] = [];
  const perRoundIds: number[] = [];
  for (const round of rounds) {
    round.counted = round.end !== 'cut' && round.tokens[0].step >= options.since;
    if (!round.counted) continue;
    if (!drafters.includes(round.drafter)) drafters.push(round.drafter);
    stats ??= new SpeculativeStats(round.drafter, round.gamma);
    stats.add(
      { drafter: round.drafter, gamma: round.gamma, drafted: round.drafted.map((d) => ({ ...d })), accepted: round.accepted, next: round.next!, end: round.end as Exclude<SpecRoundView['end'], 'cut'>, draftMs: round.draftMs, verifyMs: round.verifyMs },
      round.tokens.length,
    );
    perRoundIds.push(round.round);
  }
  return {
    source: options.source,
    drafter: options.drafter,
    since: options.since,
    steps,
    plainSteps,
    rounds,
    summary: stats?.summary() ?? null,
    perRound: stats ? [...stats.perRound] : [],
    perRoundAverage: movingAverage(stats?.perRound ?? [], SPEC_AVERAGE_WINDOW),
    perRoundIds,
    drafters,
    speedup: options.speedup ?? null,
    describe: options.describe ?? null,
  };
}

/** Moving average over the last `window` non-null values (null where none yet), for acceptance over time. */
export function movingAverage(values: readonly (number | null)[], window: number): (number | null)[] {
  const out: (number | null)[] = [];
  const kept: number[] = [];
  for (const v of values) {
    if (v !== null) {
      kept.push(v);
      if (kept.length > window) kept.shift();
    }
    out.push(kept.length ? kept.reduce((a, b) => a + b, 0) / kept.length : null);
  }
  return out;
}
