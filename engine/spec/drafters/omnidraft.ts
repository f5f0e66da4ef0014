/**
 * OmniDraft (Ramakrishnan et al. 2025, "OmniDraft: A Cross-vocabulary, Online Adaptive Drafter for
 * On-device Speculative Decoding", arXiv 2507.02659; no reference code published). Read for its
 * online n-gram cache and its adaptive draft length; kvscope's draft model shares the target's
 * tokenizer, so the cache's cross-vocabulary role becomes an online n-gram model of the target.
 *
 * Reading chosen:
 * - The cache learns from every round (RoundOutcome): each token the target produced — accepted
 *   drafts and the correction or bonus — is counted under the 1 … n−1 tokens before it.
 * - Per draft position the drafter has up to two candidates: the draft model's (its sampling
 *   distribution) and the cache's (the counts under the longest suffix it holds). Each candidate's
 *   acceptance is predicted from (who proposes it, its confidence): a table of acceptance counts
 *   per (source, confidence decile), seeded with the confidence itself as a 2-observation prior
 *   and updated from what the target then accepted — OmniDraft trains an acceptance head online;
 *   a calibration table is the lightest thing that also learns online. Greedy takes the candidate
 *   with the higher prediction; sampling draws from their mixture, weighted by the predictions,
 *   and q is that mixture, so rejection sampling stays lossless.
 * - Adaptive length as OmniDraft (after SpecDec++): stop when the predicted probability that every
 *   draft so far survives, the product of the per-token predictions, falls below `threshold`.
 *   The first token is always proposed: its draft forward is already paid for.
 * - `model=none`: the cache alone drafts (no forward at all), proposing nothing where it has no entry.
 */
import { DraftSpecError } from '../../errors.ts';
import { softmax } from '../../metrics/softmax.ts';
import { samplingDistribution } from '../../sampling.ts';
import type { Drafter, DrafterDefinition, DraftProposal, DraftRequest, RoundOutcome } from '../drafter.ts';
import { formatDraftSpec } from '../spec.ts';
import { drawFromTarget } from '../verify.ts';
import { DraftCursor, loadDraftModel } from './session-drafter.ts';

type Source = 'model' | 'cache' | 'agree';

/** Counts of the target's next token under each suffix of 1 … order−1 tokens. */
export class NgramCache {
  private readonly table = new Map<string, Map<number, number>>();
  lookups = 0;
  hits = 0;

  constructor(readonly order: number) {}

  get entries(): number {
    return this.table.size;
  }

  /** Counts tokens[t] under the suffixes ending before t. */
  add(tokens: readonly number[], t: number): void {
    for (let k = 1; k <= Math.min(this.order - 1, t); k++) {
      const key = tokens.slice(t - k, t).join(',');
      let counts = this.table.get(key);
      if (!counts) this.table.set(key, (counts = new Map()));
      counts.set(tokens[t], (counts.get(tokens[t]) ?? 0) + 1);
    }
  }

  /** The counts under the longest suffix of `tokens` the cache holds. */
  lookup(tokens: readonly number[]): Map<number, number> | null {
    this.lookups++;
    for (let k = Math.min(this.order - 1, tokens.length); k >= 1; k--) {
      const counts = this.table.get(tokens.slice(tokens.length - k).join(','));
      if (counts) {
        this.hits++;
        return counts;
      }
    }
    return null;
  }
}

const PRIOR = 2;

/** Predicted acceptance per (source, confidence decile), learned from the target's verdicts. */
class AcceptanceCalibration {
  private readonly bins = new Map<string, { accepted: number; seen: number }>();

  private key(source: Source, confidence: number): string {
    return `${source}:${Math.min(9, Math.floor(confidence * 10))}`;
  }

  predict(source: Source, confidence: number): number {
    const bin = this.bins.get(this.key(source, confidence)) ?? { accepted: 0, seen: 0 };
    return (bin.accepted + PRIOR * confidence) / (bin.seen + PRIOR);
  }

  record(source: Source, confidence: number, accepted: boolean): void {
    const key = this.key(source, confidence);
    const bin = this.bins.get(key) ?? { accepted: 0, seen: 0 };
    bin.accepted += accepted ? 1 : 0;
    bin.seen++;
    this.bins.set(key, bin);
  }
}

interface Choice {
  token: number;
  q: Float64Array | null;
  source: Source;
  confidence: number;
  predicted: number;
  /**
   * the predicted acceptance of the position's leading candidate (what greedy would draft): known
   * before the draw, so whether to draft the position at all never depends on the token drawn
   */
  lead: number;
}

