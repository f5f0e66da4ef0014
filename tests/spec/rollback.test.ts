/**
 * "After a rejection both caches equal caches built without the rejected tokens":
 * (a) the target's cache after a rejecting round = a fresh session fed the same tokens step by step;
 * (b) the draft model's session, rewound in the next propose(), = a fresh draft session fed only the kept tokens,
 *     under an evicting draft policy;
 * (c) Session.speculate / rewindSpeculation / settle on the tiny fixture: rewinding k of n steps is exactly the
 *     session that took n − k steps, under policies that evict or re-encode.
 */
import { describe, expect, it } from 'vitest';
import { SessionError } from '../../engine/errors.ts';
import { POLICIES } from '../../engine/policies/index.ts';
import { intParam, NO_CHANGE, type PolicyDefinition, type PolicyNeeds } from '../../engine/policies/types.ts';
import { DEFAULT_SAMPLER, Xoshiro128 } from '../../engine/sampling.ts';
import { Session, type EngineModel } from '../../engine/session.ts';
import { SessionDrafter } from '../../engine/spec/drafters/session-drafter.ts';
import { createDrafter, SpeculativeDecoder } from '../../engine/spec/index.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { expectSameCache } from './helpers/cache.ts';
import { shippedModel } from './helpers/models.ts';

const model = shippedModel;
const PROMPT_TEXT = 'Once upon a time there was a little fox. The little fox lived in a wood. Once upon a time there was a';

/** The policy's own state (scores, counters), as snapshots keep it; readable inside a speculative section too. */
function policyState(session: Session): unknown {
  return (session.policy as { getState(scope: 'session'): unknown }).getState('session');
}

function expectSameLogits(actual: Float32Array | null, expected: Float32Array | null, tolerance: number): void {
  expect(actual).not.toBeNull();
  expect(expected).not.toBeNull();
  expect(actual!.length).toBe(expected!.length);
  if (tolerance === 0) {
    expect(Array.from(actual!)).toEqual(Array.from(expected!));
    return;
  }
  let worst = 0;
  for (let i = 0; i < actual!.length; i++) worst = Math.max(worst, Math.abs(actual![i] - expected![i]));
  expect(worst).toBeLessThanOrEqual(tolerance);
}

/** A fresh session on `model` fed `prompt` by prefill and then `steps` by forced steps. */
async function replay(engine: EngineModel, policy: string, prompt: readonly number[], steps: readonly number[]): Promise<Session> {
  const session = new Session(engine, { policy });
  await session.prefill(prompt);
  for (const token of steps) await session.step({ token });
  return session;
}

describe('(a) the target after a rejection = the target fed only the kept tokens', () => {
  for (const [drafterSpec, policy] of [
    ['lookup', 'full'],
    ['model', 'h2o:heavy=16,recent=16'],
    ['model', 'kivi:residual=8,group=8'],
    ['self:policy=streaming(sinks=2,recent=8)', 'snapkv:budget=24'],
  ] as const) {
    it(`${drafterSpec} drafting for a ${policy} target`, async () => {
      const target = await model('kvscope-llama-8l');
      const prompt = target.tokenizer!.encode(PROMPT_TEXT);
      const drafter = (await createDrafter(drafterSpec, { target, loadModel: (id) => model(id) }))!;
      const session = new Session(target, { policy });
      await session.prefill(prompt);
      const decoder = new SpeculativeDecoder(session, drafter);
      let checked = 0;
      for (let r = 0; r < 12 && checked < 2; r++) {
        const { verify, steps } = await decoder.round();
        // the forward fed the rejected draft (and any after it): the cache must not hold them
        if (verify.end !== 'rejected') continue;
        expect(steps.length).toBe(verify.accepted + 1);
        // none of the tokens after the rejected one was kept
        expect(session.tokens.length).toBe(prompt.length + session.stepCount);
        const fresh = await replay(target, policy, prompt, session.tokens.slice(prompt.length));
        expect(session.tokens).toEqual(fresh.tokens);
        expect(session.position).toBe(fresh.position);
        expectSameCache(session.cache, fresh.cache, 1e-4, `${drafterSpec} / ${policy} round ${r}`);
        expectSameLogits(session.nextTokenLogits, fresh.nextTokenLogits, 1e-3);
        expect(session.memory().entries).toEqual(fresh.memory().entries);
        checked++;
      }
      expect(checked, 'rounds that rejected drafted tokens').toBeGreaterThan(0);
    });
  }
});

