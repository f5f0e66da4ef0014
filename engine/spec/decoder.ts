/**
 * Speculative decoding over a Session (docs/architecture.md, "Speculative decoding").
 *
 * A round: the target has fed every token but one it has already drawn (`next`: the previous
 * round's correction or bonus, or a plain draw from its pending logits). The drafter proposes up
 * to γ tokens after it; the target feeds [next, d1 … dγ] in one forward (Session.feedBlock) and
 * commits rows in order while the drafts are accepted (verify.ts). The round ends at the first
 * rejection (the correction from the residual becomes `next`), after the last draft (the bonus
 * token from the last row becomes `next`), or where the target's own KV policy changed the cache
 * after a row: the forward's later rows saw a cache a token-by-token decode never has, so they are
 * dropped and the accepted token after the cut becomes `next`. So the target's output — tokens
 * and cache, under any policy — is a token-by-token decode's: identical to plain greedy decoding
 * at temperature 0, distributed as the target's at temperature > 0. A policy that changes the
 * cache every step (H2O over budget) therefore verifies one token per call: no speed-up, and the
 * rounds say why (`cache-changed`).
 *
 * All randomness (draft draws, acceptance, corrections, bonus) comes from one generator seeded
 * from the sampler's seed, separate from the session's sampler.
 */
import { ContextFullError, DraftSpecError, SessionError } from '../errors.ts';
import { samplingDistribution, Xoshiro128, type SamplerOptions } from '../sampling.ts';
import type { BlockRowInfo, Session, StopReason } from '../session.ts';
import type { DraftedToken, SpeculativeOrigin, StepTrace, VerifyTrace } from '../trace/schema.ts';
import type { Drafter, DraftProposal } from './drafter.ts';
import { SpeculativeStats } from './stats.ts';
import { drawFromTarget, verifyToken } from './verify.ts';

export interface RoundResult {
  steps: StepTrace[];
  verify: VerifyTrace;
}

export interface SpeculativeRunResult {
  steps: StepTrace[];
  rounds: VerifyTrace[];
  stopReason: StopReason;
  message?: string;
}

export interface SpeculativeDecoderOptions {
  /**
   * called as each row is committed, while the target is right after that row's step (its pending
   * logits, its cache after the decision): what a caller would read after a plain step() — a
   * reference lane's comparison, a lane's memory — it reads here, since the round moves on
   */
  onRow?: (info: BlockRowInfo) => void;
}

export interface SpeculativeRunOptions {
  signal?: AbortSignal;
  /** stop after the EOS token (default true) */
  stopAtEos?: boolean;
  onRound?: (round: RoundResult) => void | Promise<void>;
}

function now(): number {
  return globalThis.performance.now();
}

/** The generator's seed for a session's sampler seed (kept apart from the sampler's own stream). */
function speculativeSeed(seed: number): number {
  return (seed ^ 0x5bd1e995) >>> 0;
}

/** A token the target drew (or accepted) for the next position: who chose it and its probability under p. */
interface Drawn {
  token: number;
  origin: SpeculativeOrigin;
  prob: number;
}

export class SpeculativeDecoder {
  readonly stats: SpeculativeStats;
  private rng: Xoshiro128;
  /** the token the target drew and will feed first next round, for the context it was drawn at */
  private pending: (Drawn & { at: number; logits: Float32Array }) | null = null;
  private round_ = 0;

  constructor(
    readonly target: Session,
    readonly drafter: Drafter,
    private readonly options: SpeculativeDecoderOptions = {},
  ) {
    if (!Number.isInteger(drafter.gamma) || drafter.gamma < 1) throw new DraftSpecError(`drafter ${drafter.spec}: γ must be an integer ≥ 1, got ${drafter.gamma}`);
    this.rng = new Xoshiro128(speculativeSeed(target.samplerOptions.seed));
    this.stats = new SpeculativeStats(drafter.spec, drafter.gamma);
  }

  get rounds(): number {
    return this.round_;
  }

  private get sampler(): Required<SamplerOptions> {
    return this.target.samplerOptions;
  }

  /** The token the target feeds first: the one drawn last round, or a fresh draw from its pending logits. */
  private nextToken(): Drawn {
    const logits = this.target.nextTokenLogits;
    if (!logits) throw new SessionError('nothing to decode yet: call prefill() first');
    const p = this.pending;
    // still valid only if the target has not moved (stepped by hand, rewound, reset) since
    if (p && p.at === this.target.tokens.length && p.logits === logits) return p;
    const distribution = samplingDistribution(logits, this.sampler);
    const token = drawFromTarget(distribution, this.rng);
    return { token, origin: 'target', prob: distribution[token] };
  }

