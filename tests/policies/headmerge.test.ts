/** headmerge (Yu et al., 2024): joint projection of a layer's KV heads, RoPE handling, ragged heads, memory, decode, tiny-model runs. */
import { describe, expect, it } from 'vitest';
import type { Decision } from '../../engine/cache/decision.ts';
import type { KVCacheStore } from '../../engine/cache/store.ts';
import { basisOf, type PcaBasisJson } from '../../engine/calibration/projections.ts';
import { encodeJoint, jointTokens, shareOf } from '../../engine/policies/headmerge.ts';
import { createPolicy } from '../../engine/policies/spec.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel } from '../engine/helpers/fixture.ts';
import { basisJson, calibratedContext, calibratedRun, manifestCalibration, projectionCalibration, rotationBasis, tinyCalibration } from './helpers/calibration.ts';
import { contextFor, DIMS, prefillObservation, stepObservation } from './helpers/policy.ts';
import { appendRows, noise, ropeOf, storeOf } from './helpers/store.ts';

const d = DIMS.headDim;
const W = 2 * d;
const MEAN = [0.5, -1, 2, 0.25, 1, 0, -0.5, 3];
const THETA = 10000;

const jointBasis = (side: 'keys' | 'keysPost' | 'values', l: number): PcaBasisJson =>
  basisJson(rotationBasis(W, 20 + l * 3 + (side === 'keys' ? 0 : side === 'keysPost' ? 1 : 2)), undefined, MEAN);
const calibration = projectionCalibration(DIMS, () => basisJson(rotationBasis(d, 1)), jointBasis);

/** Rotate-half RoPE by `pos` written out (independent of model/rope.ts). */
function rotate(x: readonly number[], pos: number): number[] {
  const half = d / 2;
  const out = [...x];
  for (let i = 0; i < half; i++) {
    const angle = pos * Math.pow(THETA, (-2 * i) / d);
    out[i] = x[i] * Math.cos(angle) - x[i + half] * Math.sin(angle);
    out[i + half] = x[i + half] * Math.cos(angle) + x[i] * Math.sin(angle);
  }
  return out;
}

/** μ + Σ_{j<r} fround((x − μ)·u_j) u_j with a stored basis, by hand. */
function byHand(basis: PcaBasisJson, x: readonly number[], r: number): number[] {
  const out = [...basis.mean];
  for (let j = 0; j < r; j++) {
    const u = basis.components[j];
    const c = Math.fround(x.reduce((s, xi, i) => s + (xi - basis.mean[i]) * u[i], 0));
    for (let i = 0; i < out.length; i++) out[i] += c * u[i];
  }
  return out;
}

const position = (t: number) => 3 + 5 * t;

function run(spec: string, store: KVCacheStore): Decision {
  const decision = createPolicy(spec, calibratedContext(calibration, DIMS)).afterPrefill(store, prefillObservation(store.tokenCount));
  store.apply(decision);
  return decision;
}

