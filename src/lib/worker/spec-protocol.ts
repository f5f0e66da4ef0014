/**
 * The speculative-decoding view's payload (protocol.ts `spec`): verification rounds, acceptance
 * statistics and the measured speed-up, packed from trace events alone (pack-spec.ts), so an
 * imported trace with speculative steps renders it without the model.
 */
import type { Citation, ParamSpec } from '../../../engine/policies/types.ts';
import type { SpeculativeSummary } from '../../../engine/spec/stats.ts';
import type { SpeculativeOrigin, VerifyTrace } from '../../../engine/trace/schema.ts';

/** A drafter parameter as the picker shows it (engine/spec/drafter.ts DrafterParamSpec, patterns as text). */
export type DrafterParamInfo =
  | ParamSpec
  | { kind: 'text'; name: string; description: string; default: string; pattern?: string; patternText?: string }
  | { kind: 'policy'; name: string; description: string; default: string };

/** A registered drafter (engine/spec/index.ts DRAFTERS), as the `ready` event lists it. */
export interface DrafterInfo {
  id: string;
  label: string;
  description: string;
  paper: Citation;
  params: DrafterParamInfo[];
  gammaParam: string;
}

/** The drafter in charge of the explorer session (`set-drafter`'s reply, `done`'s and `started`'s). */
export interface DrafterState {
  /** canonical drafter spec; null = plain decoding */
  spec: string | null;
  /** decode steps taken when it was set (its statistics count from here) */
  since: number;
  /** the drafter's own numbers (Drafter.describe) */
  describe: Record<string, number | string> | null;
}

/** One committed token of a round. */
export interface SpecTokenView {
  step: number;
  tokenIndex: number;
  id: number;
  piece: string;
  origin: SpeculativeOrigin;
}

/** One drafted token of a round: the drafter's probability q, the target's p (null: never verified). */
export interface SpecDraftView {
  id: number;
  piece: string;
  q: number;
  p: number | null;
  accepted: boolean;
}

/** One verification round (one target forward). */
export interface SpecRoundView {
  /** the round number the trace records (counted by the decoder that ran it) */
  round: number;
  /** the tokens the round fed, in order (row 0 first: the token drawn before the round) */
  tokens: SpecTokenView[];
  drafted: SpecDraftView[];
  accepted: number;
  /** why the round ended; 'cut': the trace has only part of it (stepped back into it) */
  end: VerifyTrace['end'] | 'cut';
  /** the target's token after the round (row 0 of the next round); null when cut */
  next: { id: number; piece: string; origin: SpeculativeOrigin } | null;
  drafter: string;
  gamma: number;
  draftMs: number;
  verifyMs: number;
  /** counted in the statistics (at or after `SpecView.since`) */
  counted: boolean;
}

/** Wall-clock of the last speculative Run against plain decoding of the same tokens (host, speed-up measurement). */
export interface SpeedupView {
  drafter: string;
  /** decode steps the run started and ended at */
  fromStep: number;
  toStep: number;
  tokens: number;
  /** the run's rounds, ms: drafting + verification + committing (view packing and posting excluded, a plain run pays them too) */
  speculativeMs: number;
  /**
   * the same tokens fed one step at a time on a fork of the session taken at the run's start, ms:
   * the faster of `plainRunsMs` (the Run itself is timed once: the speed-up is, if anything, understated)
   */
  plainMs: number;
  /** each plain replay's time, ms, in the order they ran (their spread says how noisy the timing is) */
  plainRunsMs: number[];
  speculativeMsPerToken: number;
  plainMsPerToken: number;
  /** plainMs / speculativeMs (> 1: speculative decoding was faster) */
  ratio: number;
  /** at temperature 0: the plain replay's argmax was the Run's token at every step (both decoded the same thing); null otherwise */
  sameTokens: boolean | null;
}

/**
 * Posted under a `run` command while plain decoding of the Run's tokens is timed after its rounds
 * (the speed-up measurement): `done` of `total` replayed tokens (all replays together).
 */
export interface SpecMeasuringEvent {
  type: 'spec-measuring';
  id: number;
  done: number;
  total: number;
}

/** rounds the moving average of acceptance over time spans */
export const SPEC_AVERAGE_WINDOW = 8;

export interface SpecView {
  /** where it was packed from: the live session or an imported trace */
  source: 'live' | 'trace';
  /** the drafter in charge (live); null = plain decoding (or an imported trace) */
  drafter: string | null;
  /** statistics count rounds from this decode step on (live: since the drafter was set; a trace: 0) */
  since: number;
  /** decode steps in the trace */
  steps: number;
  /** decode steps since `since` that no round fed (plain steps) */
  plainSteps: number;
  rounds: SpecRoundView[];
  /** over the counted rounds (engine/spec/stats.ts); null when none */
  summary: SpeculativeSummary | null;
  /** per counted round: accepted / verified drafts (null: none verified) */
  perRound: (number | null)[];
  /** moving average of perRound over the last SPEC_AVERAGE_WINDOW rounds that drafted */
  perRoundAverage: (number | null)[];
  /** the round number of each entry of perRound */
  perRoundIds: number[];
  /** drafter specs of the counted rounds, in order of first use */
  drafters: string[];
  speedup: SpeedupView | null;
  describe: Record<string, number | string> | null;
}