describe('(b) the draft session after the rewind = a fresh draft session fed only the kept tokens', () => {
  it('model drafter with policy=h2o(heavy=8,recent=8): bit-exact after every rejecting round', async () => {
    const target = await model('kvscope-llama-8l');
    const draftModel = await model('kvscope-draft-2l');
    const prompt = target.tokenizer!.encode(PROMPT_TEXT);
    const draftPolicy = 'h2o:heavy=8,recent=8';
    const drafter = (await createDrafter('model:gamma=5,policy=h2o(heavy=8,recent=8)', { target, loadModel: (id) => model(id) })) as SessionDrafter;
    expect(drafter).toBeInstanceOf(SessionDrafter);
    expect(drafter.policySpec).toBe('h2o:heavy=8,recent=8,accumulate=sum,gqa=sum');
    const session = new Session(target);
    await session.prefill(prompt);
    const decoder = new SpeculativeDecoder(session, drafter);
    const draft = drafter.draftSession;
    let firstContext: number[] | null = null;
    let checked = 0;
    let fedRejected = 0;
    for (let r = 0; r < 10; r++) {
      const { verify } = await decoder.round();
      firstContext ??= draft.tokens.slice(0, draft.tokens.length - draft.speculativeSteps);
      if (verify.end !== 'rejected' || verify.drafted.length < 2) continue;
      const kept = [...session.tokens, verify.next.id];
      // the draft session fed the rejected draft (and maybe more) whenever it was not the round's last
      let shared = 0;
      while (shared < Math.min(draft.tokens.length, kept.length) && draft.tokens[shared] === kept[shared]) shared++;
      if (verify.accepted < verify.drafted.length - 1) {
        expect(shared).toBeLessThan(draft.tokens.length);
        fedRejected++;
      }
      // next round's propose rewinds them; one draft token asked for, so the section stays empty
      const proposal = await drafter.propose({ tokens: kept, maxTokens: 1, sampler: { ...DEFAULT_SAMPLER }, rng: new Xoshiro128(1) });
      expect(proposal.tokens.length).toBe(1);
      expect(draft.speculating).toBe(true);
      expect(draft.speculativeSteps).toBe(0);
      expect(draft.tokens).toEqual(kept);
      // the first round prefilled its context; every token after it was one step
      const fresh = await replay(draftModel, draftPolicy, firstContext, kept.slice(firstContext.length));
      expect(draft.position).toBe(fresh.position);
      expect(draft.stepCount).toBe(fresh.stepCount);
      expectSameCache(draft.cache, fresh.cache, 0, `draft after round ${r}`);
      expectSameLogits(draft.nextTokenLogits, fresh.nextTokenLogits, 0);
      // the evicting policy's own state (accumulated scores) too
      expect(policyState(draft)).toEqual(policyState(fresh));
      expect(draft.trace.length).toBe(fresh.trace.length);
      // h2o really evicted: the draft holds 16 entries per head
      expect(draft.memory().entries.flat().every((n) => n === 16)).toBe(true);
      checked++;
    }
    expect(checked, 'rounds that rejected drafted tokens').toBeGreaterThan(0);
    expect(fedRejected, 'rounds whose rejected drafts the draft session had fed').toBeGreaterThan(0);
  });
});

// ---- (c) speculative sections on the fixture model ------------------------------------------------

const PROMPT = [1, ...tokenSequence(24, 7)];
/** evicting (h2o, tova), re-encoding (kivi), merging with JS-side state (d2o's threshold), a counter kept outside the cache (flaky) */
const SECTION_POLICIES = ['full', 'h2o:heavy=6,recent=6', 'kivi:bits=2,group=4,residual=4', 'tova:budget=12', 'd2o:heavy=6,recent=6', 'h2o:heavy=8,recent=8 + kivi:group=4,residual=4 + flaky:at=999'];

async function fixtureSession(policy: string): Promise<Session> {
  const session = new Session(await fixtureModel(), { policy, registry: REGISTRY, sampler: { seed: 11, temperature: 1 } });
  await session.prefill(PROMPT);
  return session;
}