describe('headmerge: RoPE handling', () => {
  it('a key un-rotated, compressed jointly, re-rotated: the direct computation, and itself at full rank', () => {
    const rope = ropeOf(DIMS);
    const basis = jointBasis('keys', 0);
    const keys = [noise(d, 1, 3), noise(d, 2, 3)];
    const positions = [7, 11];
    const full = encodeJoint(basisOf(basis), W, keys, rope, positions);
    full.forEach((row, h) => Array.from(row).forEach((x, i) => expect(x).toBeCloseTo(keys[h][i], 5)));
    const pre = [...rotate(keys[0], -7), ...rotate(keys[1], -11)];
    const direct = byHand(basis, pre, 3);
    const got = encodeJoint(basisOf(basis), 3, keys, rope, positions);
    Array.from(got[0]).forEach((x, i) => expect(x).toBeCloseTo(rotate(direct.slice(0, d), 7)[i], 5));
    Array.from(got[1]).forEach((x, i) => expect(x).toBeCloseTo(rotate(direct.slice(d), 11)[i], 5));
  });

  it('pre-RoPE keys in the basis’ span come back exactly with rope=pre; projected as cached (rope=post) they do not', () => {
    // token t: pre-RoPE joint key μ + (t+1)·u_0 − 0.5·t·u_1, each head's half rotated to its position
    const [u0, u1] = jointBasis('keys', 0).components;
    const pre = (t: number) => MEAN.map((m, i) => m + (t + 1) * u0[i] - 0.5 * t * u1[i]);
    const keyOf = (l: number, h: number, t: number) => rotate(pre(t).slice(h * d, (h + 1) * d), position(t));
    const valueOf = (l: number, h: number, t: number) => noise(d, 50 + t + h);
    const store = storeOf(DIMS, 5, keyOf, valueOf, position);
    const decision = run('headmerge:k_rank=2,v_rank=8,rope=pre', store);
    for (const re of decision.layers![0]![1]!.reencode!) expect(re.kError!).toBeLessThan(1e-6);
    for (let t = 0; t < 5; t++) Array.from(store.keys(0, 1).subarray(t * d, (t + 1) * d)).forEach((x, i) => expect(x).toBeCloseTo(keyOf(0, 1, t)[i], 5));
    // the post-RoPE ablation with the same subspace (hand-made keysPost = keys) loses them
    const same = projectionCalibration(DIMS, () => basisJson(rotationBasis(d, 1)), (side, l) => jointBasis(side === 'keysPost' ? 'keys' : side, l));
    const post = createPolicy('headmerge:k_rank=2,v_rank=8,rope=post', calibratedContext(same, DIMS)).afterPrefill(storeOf(DIMS, 5, keyOf, valueOf, position), prefillObservation(5));
    expect(Math.max(...post.layers![0]![1]!.reencode!.map((re) => re.kError!))).toBeGreaterThan(0.01);
  });

  it('values and rope=post keys are projected without any rotation', () => {
    const rows = (l: number, h: number, t: number) => noise(d, 300 + 10 * l + 3 * h + t, 2);
    const store = storeOf(DIMS, 2, rows, rows, position);
    run('headmerge:k_rank=3,v_rank=5,rope=post', store);
    for (const [side, r, basis] of [['keys', 3, jointBasis('keysPost', 1)], ['values', 5, jointBasis('values', 1)]] as const) {
      const expected = byHand(basis, [...rows(1, 0, 1), ...rows(1, 1, 1)], r);
      for (let h = 0; h < 2; h++) {
        const got = (side === 'keys' ? store.keys(1, h) : store.values(1, h)).subarray(d, 2 * d);
        Array.from(got).forEach((x, i) => expect(x).toBeCloseTo(expected[h * d + i], 5));
      }
    }
  });
});

describe('headmerge: tokens, memory, decoding', () => {
  const rows = (l: number, h: number, t: number) => noise(d, 7 + t + 5 * h + 11 * l);

  it('only tokens every KV head holds (plain, single-token) are compressed; the rest stay fp32', () => {
    const store = storeOf(DIMS, 6, rows, rows, position);
    // layer 0: head 1 lost token 2, head 0 lost token 4; layer 1: head 0's token 1 is a merge
    store.apply({ layers: [[{ keep: [0, 1, 2, 3, 5] }, { keep: [0, 1, 3, 4, 5] }], [{ keep: [0, 3, 4, 5], merge: [{ members: [1, 2], weights: [0.5, 0.5] }] }, null]] });
    expect(jointTokens(store, 0, Infinity).map(([i0, i1]) => [store.tokens(0, 0)[i0], store.tokens(0, 1)[i1]])).toEqual([
      [0, 0],
      [1, 1],
      [3, 3],
      [5, 5],
    ]);
    const decision = run('headmerge', store);
    expect(decision.layers![0]![0]!.reencode!.map((re) => store.tokens(0, 0)[re.index])).toEqual([0, 1, 3, 5]);
    expect(decision.layers![0]![1]!.reencode!.map((re) => store.tokens(0, 1)[re.index])).toEqual([0, 1, 3, 5]);
    expect(decision.layers![1]![1]!.reencode!.map((re) => store.tokens(1, 1)[re.index])).toEqual([0, 3, 4, 5]);
    expect(store.codec(0, 0, 2)).toBeNull();
    expect(store.codec(1, 0, 1)).toBeNull();
  });

  it('memory: r coefficients per token and layer split over the heads, one projection per layer; K and V separately', () => {
    const n = 9;
    const store = storeOf(DIMS, n, rows, rows, position);
    const decision = run('headmerge:k_rank=3,v_rank=0.5', store);
    expect([0, 1].map((h) => shareOf(3, h, 2))).toEqual([2, 1]);
    expect(decision.layers![1]![0]!.reencode![0].codec).toMatchObject({ name: 'headmerge', kElements: 2, vElements: 2, group: 'headmerge.L1/k3v4/pre' });
    expect(decision.layers![1]![1]!.reencode![0].codec).toMatchObject({ kElements: 1, vElements: 2 });
    const m = store.memory();
    expect(m.kBytes).toBe(2 * (n * 3 * 4 + (W * 3 + W) * 4));
    expect(m.vBytes).toBe(2 * (n * 4 * 4 + (W * 4 + W) * 4));
    expect(m.groupBytes).toBe(2 * ((W * 3 + W) * 4 + (W * 4 + W) * 4));
    expect(decision.headMeasures!.k_singular_values[1]).toEqual([0, 1].map(() => jointBasis('keys', 1).eigenvalues.map(Math.sqrt)));
    expect(decision.headMeasures!.v_rank).toEqual([
      [[4], [4]],
      [[4], [4]],
    ]);
  });

  it('a side at the joint width stays exact; both change nothing', () => {
    const store = storeOf(DIMS, 3, rows, rows, position);
    const keys = store.keys(0, 1).slice();
    const decision = run('headmerge:k_rank=8', store);
    expect(decision.layers![0]![1]!.reencode![0]).toMatchObject({ codec: { kElements: d, vElements: 2 } });
    expect(decision.layers![0]![1]!.reencode![0].keys).toBeUndefined();
    expect(store.keys(0, 1)).toEqual(keys);
    expect(run('headmerge:k_rank=8,v_rank=8', storeOf(DIMS, 3, rows, rows)).layers).toBeNull();
  });

  it('decoding encodes the token that left the recent window, in both heads, declaring the group once', () => {
    const store = storeOf(DIMS, 4, rows, rows, position);
    const policy = createPolicy('headmerge:recent=1', calibratedContext(calibration, DIMS));
    const first = policy.afterPrefill(store, prefillObservation(4));
    expect(first.groups!.map((g) => g.id)).toEqual(['headmerge.L0/k4v4/pre', 'headmerge.L1/k4v4/pre']);
    store.apply(first);
    for (let step = 0; step < 2; step++) {
      appendRows(store, 1, rows, rows, position);
      const decision = policy.afterStep(store, stepObservation(null, step));
      for (let h = 0; h < 2; h++) expect(decision.layers![1]![h]!.reencode!.map((re) => re.index)).toEqual([3 + step]);
      expect(decision.groups).toBeUndefined();
      store.apply(decision);
    }
    expect(store.codec(1, 1, 5)).toBeNull();
  });

  it('refuses to start without the joint bases', () => {
    expect(() => createPolicy('headmerge', contextFor(DIMS))).toThrow(/^headmerge needs calibration data \(projections\)/);
    const perHeadOnly = projectionCalibration(DIMS, () => basisJson(rotationBasis(d, 1)));
    expect(() => createPolicy('headmerge', calibratedContext(perHeadOnly, DIMS))).toThrow(/headmerge needs the joint \(all KV heads\) bases in the projections section, which this calibration lacks — recompute/);
  });
});