function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

export interface OmniDraftOptions {
  maxGamma: number;
  threshold: number;
  order: number;
  vocabSize: number;
  eos: number;
}

export class OmniDrafter implements Drafter {
  readonly cache: NgramCache;
  private readonly calibration = new AcceptanceCalibration();
  /** the last round's drafts, to score against its outcome */
  private pending: { contextLength: number; choices: Choice[] } | null = null;
  /** the tokens whose target tokens the cache has counted (a continuation is counted once) */
  private learned: readonly number[] = [];
  private gauge: number | null = null;
  private observed = { drafted: 0, accepted: 0 };

  constructor(
    readonly spec: string,
    private readonly options: OmniDraftOptions,
    private readonly cursor: DraftCursor | null,
  ) {
    this.cache = new NgramCache(options.order);
  }

  get gamma(): number {
    return this.options.maxGamma;
  }

  async propose(request: DraftRequest): Promise<DraftProposal> {
    const { threshold, eos } = this.options;
    const context = [...request.tokens];
    if (this.cursor) await this.cursor.start(request.tokens);
    const out: DraftProposal = { tokens: [], q: [], confidence: [] };
    const choices: Choice[] = [];
    let survive = 1;
    for (let i = 0; i < request.maxTokens; i++) {
      const choice = this.choose(context, request);
      if (!choice) break;
      // a later position that would sink the round's predicted survival is not worth a target row.
      // Decided on the position's lead, not on the drawn token: a token kept or dropped by its own
      // prediction would no longer be distributed as q, and verification would not be lossless.
      if (i > 0 && survive * choice.lead < threshold) break;
      survive *= choice.predicted;
      choices.push(choice);
      out.tokens.push(choice.token);
      out.q.push(choice.q);
      out.confidence.push(choice.confidence);
      context.push(choice.token);
      if (i === request.maxTokens - 1 || choice.token === eos || survive < threshold) break;
      if (this.cursor) {
        if (!this.cursor.canFeed) break;
        await this.cursor.feed(choice.token);
      }
    }
    this.pending = { contextLength: request.tokens.length, choices };
    this.gauge = choices.length ? choices.reduce((s, c) => s + c.predicted, 0) / choices.length : null;
    return out;
  }

  /** The next draft token after `context`, or null where neither the model nor the cache has one. */
  private choose(context: readonly number[], request: DraftRequest): Choice | null {
    const { vocabSize } = this.options;
    const greedy = request.sampler.temperature === 0;
    const logits = this.cursor?.logits ?? null;
    const counts = this.cache.lookup(context);
    if (!logits && !counts) return null;

    const modelQ = logits ? samplingDistribution(logits, request.sampler) : null;
    const modelP = logits ? softmax(logits) : null;
    let cacheQ: Float64Array | null = null;
    let cacheTotal = 0;
    if (counts) {
      cacheQ = new Float64Array(vocabSize);
      for (const [token, n] of counts) {
        cacheQ[token] = n;
        cacheTotal += n;
      }
      for (const token of counts.keys()) cacheQ[token] /= cacheTotal;
    }
    const modelTop = modelQ ? argmax(modelQ) : -1;
    const cacheTop = cacheQ ? argmax(cacheQ) : -1;
    // a cache entry seen once is worth half a certain one
    const shrink = cacheTotal / (cacheTotal + 1);
    const score = (token: number): { source: Source; confidence: number; predicted: number } => {
      const fromModel = modelP ? modelP[token] : 0;
      const fromCache = cacheQ ? cacheQ[token] * shrink : 0;
      const source: Source = token === modelTop && token === cacheTop ? 'agree' : fromCache > fromModel ? 'cache' : 'model';
      const confidence = Math.max(fromModel, fromCache);
      return { source, confidence, predicted: this.calibration.predict(source, confidence) };
    };

    if (!cacheQ || !modelQ) {
      const q = (cacheQ ?? modelQ)!;
      const top = argmax(q);
      const lead = score(top).predicted;
      const token = greedy ? top : drawFromTarget(q, request.rng);
      return { token, q: greedy ? null : q, lead, ...score(token) };
    }
    const fromModel = score(modelTop);
    const fromCache = score(cacheTop);
    const lead = Math.max(fromCache.predicted, fromModel.predicted);
    if (greedy) {
      const token = fromCache.predicted > fromModel.predicted ? cacheTop : modelTop;
      return { token, q: null, lead, ...(token === cacheTop ? fromCache : fromModel) };
    }
    const w = fromCache.predicted / (fromCache.predicted + fromModel.predicted || 1);
    const q = new Float64Array(vocabSize);
    for (let i = 0; i < vocabSize; i++) q[i] = (1 - w) * modelQ[i] + w * cacheQ[i];
    const token = drawFromTarget(q, request.rng);
    return { token, q, lead, ...score(token) };
  }

