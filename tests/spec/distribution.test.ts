/**
 * At temperature > 0 speculative decoding samples from the target's own distribution: over
 * thousands of seeded short runs (prefill, then run(2): a plain target draw, then one drafted token
 * verified by accept-or-residual) the first and second tokens pass a chi-square test against the
 * target's exact distributions — p(x1) and Σ_x1 p(x1)·p(x2 | x1) — and so does the joint (x1, x2).
 * The drafters are test doubles whose q differs from p on purpose (a sampled q with mass where p has
 * none, and a one-hot q), so both acceptances and residual draws happen. Everything is seeded: the
 * statistics are fixed numbers, far from the threshold.
 *
 * The target is the tiny fixture network with its logits restricted to six tokens (every other logit
 * set to −1e4, so its probability is exactly 0): a small support without top-k, whose candidate sort
 * over the 4,096-token vocabulary would cost several ms per distribution and make 2 × 2,400 runs slow
 * on two cores. The six tokens' probabilities are the network's own and depend on the context.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { samplingDistribution, Xoshiro128, type SamplerOptions } from '../../engine/sampling.ts';
import { Session, type EngineModel, type SessionSnapshot } from '../../engine/session.ts';
import { SpeculativeDecoder, type Drafter, type DraftProposal, type DraftRequest } from '../../engine/spec/index.ts';
import { drawToken } from '../../engine/spec/verify.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { chiSquare } from './helpers/stats.ts';

const RUNS = 2000;
/** generous for a loaded two-core machine (~10–15 s of CPU per test) */
const TIMEOUT = 120_000;
const ALPHA = 1e-3;
const SAMPLER: SamplerOptions = { temperature: 0.7, seed: 20250101 };
/** the fixture's six most likely tokens after PROMPT, ascending ids */
const SUPPORT = [424, 743, 2418, 2589, 3156, 3639];
const PROMPT = [1, ...tokenSequence(12, 4242)];

interface Exact {
  vocab: number;
  /** p(x1) */
  first: Float64Array;
  /** x1 → p(x2 | x1) */
  given: Map<number, Float64Array>;
  /** Σ_x1 p(x1) p(x2 | x1) */
  second: Float64Array;
}

function support(p: Float64Array): number[] {
  const ids: number[] = [];
  p.forEach((v, i) => {
    if (v > 0) ids.push(i);
  });
  return ids;
}

/** Sparse counts → dense observed/expected over the cells that either has, for chiSquare. */
function fit(counts: Map<number, number>, probabilities: Map<number, number>): ReturnType<typeof chiSquare> {
  const cells = [...new Set([...counts.keys(), ...probabilities.keys()])];
  return chiSquare(
    cells.map((c) => counts.get(c) ?? 0),
    cells.map((c) => probabilities.get(c) ?? 0),
  );
}

function dense(p: Float64Array): Map<number, number> {
  return new Map(support(p).map((i) => [i, p[i]]));
}

function count(values: readonly number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const v of values) out.set(v, (out.get(v) ?? 0) + 1);
  return out;
}

/**
 * Drafts one token after the round's first token with a fixed q unlike the target's p(· | x1):
 * `sampled` draws from q = 0.45 on p's least likely token, 0.25 on a token p never gives (always
 * rejected), the rest spread evenly over p's other tokens; `one-hot` always proposes p's second most
 * likely token with q = 1 (a lookup-style drafter).
 */
class SkewedDrafter implements Drafter {
  readonly gamma = 1;
  drafts: number[] = [];
  constructor(
    readonly spec: string,
    private readonly exact: Exact,
    private readonly mode: 'sampled' | 'one-hot',
  ) {}

  qFor(x1: number): { q: Float64Array | null; token: (u: number) => number } {
    const p = this.exact.given.get(x1)!;
    const ids = support(p).sort((a, b) => p[a] - p[b] || a - b); // least likely first
    if (this.mode === 'one-hot') return { q: null, token: () => ids[ids.length - 2] };
    const q = new Float64Array(this.exact.vocab);
    const outside = 4; // outside SUPPORT: p = 0
    q[ids[0]] = 0.45;
    q[outside] = 0.25;
    for (const id of ids.slice(1)) q[id] = 0.3 / (ids.length - 1);
    return { q, token: (u) => drawToken(q, u) };
  }

  async propose(request: DraftRequest): Promise<DraftProposal> {
    expect(request.sampler.temperature).toBe(SAMPLER.temperature);
    const x1 = request.tokens[request.tokens.length - 1];
    const { q, token } = this.qFor(x1);
    const d = token(request.rng.nextFloat());
    this.drafts.push(d);
    return { tokens: [d], q: [q], confidence: [q ? q[d] : 1] };
  }
}

/** The fixture with every logit outside SUPPORT pushed to −1e4 (exp underflows to exactly 0). */
function restricted(model: EngineModel): EngineModel {
  const keep = new Set(SUPPORT);
  return {
    ...model,
    forward: {
      dims: model.forward.dims,
      async run(request) {
        const result = await model.forward.run(request);
        const logits = result.logits.slice();
        const vocab = model.forward.dims.vocabSize;
        for (let i = 0; i < logits.length; i++) if (!keep.has(i % vocab)) logits[i] = -1e4;
        return { ...result, logits };
      },
    },
  };
}

