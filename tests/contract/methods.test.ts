/**
 * The registry's contract suite (issue 7 §7, kvpress's `tests/default_presses.py` lesson): every
 * registered method, and every composition listed below, runs the same checks on the tiny fixture
 * model (2 layers, 4 query / 2 KV heads: GQA group 2, context 256). A new method gets the suite by
 * being registered in engine/policies/index.ts.
 *
 * Checks: attach mid-run; snapshot / restore / fork give the same tokens and logits; every head
 * stays within the budget the method recorded (plus the tokens appended since, for methods that
 * decide at prefill only); no head is ever empty; no NaN or Inf in logits or the cache; ragged
 * per-head lengths handed over; prompts of 1 token and of the full context; budgets 1, 2 and 3
 * (each either works within its bound or is refused with a PolicySpecError); speculative
 * verification (blocks of drafted tokens checked in one forward, engine/spec/) decodes exactly the
 * tokens plain greedy decoding does under the method.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { Calibration } from '../../engine/calibration/format.ts';
import { PolicySpecError, ContextFullError } from '../../engine/errors.ts';
import { BUDGET_RULES, specForBudget } from '../../engine/eval/budgets.ts';
import type { LoadedModel } from '../../engine/model/load.ts';
import { POLICIES } from '../../engine/policies/index.ts';
import { Session } from '../../engine/session.ts';
import { createDrafter, SpeculativeDecoder } from '../../engine/spec/index.ts';
import type { TraceEvent } from '../../engine/trace/schema.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { manifestCalibration, tinyCalibration } from '../policies/helpers/calibration.ts';

/** Compositions checked like single methods (members run in the order written). */
const COMPOSITIONS = [
  'h2o:heavy=8,recent=8 + window:size=12',
  'snapkv:budget=24,window=4 + streaming:sinks=2,recent=14',
  'window:size=40 + razor:recent=10',
  // merging after eviction, as MiniCache composes; start=0 pairs the fixture's two layers
  'streaming:sinks=2,recent=14 + minicache:start=0,recent=2,block=2',
  'minicache:start=0,retain_by=joint',
  // quantizing what an eviction keeps; G and R small enough to flush key blocks on the fixture
  'h2o:heavy=8,recent=8 + kivi:group=4,residual=8',
  // channel pruning after a token selection; window/recent small enough to prune on the fixture
  'snapkv:budget=24,window=4 + think:ratio=0.4,window=8,recent=8,block=2,decode=prune',
  // encoding chunks while decoding (the default chunk of 256 fills only at the fixture's full context)
  'streaming:sinks=2,recent=14 + cachegen:chunk=8',
  // quantizing after channel pruning; GEAR blocks small enough to compress while decoding
  'think:ratio=0.5,window=4,recent=4 + gear:group=8,block=8',
];

/** Each registered method at budget 16 (eval/budgets.ts), or with its defaults when it has no budget. */
const SINGLES = POLICIES.map((p) => (BUDGET_RULES[p.id] ? specForBudget(p.id, 16) : p.id));
const SPECS = [...SINGLES, ...COMPOSITIONS];

let model: LoadedModel;
let calibration: Calibration;

beforeAll(async () => {
  model = await fixtureModel();
  calibration = manifestCalibration(model.manifest, await tinyCalibration());
});

function session(policy: string, seed = 3): Session {
  return new Session(model, { policy, sampler: { seed, temperature: 1 }, prefillChunk: 32, calibration });
}

/** Checks every head after the newest event: not empty, within the recorded budget, finite. */
class Invariants {
  private bounds: number[][] | null = null;
  private appended = 0;

  constructor(private readonly s: Session) {}

  check(where: string): void {
    const events = this.s.trace.all();
    const event: TraceEvent = events[events.length - 1];
    if (event.decision.budgets) {
      this.bounds = event.decision.budgets;
      this.appended = 0;
    } else if (event.kind === 'step') {
      this.appended++;
    }
    const { nLayers, nKvHeads } = this.s.dims;
    for (let l = 0; l < nLayers; l++) {
      for (let h = 0; h < nKvHeads; h++) {
        const n = this.s.cache.length(l, h);
        expect(n, `${where}: layer ${l} head ${h} is empty`).toBeGreaterThanOrEqual(1);
        if (this.bounds) expect(n, `${where}: layer ${l} head ${h} over its budget`).toBeLessThanOrEqual(this.bounds[l][h] + this.appended);
        for (const x of this.s.cache.keys(l, h)) if (!Number.isFinite(x)) throw new Error(`${where}: non-finite key in layer ${l} head ${h}`);
        for (const x of this.s.cache.values(l, h)) if (!Number.isFinite(x)) throw new Error(`${where}: non-finite value in layer ${l} head ${h}`);
      }
    }
    for (const x of this.s.nextTokenLogits ?? []) if (!Number.isFinite(x)) throw new Error(`${where}: non-finite logit`);
  }
}

