/** StreamingLLM: sinks + recent, P1 and P2 positions. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePolicySpec } from '../../engine/policies/spec.ts';
import { streamingDecision } from '../../engine/policies/streaming.ts';
import { cacheOf, DIMS, integrationRun, keepOf, policyFor, range, stepObservation } from './helpers/policy.ts';

describe('streaming policy', () => {
  it('parses its spec', () => {
    expect(parsePolicySpec('streaming:sinks=2,recent=0.25,positions=p1').params).toEqual({ sinks: 2, recent: 0.25, positions: 'p1' });
    expect(parsePolicySpec('streaming').params).toEqual({ sinks: 4, recent: 512, positions: 'p2' });
    expect(() => parsePolicySpec('streaming:positions=p3')).toThrow('positions must be one of p2, p1');
    expect(() => parsePolicySpec('streaming:recent=0')).toThrow();
  });

  it('P1: keeps exactly the sinks and the recent entries, positions untouched', () => {
    const cache = cacheOf(12);
    const decision = policyFor('streaming:sinks=2,recent=3,positions=p1').afterStep(cache, stepObservation(null));
    expect(decision.nextPosition).toBeUndefined();
    for (let l = 0; l < DIMS.nLayers; l++) for (let h = 0; h < DIMS.nKvHeads; h++) expect(keepOf(decision, l, h)).toEqual([0, 1, 9, 10, 11]);
    cache.apply(decision);
    expect(Array.from(cache.tokens(0, 0))).toEqual([0, 1, 9, 10, 11]);
    expect(Array.from(cache.positions(1, 1))).toEqual([0, 1, 9, 10, 11]);
  });

  it('P2: re-rotates kept keys to their cache index and feeds the next token at the cache length', () => {
    const cache = cacheOf(12);
    const before = Array.from(cache.keys(0, 0).subarray(9 * 4, 10 * 4));
    const decision = policyFor('streaming:sinks=2,recent=3').afterStep(cache, stepObservation(null));
    expect(decision.nextPosition).toBe(5);
    const reposition = decision.layers![0]![0]!.reposition!;
    expect(reposition.map((r) => [r.index, r.pos])).toEqual([
      [9, 2],
      [10, 3],
      [11, 4],
    ]);
    const applied = cache.apply(decision);
    expect(applied.nextPosition).toBe(5);
    expect(Array.from(cache.positions(0, 0))).toEqual([0, 1, 2, 3, 4]);
    expect(Array.from(cache.tokens(0, 0))).toEqual([0, 1, 9, 10, 11]);
    // the key moved by a RoPE delta of −7: same norm, different vector
    const after = Array.from(cache.keys(0, 0).subarray(2 * 4, 3 * 4));
    const norm = (v: number[]) => Math.hypot(...v);
    expect(norm(after)).toBeCloseTo(norm(before), 4);
    expect(after).not.toEqual(before);
    // steady state: index-aligned, within budget → nothing to do but keep the next position
    const again = policyFor('streaming:sinks=2,recent=3').afterStep(cache, stepObservation(null));
    expect(again.layers).toBeNull();
    expect(again.nextPosition).toBe(5);
  });

  it('cache shorter than the budget is unchanged (P1) and budget 1 keeps the newest entry', () => {
    const cache = cacheOf(5);
    expect(policyFor('streaming:sinks=2,recent=3,positions=p1').afterStep(cache, stepObservation(null)).layers).toBeNull();
    const one = policyFor('streaming:sinks=0,recent=1,positions=p1').afterStep(cache, stepObservation(null));
    expect(keepOf(one, 0, 0)).toEqual([4]);
  });

  it('recent as a ratio of the prompt length', () => {
    const cache = cacheOf(40);
    const policy = policyFor('streaming:sinks=1,recent=0.25,positions=p1');
    const decision = policy.afterPrefill(cache, { firstToken: 0, tokenCount: 40, attentionSums: null, windowAttention: null, windowQueries: null, windowRows: 0 });
    expect(keepOf(decision, 0, 0)).toEqual([0, ...range(30, 40)]);
    // the budget stays fixed while decoding; state round-trips
    const copy = policyFor('streaming:sinks=1,recent=0.25,positions=p1');
    copy.setState(JSON.parse(JSON.stringify(policy.getState())));
    cache.apply(decision);
    expect(keepOf(copy.afterStep(cacheOf(50), stepObservation(null)), 1, 1)).toEqual([0, ...range(40, 50)]);
  });

  it('P2 with ragged heads: every head index-aligned, next position = longest head', () => {
    const cache = cacheOf(10);
    cache.apply({ layers: [[{ keep: [0, 5, 9] }, null], null] });
    const decision = streamingDecision(cache, 1, 4, 'p2');
    cache.apply(decision);
    expect(decision.nextPosition).toBe(5);
    expect(Array.from(cache.positions(0, 0))).toEqual([0, 1, 2]);
    expect(Array.from(cache.tokens(0, 1))).toEqual([0, 6, 7, 8, 9]);
    expect(Array.from(cache.positions(0, 1))).toEqual([0, 1, 2, 3, 4]);
  });

  it('property: keeps min(n, S+R) entries, sinks and recent always, ascending', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 60 }), fc.integer({ min: 0, max: 8 }), fc.integer({ min: 1, max: 30 }), (n, s, r) => {
        const cache = cacheOf(n);
        const decision = streamingDecision(cache, s, r, 'p1');
        const keep = keepOf(decision, 1, 0) ?? range(0, n);
        expect(keep.length).toBe(Math.min(n, s + r));
        for (let i = 1; i < keep.length; i++) expect(keep[i]).toBeGreaterThan(keep[i - 1]);
        for (let i = 0; i < Math.min(s, n); i++) expect(keep).toContain(i);
        for (let i = Math.max(0, n - r); i < n; i++) expect(keep).toContain(i);
      }),
    );
  });

  it('integration: tiny model, P2 and P1, within budget, restore reproduces', async () => {
    await integrationRun('streaming:sinks=4,recent=28', () => 32);
    await integrationRun('streaming:sinks=2,recent=0.2,positions=p1', () => 22);
  });
});

describe('streaming P2 past the context', () => {
  it('P2 keeps positions below the budget, so decoding continues where P1 hits the context end', async () => {
    const { Session } = await import('../../engine/session.ts');
    const { fixtureModel, tokenSequence } = await import('../engine/helpers/fixture.ts');
    const model = await fixtureModel();
    const p2 = new Session(model, { policy: 'streaming:sinks=4,recent=28', sampler: { seed: 1, temperature: 1 } });
    await p2.prefill(tokenSequence(250, 3));
    const r2 = await p2.run(12, { stopAtEos: false });
    expect(r2.stopReason).toBe('length');
    expect(Math.max(...r2.steps.map((s) => s.position))).toBeLessThanOrEqual(32);
    const p1 = new Session(model, { policy: 'streaming:sinks=4,recent=28,positions=p1', sampler: { seed: 1, temperature: 1 } });
    await p1.prefill(tokenSequence(250, 3));
    expect((await p1.run(12, { stopAtEos: false })).stopReason).toBe('context-full');
  });
});