describe('headmerge on the tiny model', () => {
  it('runs finite and restores from snapshots (pre / post RoPE, ranks, a recent window); memory as computed', async () => {
    const model = await fixtureModel();
    const cal = manifestCalibration(model.manifest, await tinyCalibration());
    // head_dim 8, 2 KV heads: W = 16, r = 8 + 8 per token and layer; 2 layers × 2 sides × (16·8 + 16) floats
    const session = await calibratedRun('headmerge', () => Infinity, cal);
    expect(session.cache.memory().bytes).toBe(120 * 2 * 16 * 4 + 2 * 2 * 144 * 4);
    for (const spec of ['headmerge:rope=post', 'headmerge:k_rank=0.25,v_rank=12,recent=3']) {
      const run = await calibratedRun(spec, () => Infinity, cal);
      expect(run.cache.memory().ratio).toBeLessThan(1);
    }
  });

  it('after eviction in a composition, the heads encode what they share and stay finite', async () => {
    const model = await fixtureModel();
    const cal = manifestCalibration(model.manifest, await tinyCalibration());
    const session = new Session(model, { policy: 'h2o:heavy=16,recent=8 + headmerge', sampler: { seed: 2, temperature: 1 }, calibration: cal });
    await session.prefill([1, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4000, 12, 40, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72]);
    const ragged = [0, 1].some((l) => session.cache.tokens(l, 0).join() !== session.cache.tokens(l, 1).join());
    expect(ragged, 'h2o left the heads holding different tokens').toBe(true);
    for (let i = 0; i < 6; i++) {
      const event = await session.step();
      for (const x of session.nextTokenLogits!) expect(Number.isFinite(x)).toBe(true);
      // what headmerge encoded in a layer, it encoded in both heads (the tokens both held)
      for (let l = 0; l < 2; l++) {
        const tokens = (h: number) => event.decision.heads.filter((x) => x.layer === l && x.kvHead === h).flatMap((x) => x.reencodedTokens ?? []).sort((a, b) => a - b);
        expect(tokens(0)).toEqual(tokens(1));
      }
    }
  });
});