/** Everything that makes a session's future: tokens, positions, pending logits, cache, policy state, sampler, trace. */
function expectSameSession(actual: Session, expected: Session, what: string): void {
  expect(actual.tokens, `${what}: tokens`).toEqual(expected.tokens);
  expect(actual.position, `${what}: position`).toBe(expected.position);
  expect(actual.stepCount, `${what}: stepCount`).toBe(expected.stepCount);
  expect(actual.trace.length, `${what}: trace length`).toBe(expected.trace.length);
  expectSameLogits(actual.nextTokenLogits, expected.nextTokenLogits, 0);
  expectSameCache(actual.cache, expected.cache, 0, what);
  expect(actual.memory(), `${what}: memory`).toEqual(expected.memory());
}

describe('(c) rewinding k of n speculative steps = taking n − k steps', () => {
  const N = 6;
  for (const policy of SECTION_POLICIES) {
    it(`${policy}: every k, bit for bit, and both continue alike`, async () => {
      for (let k = 0; k <= N; k++) {
        const spec = await fixtureSession(policy);
        spec.speculate();
        expect(spec.speculating).toBe(true);
        for (let i = 0; i < N; i++) await spec.step();
        expect(spec.speculativeSteps).toBe(N);
        spec.rewindSpeculation(N - k);
        expect(spec.speculativeSteps).toBe(N - k);

        const plain = await fixtureSession(policy);
        for (let i = 0; i < N - k; i++) await plain.step();
        // inside the section already
        expectSameSession(spec, plain, `${policy}, rewound ${k} of ${N} (open section)`);
        spec.settle();
        expect(spec.speculating).toBe(false);
        expectSameSession(spec, plain, `${policy}, rewound ${k} of ${N} (settled)`);
        const a = spec.snapshot();
        const b = plain.snapshot();
        expect(a.policy.state, 'policy state').toEqual(b.policy.state);
        if (policy.includes('flaky')) expect((a.policy.state as { calls: number }[])[2]).toEqual({ calls: 1 + N - k });
        expect(a.sampler, 'sampler').toEqual(b.sampler);
        expect(spec.trace.steps().map((s) => s.token.id)).toEqual(plain.trace.steps().map((s) => s.token.id));
        // the futures agree: sampled tokens (sampler state), decisions (policy state), cache
        for (let i = 0; i < 4; i++) {
          const [x, y] = [await spec.step(), await plain.step()];
          expect(x.token.id).toBe(y.token.id);
          expect(x.decision).toEqual(y.decision);
        }
        expectSameSession(spec, plain, `${policy}, rewound ${k} of ${N}, 4 steps on`);
      }
    });
  }

  it('rewind in stages, take other steps, rewind again: still the plain session', async () => {
    const policy = 'h2o:heavy=6,recent=6 + kivi:group=4,residual=4';
    const spec = await fixtureSession(policy);
    spec.speculate();
    for (const t of [5, 6, 7, 8, 9]) await spec.step({ token: t });
    spec.rewindSpeculation(3);
    spec.rewindSpeculation(3); // keeping them all is a no-op
    for (const t of [20, 21]) await spec.step({ token: t });
    spec.rewindSpeculation(4);
    spec.rewindSpeculation(1);
    await spec.step({ token: 30 });
    spec.settle();
    const plain = await fixtureSession(policy);
    for (const t of [5, 30]) await plain.step({ token: t });
    expectSameSession(spec, plain, 'staged rewinds');
    expect(spec.snapshot().policy.state).toEqual(plain.snapshot().policy.state);
    // a second section after settling works the same way
    spec.speculate();
    await spec.step({ token: 40 });
    spec.rewindSpeculation(0);
    spec.settle();
    expectSameSession(spec, plain, 'second section');
  });

  it('a section that is rewound entirely is the session before it', async () => {
    const spec = await fixtureSession('tova:budget=12');
    const before = await fixtureSession('tova:budget=12');
    spec.speculate();
    for (let i = 0; i < 5; i++) await spec.step();
    spec.rewindSpeculation(0);
    spec.settle();
    expectSameSession(spec, before, 'all rewound');
  });

  it('a step that fails inside a section undoes only itself', async () => {
    const spec = new Session(await fixtureModel(), { policy: 'h2o:heavy=6,recent=6 + flaky:at=3', registry: REGISTRY, sampler: { seed: 11, temperature: 1 } });
    await spec.prefill(PROMPT);
    spec.speculate();
    await spec.step();
    await spec.step();
    await expect(spec.step()).rejects.toThrow('flaky policy failed on call 3');
    expect(spec.speculativeSteps).toBe(2);
    const plain = new Session(await fixtureModel(), { policy: 'h2o:heavy=6,recent=6 + flaky:at=99', registry: REGISTRY, sampler: { seed: 11, temperature: 1 } });
    await plain.prefill(PROMPT);
    await plain.step();
    await plain.step();
    expectSameSession(spec, plain, 'after the failed step');
    spec.rewindSpeculation(1);
    spec.settle();
    const one = new Session(await fixtureModel(), { policy: 'h2o:heavy=6,recent=6 + flaky:at=99', registry: REGISTRY, sampler: { seed: 11, temperature: 1 } });
    await one.prefill(PROMPT);
    await one.step();
    expectSameSession(spec, one, 'rewound after the failed step');
  });
});