  /**
   * One verification round: at most `maxTokens` tokens fed (≥ 1). Atomic for the target (feedBlock);
   * a drafter that fails leaves the target untouched.
   */
  async round(maxTokens = Infinity, stopAtEos = true): Promise<RoundResult> {
    const target = this.target;
    const { contextLength, vocabSize } = target.dims;
    const room = contextLength - target.position;
    if (room < 1) throw new ContextFullError(`context is full: the next token would need position ${target.position}, but the model's context is ${contextLength} (positions 0..${contextLength - 1})`);
    const first = this.nextToken();
    const gamma = Math.max(0, Math.min(this.drafter.gamma, room - 1, Math.floor(maxTokens) - 1));
    const context = [...target.tokens, first.token];
    const eos = target.model.manifest.tokenizer.eos_id;
    const t0 = now();
    const proposal: DraftProposal = gamma > 0 && !(stopAtEos && first.token === eos)
      ? await this.drafter.propose({ tokens: context, maxTokens: gamma, sampler: this.sampler, rng: this.rng })
      : { tokens: [], q: [], confidence: [] };
    const draftMs = now() - t0;
    checkProposal(proposal, gamma, vocabSize, this.drafter.spec);

    const drafted: DraftedToken[] = proposal.tokens.map((id, i) => ({ id, piece: target.piece(id), q: proposal.confidence[i], p: null, accepted: false }));
    const targetProbs: Float64Array[] = [];
    const round = this.round_;
    let accepted = 0;
    let next: Drawn = first;
    let end: VerifyTrace['end'] = 'no-draft';
    let verify: VerifyTrace | null = null;
    const block = [first.token, ...proposal.tokens];

    const result = await target.feedBlock(block, (info) => {
      this.options.onRow?.(info);
      const { row, logits, cacheChanged } = info;
      const origin: SpeculativeOrigin = row === 0 ? first.origin : 'draft';
      const p = samplingDistribution(logits, this.sampler);
      targetProbs.push(p);
      let more = false;
      const drawn = (origin: SpeculativeOrigin): Drawn => {
        const token = drawFromTarget(p, this.rng);
        return { token, origin, prob: p[token] };
      };
      if (stopAtEos && block[row] === eos) {
        end = 'eos';
        next = drawn('target');
      } else if (row < proposal.tokens.length) {
        const token = proposal.tokens[row];
        const verdict = verifyToken(p, proposal.q[row], token, this.rng);
        drafted[row].p = p[token];
        if (verdict.accepted) {
          drafted[row].accepted = true;
          accepted++;
          more = !cacheChanged;
          if (cacheChanged) {
            end = 'cache-changed';
            next = { token, origin: 'draft', prob: p[token] };
          }
        } else {
          end = 'rejected';
          next = { token: verdict.correction!, origin: 'correction', prob: p[verdict.correction!] };
        }
      } else {
        end = proposal.tokens.length > 0 ? 'all-accepted' : 'no-draft';
        next = drawn(proposal.tokens.length > 0 ? 'bonus' : 'target');
      }
      if (more) return { next: true, nextSampleProb: p[proposal.tokens[row]], speculative: { round, row, origin } };
      verify = {
        drafter: this.drafter.spec,
        gamma,
        drafted,
        accepted,
        next: { id: next.token, piece: target.piece(next.token), origin: next.origin },
        end,
        draftMs,
        verifyMs: 0,
      };
      return { next: false, speculative: { round, row, origin, verify } };
    }, first.prob);
    const done = verify as VerifyTrace | null;
    if (!done) throw new Error('internal error: a verification round ended without a verdict');
    done.verifyMs = result.forwardMs;
    this.round_++;
    this.pending = { ...next, at: target.tokens.length, logits: target.nextTokenLogits! };
    this.stats.add(done, result.committed);
    this.drafter.observe?.({ context, drafted: proposal.tokens, accepted, next: next.token, targetProbs });
    return { steps: result.steps, verify: done };
  }

  /** Rounds until `maxTokens` tokens were fed, EOS, a full context or an abort (like Session.run). */
  async run(maxTokens: number, options: SpeculativeRunOptions = {}): Promise<SpeculativeRunResult> {
    const steps: StepTrace[] = [];
    const rounds: VerifyTrace[] = [];
    const stopAtEos = options.stopAtEos ?? true;
    const eos = this.target.model.manifest.tokenizer.eos_id;
    const { contextLength } = this.target.dims;
    while (steps.length < maxTokens) {
      if (options.signal?.aborted) return { steps, rounds, stopReason: 'aborted', message: 'stopped by the caller' };
      if (this.target.position > contextLength - 1) {
        return { steps, rounds, stopReason: 'context-full', message: `context is full: the next token would need position ${this.target.position}, but the model's context is ${contextLength}` };
      }
      const round = await this.round(maxTokens - steps.length, stopAtEos);
      steps.push(...round.steps);
      rounds.push(round.verify);
      await options.onRound?.(round);
      if (stopAtEos && round.steps.some((s) => s.token.id === eos)) return { steps, rounds, stopReason: 'eos', message: 'the model produced the end-of-sequence token' };
    }
    return { steps, rounds, stopReason: 'length' };
  }
}

function checkProposal(proposal: DraftProposal, gamma: number, vocabSize: number, spec: string): void {
  const n = proposal.tokens.length;
  if (n > gamma) throw new DraftSpecError(`drafter ${spec} proposed ${n} tokens where at most ${gamma} were asked for`);
  if (proposal.q.length !== n || proposal.confidence.length !== n) throw new DraftSpecError(`drafter ${spec} gave ${proposal.q.length} distributions and ${proposal.confidence.length} confidences for ${n} tokens`);
  proposal.tokens.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new DraftSpecError(`drafter ${spec} proposed token ${id} at position ${i}, outside the vocabulary (0..${vocabSize - 1})`);
    const q = proposal.q[i];
    if (q && (q.length !== vocabSize || !(q[id] > 0))) throw new DraftSpecError(`drafter ${spec}: the distribution of draft token ${i} must cover the vocabulary and give the token mass`);
  });
}