let exact: Exact;
let session: Session;
let start: SessionSnapshot;

beforeAll(async () => {
  session = new Session(restricted(await fixtureModel()), { sampler: SAMPLER, trace: { attention: false, fullSteps: 0, topTokens: 0, attentionTop: 0 } });
  await session.prefill(PROMPT);
  start = session.snapshot();
  const options = session.samplerOptions;
  const first = samplingDistribution(session.nextTokenLogits!, options);
  const vocab = first.length;
  const given = new Map<number, Float64Array>();
  const second = new Float64Array(vocab);
  for (const x1 of support(first)) {
    session.restore(start);
    await session.step({ token: x1 });
    const p = samplingDistribution(session.nextTokenLogits!, options);
    given.set(x1, p);
    for (let i = 0; i < vocab; i++) second[i] += first[x1] * p[i];
  }
  session.restore(start);
  exact = { vocab, first, given, second };
});

describe('temperature > 0: speculative sampling has the target distribution', () => {
  it('the setting is the intended one: six-token supports, no token dominates, p(x2 | x1) depends on x1', () => {
    expect(support(exact.first)).toEqual(SUPPORT);
    for (const p of exact.given.values()) expect(support(p)).toEqual(SUPPORT);
    expect(Math.max(...exact.first)).toBeLessThan(0.8);
    expect(Math.min(...SUPPORT.map((i) => exact.first[i]))).toBeGreaterThan(0.02);
    const conditionals = [...exact.given.values()];
    expect(Math.max(...SUPPORT.map((i) => Math.abs(conditionals[0][i] - conditionals[1][i])))).toBeGreaterThan(0.01);
    expect(exact.second.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
  });

  for (const mode of ['sampled', 'one-hot'] as const) {
    it(`${mode} q ≠ p: first, second and joint tokens over ${RUNS} runs pass chi-square at α = ${ALPHA}`, async () => {
      const drafter = new SkewedDrafter(`test:${mode}`, exact, mode);
      const decoder = new SpeculativeDecoder(session, drafter);
      const firsts: number[] = [];
      const seconds: number[] = [];
      const joint: number[] = [];
      let accepted = 0;
      let rejected = 0;
      for (let run = 0; run < RUNS; run++) {
        session.restore(start);
        const result = await decoder.run(2, { stopAtEos: false });
        expect(result.steps.length).toBe(2);
        const [x1, x2] = result.steps.map((s) => s.token.id);
        firsts.push(x1);
        seconds.push(x2);
        joint.push(x1 * exact.vocab + x2);
        const verify = result.rounds[0];
        expect(verify.drafted.length).toBe(1);
        if (verify.accepted === 1) {
          accepted++;
          expect(result.steps[1].speculative?.origin).toBe('draft');
        } else {
          rejected++;
          expect(verify.end).toBe('rejected');
          expect(result.steps[1].speculative?.origin).toBe('correction');
        }
      }
      // both paths really ran, in the proportions Σ min(p, q) predicts (roughly)
      expect(accepted).toBeGreaterThan(RUNS * 0.1);
      expect(rejected).toBeGreaterThan(RUNS * 0.1);
      let predicted = 0;
      for (const [x1, p] of exact.given) {
        const { q, token } = drafter.qFor(x1);
        let overlap = 0;
        if (q) for (let i = 0; i < p.length; i++) overlap += Math.min(p[i], q[i]);
        else overlap = p[token(0)];
        predicted += exact.first[x1] * overlap;
      }
      expect(Math.abs(accepted / RUNS - predicted)).toBeLessThan(4 * Math.sqrt((predicted * (1 - predicted)) / RUNS));

      const first = fit(count(firsts), dense(exact.first));
      const second = fit(count(seconds), dense(exact.second));
      const jointP = new Map<number, number>();
      for (const [x1, p] of exact.given) for (const x2 of support(p)) jointP.set(x1 * exact.vocab + x2, exact.first[x1] * p[x2]);
      const pair = fit(count(joint), jointP);
      expect(first.pValue, `first token χ² = ${first.statistic} (df ${first.df})`).toBeGreaterThan(ALPHA);
      expect(second.pValue, `second token χ² = ${second.statistic} (df ${second.df})`).toBeGreaterThan(ALPHA);
      expect(pair.pValue, `joint χ² = ${pair.statistic} (df ${pair.df})`).toBeGreaterThan(ALPHA);
      // the test has power: the drafts themselves are not distributed as p(x2)
      const draftFit = fit(count(drafter.drafts), dense(exact.second));
      expect(draftFit.pValue).toBeLessThan(1e-9);
    }, TIMEOUT);
  }

  it('a verifier that accepted every draft would fail the same test (sanity of the harness)', () => {
    // second tokens if every sampled draft were kept: x1 ~ p, x2 ~ q(· | x1)
    const drafter = new SkewedDrafter('test:sampled', exact, 'sampled');
    const rng = new Xoshiro128(77);
    const seconds: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const x1 = drawToken(exact.first, rng.nextFloat());
      seconds.push(drafter.qFor(x1).token(rng.nextFloat()));
    }
    expect(fit(count(seconds), dense(exact.second)).pValue).toBeLessThan(1e-9);
  });
});
