/** D2O: layer density budgets, H2O selection, recall-by-merging with EMA threshold — by hand — and a tiny-model run. */
import { describe, expect, it } from 'vitest';
import { KVCacheStore } from '../../engine/cache/store.ts';
import { Rope } from '../../engine/model/rope.ts';
import { D2OPolicy, densityRatios, layerDensity, mergeWeights, nearestKept, updateThreshold } from '../../engine/policies/d2o.ts';
import { createPolicy } from '../../engine/policies/spec.ts';
import { indexRange } from '../../engine/policies/types.ts';
import { calibratedRun } from './helpers/calibration.ts';
import { contextFor, keepOf, perQueryHead, prefillObservation, stepObservation, type Dims } from './helpers/policy.ts';

const cos = (a: number[], b: number[]) => (a[0] * b[0] + a[1] * b[1]) / (Math.hypot(a[0], a[1]) * Math.hypot(b[0], b[1]));

describe('d2o: building blocks', () => {
  it('layer density: unbiased variance of column sums, min-max normalised across heads, averaged', () => {
    // variances 1 and 0 → normalised [1/(1+1e−6), 0] → mean ≈ 0.5
    expect(layerDensity([Float32Array.from([1, 2, 3]), Float32Array.from([2, 2, 2])])).toBeCloseTo(0.5, 5);
    expect(layerDensity([Float32Array.from([1, 5]), Float32Array.from([0, 2])])).toBeCloseTo((1 / (1 + 1e-6) + 0) / 2, 6); // 8 vs 2
  });

  it('ratio_l = clamp(softmax(−v)_l · L · ρ, 0.01, 1)', () => {
    const a = Math.exp(-0.5);
    const b = Math.exp(-0.1);
    const r = densityRatios([0.5, 0.1], 0.2);
    expect(r[0]).toBeCloseTo((a / (a + b)) * 2 * 0.2, 12);
    expect(r[1]).toBeCloseTo((b / (a + b)) * 2 * 0.2, 12);
    expect(r[1]).toBeGreaterThan(r[0]); // denser (lower variance) keeps more
    expect(densityRatios([0, 0], 0.8)).toEqual([0.8, 0.8]);
    expect(densityRatios([0, 0], 3)).toEqual([1, 1]);
    expect(densityRatios([0, 0], 0.001)).toEqual([0.01, 0.01]);
  });

  it('merge weights: softmax with the kept entry at similarity 1 (sum 1), or the reference’s scaled mean', () => {
    const w = mergeWeights([0.5, 0.7], 'softmax');
    const z = Math.exp(0.5) + Math.exp(0.7) + Math.E;
    expect(w[0]).toBeCloseTo(Math.E / z, 12);
    expect(w[1]).toBeCloseTo(Math.exp(0.5) / z, 12);
    expect(w.reduce((s, x) => s + x, 0)).toBeCloseTo(1, 12);
    expect(mergeWeights([0.5, 0.7], 'code')).toEqual([1 / 3, 0.5 / 3, 0.7 / 3]);
  });

  it('EMA threshold: the first eviction sets τ = mean; later τ ← α·τ + (1 − α)·mean', () => {
    expect(updateThreshold(null, [0.2, 0.4], 0.5)).toBeCloseTo(0.3, 12);
    expect(updateThreshold(0.3, [0.9], 0.5)).toBeCloseTo(0.6, 12);
    expect(updateThreshold(0.3, [0.9], 0.25)).toBeCloseTo(0.75, 12);
    expect(updateThreshold(0.3, [], 0.5)).toBe(0.3);
    expect(updateThreshold(null, [], 0.5)).toBeNull();
  });

  it('nearest kept key by cosine (ties → the earlier kept entry)', () => {
    const keys = Float32Array.from([1, 0, 0, 1, -1, 0, 0, -1]);
    expect(nearestKept(keys, 2, [0, 2], [1, 3])).toEqual([
      { target: 0, similarity: 0 },
      { target: 0, similarity: 0 },
    ]);
  });
});

