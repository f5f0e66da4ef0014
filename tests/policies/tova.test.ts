/** TOVA: current-query attention, head-mean vs per-head, prefill via the last prompt row. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parsePolicySpec } from '../../engine/policies/spec.ts';
import { tovaDecision } from '../../engine/policies/tova.ts';
import { cacheOf, DIMS, integrationRun, keepOf, keptOrAll, perQueryHead, policyFor, prefillObservation, range, stepObservation } from './helpers/policy.ts';

describe('tova policy', () => {
  it('parses its spec', () => {
    expect(parsePolicySpec('tova:budget=64,reduce=per-head,gqa=max').params).toEqual({ budget: 64, reduce: 'per-head', gqa: 'max' });
    expect(parsePolicySpec('tova:budget=0.5').params.budget).toBe(0.5);
  });

  // Query heads 0,1 → KV head 0; 2,3 → KV head 1 (layer 0). Layer 1 uniform.
  const rows: number[][] = [
    [0.1, 0.5, 0.0, 0.3, 0.1],
    [0.1, 0.0, 0.4, 0.3, 0.2],
    [0.6, 0.0, 0.0, 0.0, 0.4],
    [0.6, 0.0, 0.0, 0.0, 0.4],
  ];
  const attention = perQueryHead(DIMS, (l, qh) => (l === 0 ? rows[qh] : [0.2, 0.2, 0.2, 0.2, 0.2]));

  it('head-mean: one ranking per layer from every query head, shared by the KV heads', () => {
    // mean over 4 heads: [0.35, 0.125, 0.1, 0.15, 0.275]
    const decision = policyFor('tova:budget=3').afterStep(cacheOf(5), stepObservation(attention));
    expect(keepOf(decision, 0, 0)).toEqual([0, 3, 4]);
    expect(keepOf(decision, 0, 1)).toEqual([0, 3, 4]);
    expect(keepOf(decision, 1, 0)).toEqual([0, 1, 2]); // ties keep the older
  });

  it('per-head: each KV head ranks by its own group (gqa mean / max)', () => {
    const mean = policyFor('tova:budget=2,reduce=per-head').afterStep(cacheOf(5), stepObservation(attention));
    expect(keepOf(mean, 0, 0)).toEqual([1, 3]); // [0.1, 0.25, 0.2, 0.3, 0.15]
    expect(keepOf(mean, 0, 1)).toEqual([0, 4]);
    const max = policyFor('tova:budget=2,reduce=per-head,gqa=max').afterStep(cacheOf(5), stepObservation(attention));
    expect(keepOf(max, 0, 0)).toEqual([1, 2]); // [0.1, 0.5, 0.4, 0.3, 0.2]
  });

  it('after prefill ranks by the last prompt row', () => {
    const window = perQueryHead(DIMS, (l, qh) => (l === 0 ? rows[qh] : [0.2, 0.2, 0.2, 0.2, 0.2])).map((layer) => layer.map((r) => [Array.from(r)]));
    const decision = policyFor('tova:budget=3').afterPrefill(cacheOf(5), prefillObservation(5, { windowRows: window }));
    expect(keepOf(decision, 0, 1)).toEqual([0, 3, 4]);
    expect(policyFor('tova').needs.prefillWindow).toBe(1);
  });

  it('within budget unchanged; budget 1; ratio of the prompt; onAttach keeps the newest', () => {
    expect(policyFor('tova:budget=5').afterStep(cacheOf(5), stepObservation(attention)).layers).toBeNull();
    expect(keepOf(policyFor('tova:budget=1').afterStep(cacheOf(5), stepObservation(attention)), 0, 0)).toEqual([0]);
    const ratio = policyFor('tova:budget=0.4');
    ratio.afterPrefill(cacheOf(5), prefillObservation(5, { windowRows: attention.map((l) => l.map((r) => [Array.from(r)])) }));
    expect(keepOf(ratio.afterStep(cacheOf(5), stepObservation(attention)), 0, 0)).toEqual([0, 4]);
    expect(keepOf(policyFor('tova:budget=2').onAttach!(cacheOf(5)), 1, 1)).toEqual([3, 4]);
  });

  it('ragged layer falls back to per-head ranking', () => {
    const cache = cacheOf(6);
    cache.apply({ layers: [[{ keep: [0, 1, 2, 3, 4] }, null], null] });
    const att = perQueryHead(DIMS, (l, qh) => (qh < 2 ? [0.1, 0.4, 0.1, 0.3, 0.1] : [0.3, 0.1, 0.1, 0.1, 0.1, 0.3]));
    const decision = tovaDecision(cache, att, 2, 'head-mean', 'mean');
    expect(keepOf(decision, 0, 0)).toEqual([1, 3]);
    expect(keepOf(decision, 0, 1)).toEqual([0, 5]);
  });

  it('property: keep = min(n, budget), ascending, the kept scores dominate', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 20 }), fc.array(fc.float({ min: 0, max: 1, noNaN: true }), { minLength: 50, maxLength: 50 }), (n, budget, noise) => {
        const att = perQueryHead(DIMS, (l, qh) => range(0, n).map((j) => noise[(j * 3 + qh + l) % 50]));
        const decision = tovaDecision(cacheOf(n), att, budget, 'per-head', 'mean');
        const keep = keptOrAll(decision, 0, 1, n);
        expect(keep.length).toBe(Math.min(n, budget));
        for (let i = 1; i < keep.length; i++) expect(keep[i]).toBeGreaterThan(keep[i - 1]);
      }),
    );
  });

  it('integration: tiny model within budget after every step; restore reproduces', async () => {
    await integrationRun('tova:budget=24', () => 24);
  });
});