  observe(outcome: RoundOutcome): void {
    const pending = this.pending;
    this.pending = null;
    if (pending && pending.contextLength === outcome.context.length) {
      // draft i was verified iff the target produced a distribution for it
      pending.choices.forEach((choice, i) => {
        if (i >= outcome.targetProbs.length || i >= outcome.drafted.length) return;
        const accepted = i < outcome.accepted;
        this.calibration.record(choice.source, choice.confidence, accepted);
        this.observed.drafted++;
        if (accepted) this.observed.accepted++;
      });
    }
    const sequence = [...outcome.context, ...outcome.drafted.slice(0, outcome.accepted), outcome.next];
    let shared = 0;
    while (shared < this.learned.length && shared < sequence.length && this.learned[shared] === sequence[shared]) shared++;
    // a fresh context (prompt, reset, hand-stepped target): only its last token is known to be the target's
    for (let t = Math.max(shared, outcome.context.length - 1); t < sequence.length; t++) this.cache.add(sequence, t);
    this.learned = sequence;
  }

  describe(): Record<string, number | string> {
    return {
      cache_entries: this.cache.entries,
      cache_lookups: this.cache.lookups,
      cache_hits: this.cache.hits,
      predicted_acceptance: this.gauge ?? 0,
      observed_acceptance: this.observed.drafted ? this.observed.accepted / this.observed.drafted : 0,
    };
  }
}

export const omnidraftDrafter: DrafterDefinition = {
  id: 'omnidraft',
  label: 'OmniDraft (online n-gram cache, adaptive length)',
  description: 'the draft model and an online n-gram cache of the target\'s tokens propose; drafting stops when the predicted acceptance, calibrated online, falls below a threshold',
  paper: { short: 'Ramakrishnan et al., 2025 (NeurIPS)', title: 'OmniDraft: A Cross-vocabulary, Online Adaptive Drafter for On-device Speculative Decoding', url: 'https://arxiv.org/abs/2507.02659' },
  params: [
    { kind: 'int', name: 'max_gamma', description: 'most tokens drafted per round', default: 8, min: 1, max: 32 },
    { kind: 'float', name: 'threshold', description: 'stop drafting when the predicted chance that every draft so far is accepted falls below this', default: 0.1, min: 0.01, max: 0.99 },
    { kind: 'int', name: 'n', description: 'n-gram order of the cache (suffixes of up to n−1 tokens)', default: 4, min: 2, max: 8 },
    { kind: 'text', name: 'model', description: 'draft model id (empty = the one the target\'s manifest names; none = the cache alone)', default: '', pattern: /^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, patternText: 'a model id such as kvscope-draft-2l, or none' },
    { kind: 'policy', name: 'policy', description: 'the draft model\'s own KV-cache policy', default: 'full' },
  ],
  gammaParam: 'max_gamma',
  example: { spec: 'omnidraft:max_gamma=8', what: 'draft model + online n-gram cache, adaptive γ' },
  async create(params, env) {
    const id = String(params.model);
    const draft = id === 'none' ? null : await loadDraftModel(id, env, 'omnidraft');
    const canonical = formatDraftSpec({ id: 'omnidraft', params: { ...params, model: draft ? id || env.target.manifest.draft || '' : 'none' } }, [omnidraftDrafter]);
    const threshold = Number(params.threshold);
    if (!(threshold > 0 && threshold < 1)) throw new DraftSpecError(`omnidraft: threshold must lie in (0, 1), got ${threshold}`);
    const options: OmniDraftOptions = {
      maxGamma: Number(params.max_gamma),
      threshold,
      order: Number(params.n),
      vocabSize: env.target.manifest.architecture.vocab_size,
      eos: env.target.manifest.tokenizer.eos_id,
    };
    return new OmniDrafter(canonical, options, draft ? new DraftCursor(draft, String(params.policy)) : null);
  },
};