describe('d2o: eviction and recall on a hand-made head', () => {
  // one layer, one KV head (2 query heads), 2-d keys
  const dims: Dims = { nLayers: 1, nKvHeads: 1, nHeads: 2, headDim: 2 };
  const keys = [
    [1, 0], // 0 sink
    [0, 1],
    [1, 1],
    [1, -1],
    [-1, 0],
    [0, -1],
    [1, 0.1],
    [0.2, 1],
  ];
  const scores = [9, 1, 5, 2, 4, 0.5, 1, 1];
  function cache(): KVCacheStore {
    const store = new KVCacheStore(dims, new Rope({ theta: 10000, dim: 2 }, 2));
    store.appendLayer(0, Float32Array.from(keys.flat()), Float32Array.from(keys.flatMap((_, i) => [i, 0])), keys.length, indexRange(0, keys.length), 0);
    store.tokenCount = keys.length;
    return store;
  }

  it('keeps sinks + top heavy + recent, merges evicted entries above τ into their nearest kept key, drops the rest', () => {
    const store = cache();
    const policy = createPolicy('d2o:heavy=3,recent=2,sinks=1,layer_budgets=uniform', contextFor(dims)) as D2OPolicy;
    const sums = perQueryHead(dims, () => scores);
    const decision = policy.afterPrefill(store, prefillObservation(8, { sums }));
    // keep = sink 0 + top 2 of [1, 6) by score (2: 5, 4: 4) + recent 6, 7; evicted 1, 3, 5
    // nearest kept: 1 → 7 (0.98), 3 → 0 (0.71), 5 → 0 (0, tie with 4 → earlier); τ = mean = 0.563
    const u1 = cos(keys[1], keys[7]);
    const u3 = cos(keys[3], keys[0]);
    const tau = (u1 + u3 + 0) / 3;
    expect(policy.info.tau[0]).toBeCloseTo(tau, 6);
    const head = decision.layers![0]![0]!;
    expect(Array.from(head.keep)).toEqual([2, 4, 6]);
    expect(head.merge!.map((g) => ({ members: g.members, anchor: g.anchor, count: g.count }))).toEqual([
      { members: [0, 3], anchor: 0, count: 1 },
      { members: [7, 1], anchor: 7, count: 1 },
    ]);
    const z3 = Math.exp(u3) + Math.E;
    expect(head.merge![0].weights[0]).toBeCloseTo(Math.E / z3, 6);
    expect(head.merge![0].weights[1]).toBeCloseTo(Math.exp(u3) / z3, 6);
    const z1 = Math.exp(u1) + Math.E;
    expect(head.merge![1].weights[1]).toBeCloseTo(Math.exp(u1) / z1, 6);

    const applied = store.apply(decision);
    expect(applied.evicted).toBe(1); // token 5
    expect(Array.from(store.tokens(0, 0))).toEqual([0, 2, 4, 6, 1]); // merged entries sit at their anchors (token = first origin)
    expect(store.origin(0, 0, 4)).toEqual([1, 7]);
    expect(Array.from(store.counts(0, 0))).toEqual([1, 1, 1, 1, 1]); // no bias (merge_bias none)
    const w0 = Math.E / z3;
    expect(store.keys(0, 0)[0]).toBeCloseTo(w0 * 1 + (1 - w0) * 1, 6);
    expect(store.keys(0, 0)[1]).toBeCloseTo(-(1 - w0), 6);
    expect(store.values(0, 0)[0]).toBeCloseTo((1 - w0) * 3, 6); // values 0 and 3 merged with the same weights

    // next step: a new entry (0, 1) takes attention; entry 3 (token 6, key (1, 0.1)) is evicted and
    // recalled into entry 0; τ ← ½τ + ½·u
    const mergedKey0 = [store.keys(0, 0)[0], store.keys(0, 0)[1]];
    store.appendLayer(0, Float32Array.from([0, 1]), Float32Array.from([8, 0]), 1, [8], 8);
    store.tokenCount = 9;
    const step = policy.afterStep(store, stepObservation(perQueryHead(dims, () => [0, 0, 0, 0, 0, 1])));
    const u6 = cos(keys[6], mergedKey0);
    expect(policy.info.tau[0]).toBeCloseTo(0.5 * tau + 0.5 * u6, 6);
    const stepHead = step.layers![0]![0]!;
    expect(Array.from(stepHead.keep)).toEqual([1, 2, 4, 5]);
    expect(stepHead.merge!.map((g) => g.members)).toEqual([[0, 3]]);
    store.apply(step);
    expect(store.origin(0, 0, 0)).toEqual([0, 3, 6]);
    // state scores follow the cache order: 9, 5, 4, 1 (merged 1,7), 1 (new)
    const state = policy.getState() as { scores: number[][][] };
    expect(state.scores[0][0]).toEqual([9, 5, 4, 1, 1]);
  });

  it('log_count merge bias, code weights, and setState restoring the threshold and scores', () => {
    const store = cache();
    const policy = createPolicy('d2o:heavy=3,recent=2,sinks=1,layer_budgets=uniform,merge_bias=log_count,merge_weights=code', contextFor(dims));
    const decision = policy.afterPrefill(store, prefillObservation(8, { sums: perQueryHead(dims, () => scores) }));
    const head = decision.layers![0]![0]!;
    expect(head.merge!.map((g) => g.count)).toEqual([2, 2]);
    expect(head.merge![0].weights).toEqual([0.5, cos(keys[3], keys[0]) / 2]);
    const saved = JSON.parse(JSON.stringify(policy.getState()));
    const other = createPolicy('d2o:heavy=3,recent=2,sinks=1,layer_budgets=uniform', contextFor(dims));
    other.setState(saved);
    expect(other.getState()).toEqual(saved);
    other.reset();
    expect((other.getState() as { tau: (number | null)[] }).tau).toEqual([null]);
  });
});