describe('(c) speculative section errors', () => {
  it('rewind or settle without a section', async () => {
    const session = await fixtureSession('full');
    expect(() => session.rewindSpeculation(0)).toThrow(new SessionError('no speculative section is open'));
    expect(() => session.settle()).toThrow(new SessionError('no speculative section is open'));
    expect(session.speculativeSteps).toBe(0);
  });

  it('keep out of range, and a second section', async () => {
    const session = await fixtureSession('full');
    session.speculate();
    await session.step();
    await session.step();
    expect(() => session.speculate()).toThrow(new SessionError('a speculative section is already open'));
    for (const keep of [-1, 3, 1.5, Number.NaN]) {
      expect(() => session.rewindSpeculation(keep)).toThrow(new SessionError(`cannot keep ${keep} speculative steps: the section has 2`));
    }
    // nothing moved
    expect(session.speculativeSteps).toBe(2);
    expect(session.tokens.length).toBe(PROMPT.length + 2);
  });

  it('setPolicy, snapshot, fork and reset inside a section are refused and change nothing', async () => {
    const session = await fixtureSession('h2o:heavy=6,recent=6');
    session.speculate();
    await session.step();
    expect(() => session.setPolicy('full')).toThrow(new SessionError('cannot switch the policy inside a speculative section: settle() it first'));
    expect(session.policySpec).toBe('h2o:heavy=6,recent=6,accumulate=sum,gqa=sum');
    expect(session.speculativeSteps).toBe(1);
    expect(() => session.snapshot()).toThrow(new SessionError('cannot snapshot inside a speculative section: settle() it first'));
    expect(() => session.fork()).toThrow(new SessionError('cannot snapshot inside a speculative section: settle() it first'));
    expect(() => session.reset()).toThrow(new SessionError('cannot reset inside a speculative section: settle() it first'));
    expect(session.tokens.length).toBe(PROMPT.length + 1);
    session.settle();
    expect(session.setPolicy('full').to).toBe('full');
  });
});

const NEEDS: PolicyNeeds = { attention: false, queries: false, calibration: false };
/** Throws at its `at`-th hook call (prefill = call 0). */
const flaky: PolicyDefinition = {
  id: 'flaky',
  label: 'Flaky',
  description: 'test policy that fails on purpose',
  paper: { short: 'test', title: 'test' },
  params: [{ name: 'at', kind: 'int', default: 3, min: 0, description: 'hook call that fails' }],
  needs: NEEDS,
  create(params) {
    const at = intParam(params, 'at');
    let calls = 0;
    const hook = () => {
      const call = calls++;
      if (call === at) throw new Error(`flaky policy failed on call ${call}`);
      return NO_CHANGE;
    };
    return {
      id: 'flaky',
      params,
      needs: NEEDS,
      onAttach: hook,
      afterPrefill: hook,
      afterStep: hook,
      reset() {
        calls = 0;
      },
      getState: () => ({ calls }),
      setState(state) {
        calls = (state as { calls: number }).calls;
      },
    };
  },
};
const REGISTRY = [...POLICIES, flaky];