async function steps(s: Session, n: number, invariants: Invariants, label: string): Promise<number[]> {
  const tokens: number[] = [];
  for (let i = 0; i < n; i++) {
    try {
      tokens.push((await s.step()).token.id);
    } catch (error) {
      if (error instanceof ContextFullError) break;
      throw error;
    }
    invariants.check(`${label} step ${i}`);
  }
  return tokens;
}

const prompt = (n: number) => [1, ...tokenSequence(n - 1, 11)];

describe.each(SPECS)('contract: %s', (spec) => {
  it('prefill + decode: within budget, never empty, finite', async () => {
    const s = session(spec);
    const invariants = new Invariants(s);
    await s.prefill(prompt(80));
    invariants.check('prefill');
    await steps(s, 12, invariants, 'decode');
  });

  it('attached mid-run says what it does without history and keeps the invariants', async () => {
    const s = session('full');
    await s.prefill(prompt(80));
    await s.step();
    const event = s.setPolicy(spec);
    expect(event.to).toBe(s.policySpec);
    const invariants = new Invariants(s);
    invariants.check('attach');
    if (s.policySpec !== 'full') expect(event.withoutHistory ?? '', 'a method must say how it starts without history').not.toBe('');
    await steps(s, 6, invariants, 'after attach');
  });

  it('snapshot / restore and fork reproduce tokens and logits exactly', async () => {
    const s = session(spec);
    await s.prefill(prompt(70));
    for (let i = 0; i < 3; i++) await s.step();
    const snapshot = s.snapshot();
    const fork = s.fork();
    const run = async (x: Session) => {
      const out: { tokens: number[]; logits: number[] } = { tokens: [], logits: [] };
      for (let i = 0; i < 6; i++) {
        out.tokens.push((await x.step()).token.id);
        out.logits.push(...x.nextTokenLogits!.subarray(0, 16));
      }
      return out;
    };
    const first = await run(s);
    s.restore(snapshot);
    expect(await run(s)).toEqual(first);
    expect(await run(fork)).toEqual(first);
  });

  it('speculative verification decodes the tokens plain greedy decoding does', async () => {
    const greedy = () => new Session(model, { policy: spec, sampler: { temperature: 0 }, prefillChunk: 32, calibration });
    const plain = greedy();
    await plain.prefill(prompt(70));
    const expected = (await plain.run(20, { stopAtEos: false })).steps.map((s) => s.token.id);
    const s = greedy();
    await s.prefill(prompt(70));
    // the target itself on a full cache drafts: most drafts are accepted, so blocks of several rows are committed
    const decoder = new SpeculativeDecoder(s, (await createDrafter('self:gamma=4,policy=full', { target: model }))!);
    const { steps: fed } = await decoder.run(20, { stopAtEos: false });
    expect(fed.map((x) => x.token.id)).toEqual(expected);
    expect(s.cache.memory().entries).toEqual(plain.cache.memory().entries);
  });

  it('takes over ragged per-head lengths', async () => {
    const s = session('full');
    await s.prefill(prompt(60));
    const n = s.cache.length(0, 0);
    const range = (a: number, b: number) => Int32Array.from({ length: b - a }, (_, i) => a + i);
    s.cache.apply({ layers: [[{ keep: range(0, n - 7) }, null], [null, { keep: range(5, n) }]] });
    s.setPolicy(spec);
    const invariants = new Invariants(s);
    invariants.check('ragged attach');
    await steps(s, 5, invariants, 'ragged');
  });

  it('prompts of one token and of the full context', async () => {
    const one = session(spec);
    const invariants = new Invariants(one);
    await one.prefill([1]);
    invariants.check('one-token prefill');
    await steps(one, 4, invariants, 'one-token');
    const full = session(spec);
    const fullInvariants = new Invariants(full);
    await full.prefill(prompt(model.manifest.architecture.context_length));
    fullInvariants.check('full-context prefill');
    await steps(full, 2, fullInvariants, 'full-context');
  });
});

describe.each(POLICIES.filter((p) => p.params.some((param) => param.budget)).map((p) => p.id))('contract: %s at budgets 1, 2, 3', (id) => {
  it.each([1, 2, 3])('budget %i works within its bound or is refused clearly', async (budget) => {
    const definition = POLICIES.find((p) => p.id === id)!;
    const spec = `${id}:${definition.params.filter((p) => p.budget).map((p) => `${p.name}=${budget}`).join(',')}`;
    let s: Session;
    try {
      s = session(spec);
    } catch (error) {
      expect(error).toBeInstanceOf(PolicySpecError);
      expect((error as Error).message).toMatch(new RegExp(id));
      return;
    }
    const invariants = new Invariants(s);
    await s.prefill(prompt(40));
    invariants.check('prefill');
    await steps(s, 4, invariants, 'decode');
  });
});