describe('d2o: density budgets', () => {
  it('a layer with flatter (denser) attention gets the larger budget; budgets follow the formula', () => {
    const dims: Dims = { nLayers: 2, nKvHeads: 1, nHeads: 2, headDim: 2 };
    const n = 40;
    // layer 0: every head's column sums equal (variance 0 → after min-max, 0); layer 1: one head peaked
    const sums = perQueryHead(dims, (l, qh) => Array.from({ length: n }, (_, j) => (l === 1 && qh === 0 ? (j === 0 ? 30 : 0.25) : 1)));
    const policy = createPolicy('d2o:heavy=0.2,recent=0.1', contextFor(dims)) as D2OPolicy;
    const store = new KVCacheStore(dims, null);
    store.appendLayer(0, new Float32Array(n * 2).fill(1), new Float32Array(n * 2), n, indexRange(0, n), 0);
    store.appendLayer(1, new Float32Array(n * 2).fill(1), new Float32Array(n * 2), n, indexRange(0, n), 0);
    store.tokenCount = n;
    policy.afterPrefill(store, prefillObservation(n, { sums }));
    const v = [layerDensity(sums[0]), layerDensity(sums[1])];
    expect(v[0]).toBe(0);
    const ratios = densityRatios(v, 0.3);
    expect(policy.info.heavy).toEqual(ratios.map((r) => Math.floor(n * r * (0.2 / 0.3))));
    expect(policy.info.recent).toEqual(ratios.map((r) => Math.max(1, Math.floor(n * r * (0.1 / 0.3)))));
    expect(policy.info.heavy[0]).toBeGreaterThan(policy.info.heavy[1]);
  });
});

describe('d2o on the tiny fixture', () => {
  it('prefill 100 + 20 steps: each layer at its heavy + recent budget, evicted entries recalled; snapshot/restore is exact', async () => {
    const session = await calibratedRun('d2o:heavy=16,recent=16', () => 2 * 32, null);
    const info = (session.policy as D2OPolicy).info;
    let merged = 0;
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        expect(session.cache.length(l, h)).toBe(info.heavy[l] + info.recent[l]);
        for (let i = 0; i < session.cache.length(l, h); i++) if (session.cache.origin(l, h, i).length > 1) merged++;
      }
    }
    expect(merged).toBeGreaterThan(0);
    expect(info.tau.every((t) => t !== null && t > -1 && t < 1)).toBe(true);
  });
});
