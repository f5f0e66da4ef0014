/**
 * Atomic steps (issue 7 §5): when a policy throws or its decision is rejected, the session is
 * exactly as before the call — cache (entries, columns, codec groups), positions, pending logits,
 * policy state, sampler and trace — and the error says what failed. Failing policies are injected
 * through a custom registry, alone and as the second member of a composition.
 */
import { describe, expect, it } from 'vitest';
import { PolicyDecisionError } from '../../engine/errors.ts';
import { POLICIES } from '../../engine/policies/index.ts';
import { intParam, NO_CHANGE, type PolicyDefinition, type PolicyNeeds } from '../../engine/policies/types.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from './helpers/fixture.ts';

const NEEDS: PolicyNeeds = { attention: true, queries: false, calibration: false };

/** Fails at its `at`-th hook call (prefill counts as call 0): throws, or with bad=1 returns an invalid decision. */
const flaky: PolicyDefinition = {
  id: 'flaky',
  label: 'Flaky',
  description: 'test policy that fails on purpose',
  paper: { short: 'test', title: 'test' },
  params: [
    { name: 'at', kind: 'int', default: 3, min: 0, description: 'hook call that fails' },
    { name: 'bad', kind: 'int', default: 0, min: 0, max: 1, description: '1: an invalid decision instead of a throw' },
  ],
  needs: NEEDS,
  create(params) {
    const at = intParam(params, 'at');
    const bad = intParam(params, 'bad') === 1;
    let calls = 0;
    const hook = () => {
      const call = calls++;
      if (call !== at) return NO_CHANGE;
      if (bad) return { layers: [[{ keep: [] }, null], null] };
      throw new Error(`flaky policy failed on call ${call}`);
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
const registry = [...POLICIES, flaky];

async function sessionWith(policy: string): Promise<Session> {
  return new Session(await fixtureModel(), { policy, registry, sampler: { seed: 5, temperature: 1 } });
}

/** Everything a step could change, deep-copied. */
function state(s: Session) {
  return { snapshot: s.snapshot(), trace: s.trace.length, position: s.position, tokens: [...s.tokens], logits: s.nextTokenLogits?.slice() ?? null };
}

describe('atomic steps', () => {
  it.each([
    ['a throwing policy', 'h2o:heavy=10,recent=10 + flaky:at=3', /flaky policy failed on call 3/],
    ['a rejected decision', 'flaky:at=3,bad=1', PolicyDecisionError],
    ['a composition whose second member fails after the first applied', 'window:size=30 + flaky:at=3', /flaky policy failed/],
    // the first member keeps every head whole (decisions carry only scores), the second writes its own columns
    ['a failure after a keep-all member and a member with columns', 'h2o:heavy=100,recent=100 + h2o:heavy=8,recent=8 + flaky:at=3', /flaky policy failed/],
  ])('%s leaves the session exactly as before the step', async (_what, spec, error) => {
    const s = await sessionWith(spec);
    await s.prefill([1, ...tokenSequence(49, 3)]);
    await s.step();
    await s.step();
    const before = state(s);
    await expect(s.step()).rejects.toThrow(error);
    expect(state(s)).toEqual(before);
    // the session carries on as if the failed step never happened: the same token comes next
    const reference = await sessionWith(spec.replace(/flaky:at=3(,bad=1)?/, 'flaky:at=99'));
    await reference.prefill([1, ...tokenSequence(49, 3)]);
    for (let i = 0; i < 3; i++) await reference.step();
    s.setPolicy(reference.policySpec);
    expect((await s.step()).token.id).toBe(reference.trace.steps()[2].token.id);
  });

  it('a prefill whose policy fails leaves an empty session', async () => {
    const s = await sessionWith('flaky:at=0');
    const before = state(s);
    await expect(s.prefill([1, ...tokenSequence(20, 4)])).rejects.toThrow(/call 0/);
    expect(state(s)).toEqual(before);
    expect(s.cache.length(0, 0)).toBe(0);
  });

  it('a policy that fails to attach leaves the old policy in charge and the cache unchanged', async () => {
    const s = await sessionWith('h2o:heavy=8,recent=8');
    await s.prefill([1, ...tokenSequence(40, 6)]);
    await s.step();
    const before = state(s);
    expect(() => s.setPolicy('window:size=12 + flaky:at=0')).toThrow(/call 0/);
    expect(state(s)).toEqual(before);
    expect(s.policySpec).toBe('h2o:heavy=8,recent=8,accumulate=sum,gqa=sum');
  });
});
