/**
 * Acceptance statistics of speculative decoding, as the papers and Spec-Bench report them
 * (../shared/LESSONS.md): acceptance rate α (accepted / verified drafts), mean accepted length per target
 * call (bonus or correction included), target calls per generated token, acceptance per draft
 * position, the accepted-length histogram, and acceptance over time for online drafters.
 */
import type { VerifyTrace } from '../trace/schema.ts';

/** `--json`'s `speculative` object (docs/cli.md): these keys, snake_case. */
export interface SpeculativeSummary {
  drafter: string;
  gamma: number;
  rounds: number;
  target_calls: number;
  /** tokens the target fed (one step each) */
  tokens: number;
  drafted: number;
  /** drafted tokens the target checked (the rest came after a round's end: a rejection, a cache change, EOS) */
  verified: number;
  accepted: number;
  /** accepted / verified (0 when nothing was verified): the drafter's quality, not the target policy's cuts */
  acceptance_rate: number;
  /** tokens per target call, the target's own token included */
  mean_accepted_length: number;
  target_calls_per_token: number;
  /** [i] = share of rounds that reached draft position i and had it accepted */
  per_position_acceptance: number[];
  /** [k] = rounds that kept k drafted tokens */
  accepted_length_histogram: number[];
  /** why rounds ended: rejected, all-accepted, cache-changed, no-draft, eos */
  round_ends: Record<string, number>;
  draft_ms: number;
  verify_ms: number;
}

export class SpeculativeStats {
  private rounds = 0;
  private tokens = 0;
  private drafted = 0;
  private verified = 0;
  private accepted = 0;
  private reached: number[] = [];
  private kept: number[] = [];
  private histogram: number[] = [];
  private ends: Record<string, number> = {};
  private draftMs = 0;
  private verifyMs = 0;
  /** per round: accepted / verified drafts (null when none was verified), for acceptance over time */
  readonly perRound: (number | null)[] = [];

  constructor(
    readonly drafter: string,
    readonly gamma: number,
  ) {}

  /** Adds a round: its verification and the tokens it fed. */
  add(verify: VerifyTrace, fed: number): void {
    this.rounds++;
    this.tokens += fed;
    this.drafted += verify.drafted.length;
    this.accepted += verify.accepted;
    verify.drafted.forEach((token, i) => {
      if (token.p === null) return; // never verified: the round ended before it
      this.verified++;
      this.reached[i] = (this.reached[i] ?? 0) + 1;
      this.kept[i] = (this.kept[i] ?? 0) + (token.accepted ? 1 : 0);
    });
    while (this.histogram.length <= verify.accepted) this.histogram.push(0);
    this.histogram[verify.accepted]++;
    this.ends[verify.end] = (this.ends[verify.end] ?? 0) + 1;
    this.draftMs += verify.draftMs;
    this.verifyMs += verify.verifyMs;
    const checked = verify.drafted.filter((token) => token.p !== null).length;
    this.perRound.push(checked ? verify.accepted / checked : null);
  }

  summary(): SpeculativeSummary {
    return {
      drafter: this.drafter,
      gamma: this.gamma,
      rounds: this.rounds,
      target_calls: this.rounds,
      tokens: this.tokens,
      drafted: this.drafted,
      verified: this.verified,
      accepted: this.accepted,
      acceptance_rate: this.verified ? this.accepted / this.verified : 0,
      mean_accepted_length: this.rounds ? this.tokens / this.rounds : 0,
      target_calls_per_token: this.tokens ? this.rounds / this.tokens : 0,
      per_position_acceptance: this.reached.map((n, i) => (n ? (this.kept[i] ?? 0) / n : 0)),
      accepted_length_histogram: [...this.histogram],
      round_ends: { ...this.ends },
      draft_ms: this.draftMs,
      verify_ms: this.verifyMs,
    };
  }
}
