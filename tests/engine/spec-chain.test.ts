/** Policy specs and compositions: parsed, checked and formatted in one place (engine/policies/spec.ts). */
import { describe, expect, it } from 'vitest';
import { formatPolicyChain, parsePolicyChain, parsePolicySpec, splitPolicyList } from '../../engine/policies/spec.ts';
import { expandRuns } from '../../engine/eval/budgets.ts';
import { PolicyChain } from '../../engine/policies/chain.ts';
import { Session } from '../../engine/session.ts';
import { cacheOf, contextFor, DIMS, perQueryHead } from '../policies/helpers/policy.ts';
import { fixtureModel, tokenSequence } from './helpers/fixture.ts';

describe('compositions', () => {
  it('parse in the order written and format canonically', () => {
    const chain = parsePolicyChain(' h2o:heavy=64,recent=64 +window:size=32 ');
    expect(chain.map((s) => s.id)).toEqual(['h2o', 'window']);
    expect(formatPolicyChain(chain)).toBe('h2o:heavy=64,recent=64,accumulate=sum,gqa=sum + window:size=32');
    expect(formatPolicyChain(parsePolicyChain(formatPolicyChain(chain)))).toBe(formatPolicyChain(chain));
    // a single spec is a composition of one, with the same canonical string as before
    expect(formatPolicyChain(parsePolicyChain('window:size=8'))).toBe('window:size=8');
  });

  it('split from a space-separated list with compositions kept whole', () => {
    expect(splitPolicyList(' window:size=8  h2o + tova:budget=4\nsnapkv+streaming ')).toEqual(['window:size=8', 'h2o + tova:budget=4', 'snapkv + streaming']);
    expect(splitPolicyList('a +\nb c h2o:heavy=1e+1')).toEqual(['a + b', 'c', 'h2o:heavy=1e+1']);
  });

  it('keep an exponent inside a value whole', () => {
    expect(parsePolicyChain('h2o:heavy=1e+1,recent=0.5e+1')[0].params).toMatchObject({ heavy: 10, recent: 5 });
  });

  it('reject an empty side and single-policy parsing of a composition, naming the problem', () => {
    expect(() => parsePolicyChain('h2o +')).toThrow('a composition needs a policy on each side of "+"');
    expect(() => parsePolicyChain('+ window')).toThrow('each side of "+"');
    expect(() => parsePolicySpec('h2o + window')).toThrow('composes several policies');
  });

  it('refuse reserved names instead of reaching the prototype', () => {
    expect(() => parsePolicySpec('__proto__')).toThrow('"__proto__" is a reserved name and cannot be a policy id');
    expect(() => parsePolicySpec('constructor:x=1')).toThrow('reserved name');
    expect(() => parsePolicySpec('window:constructor=3')).toThrow('"constructor" is a reserved name and cannot be a parameter name');
    expect(() => parsePolicySpec('window:__proto__=3')).toThrow('reserved name');
  });

  it('kvscope eval runs a composition once, as given, next to budgeted specs', () => {
    const runs = expandRuns(['window', 'window:size=30 + h2o:heavy=5,recent=5'], [16, 32]);
    expect(runs.map((r) => [r.id, r.budget, r.spec])).toEqual([
      ['window', 16, 'window:size=16'],
      ['window', 32, 'window:size=32'],
      ['window + h2o', null, 'window:size=30 + h2o:heavy=5,recent=5,accumulate=sum,gqa=sum'],
    ]);
  });

  it('a composition runs its members in order on one session, and the trace names it', async () => {
    const session = new Session(await fixtureModel(), { policy: 'window:size=30 + h2o:heavy=5,recent=5', sampler: { seed: 1, temperature: 0 } });
    const prefill = await session.prefill([1, ...tokenSequence(59, 2)]);
    // the window cut every head to 30, then H2O to 5 + 5
    expect(prefill.trace.decision.evicted).toBe((60 - 30 + 30 - 10) * 4);
    expect(session.cache.length(1, 1)).toBe(10);
    expect(prefill.trace.policy).toBe('window:size=30 + h2o:heavy=5,recent=5,accumulate=sum,gqa=sum');
    expect(session.policy.id).toBe('window+h2o');
    const step = await session.step();
    expect(step.decision.evicted).toBe(4);
    // H2O's accumulated scores live in its own prefixed columns
    expect(session.cache.hasColumn('1.h2o.attention')).toBe(true);
  });
});

describe('PolicyChain', () => {
  it('remaps the observation to the entries the previous member left', () => {
    // window evicts entries 0–3, then H2O (1 heavy + 1 recent)
    // must rank the survivors by the attention they received — entry 5 (0.6) beats entry 4 (0.1)
    const cache = cacheOf(8);
    const chain = new PolicyChain(parsePolicyChain('window:size=4 + h2o:heavy=1,recent=1'), contextFor());
    const attention = perQueryHead(DIMS, () => [0.05, 0.05, 0.05, 0.05, 0.1, 0.6, 0.05, 0.05]);
    const { applied } = chain.run(cache, { kind: 'step', observation: { step: 0, tokenIndex: 7, position: 7, attention, queries: null } });
    expect(Array.from(cache.tokens(0, 0))).toEqual([5, 7]);
    expect(applied.evicted).toBe((4 + 2) * 4);
    expect(Array.from(cache.column(0, 0, '1.h2o.attention'))).toEqual(Array.from(Float32Array.from([0.6, 0.6, 0.05, 0.05]))); // two query heads per KV head
  });

  it('counts, for accumulate=mean, the rows that saw each entry by its token even after an earlier member evicted', async () => {
    const session = new Session(await fixtureModel(), { policy: 'h2o:heavy=6,recent=4 + h2o:heavy=100,recent=100,accumulate=mean', sampler: { seed: 1, temperature: 0 } });
    await session.prefill([1, ...tokenSequence(39, 2)]);
    const tokens = Array.from(session.cache.tokens(0, 0));
    expect(tokens.length).toBe(10);
    // prompt token t of a 40-token prefill was seen by the 40 − t rows from t on
    expect(Array.from(session.cache.column(0, 0, '1.h2o.seen'))).toEqual(tokens.map((t) => 40 - t));
  });
});
