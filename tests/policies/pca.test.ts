/** pca (MatryoshkaKV's training-free PCA): exact projections on hand-made bases, ranks, memory, decode, calibration errors, tiny-model runs. */
import { describe, expect, it } from 'vitest';
import type { Decision } from '../../engine/cache/decision.ts';
import type { KVCacheStore } from '../../engine/cache/store.ts';
import { CalibrationError, type Calibration } from '../../engine/calibration/format.ts';
import type { PcaBasisJson } from '../../engine/calibration/projections.ts';
import { createPolicy } from '../../engine/policies/spec.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel } from '../engine/helpers/fixture.ts';
import { basisJson, calibratedContext, calibratedRun, handCalibration, manifestCalibration, projectionCalibration, rotationBasis, tinyCalibration } from './helpers/calibration.ts';
import { contextFor, DIMS, prefillObservation, stepObservation } from './helpers/policy.ts';
import { appendRows, noise, storeOf } from './helpers/store.ts';

const d = DIMS.headDim;
const MEAN = [0.5, -1, 2, 0.25];

/** Per head its own rotation; keys and values share the mean MEAN. */
function basisFor(side: 'keys' | 'values', l: number, h: number, eigenvalues?: number[]): PcaBasisJson {
  return basisJson(rotationBasis(d, 1 + l * 4 + h * 2 + (side === 'values' ? 1 : 0)), eigenvalues, MEAN);
}

const calibration = projectionCalibration(DIMS, (side, l, h) => basisFor(side, l, h));

/** μ + a·u_0 + b·u_1 of a head's basis: exactly representable at rank 2. */
function inSpan(side: 'keys' | 'values', l: number, h: number, t: number): number[] {
  const [u0, u1] = basisFor(side, l, h).components;
  return MEAN.map((m, i) => m + (t + 1) * u0[i] - 0.5 * t * u1[i]);
}

function run(spec: string, store: KVCacheStore, cal: Calibration = calibration): Decision {
  const policy = createPolicy(spec, calibratedContext(cal, DIMS));
  const decision = policy.afterPrefill(store, prefillObservation(store.tokenCount));
  store.apply(decision);
  return decision;
}

describe('pca: projections on hand-made bases', () => {
  it('rank 2 reproduces vectors in the span exactly; every entry is re-encoded with its coefficients', () => {
    const store = storeOf(DIMS, 6, (l, h, t) => inSpan('keys', l, h, t), (l, h, t) => inSpan('values', l, h, t));
    const before = store.keys(1, 1).slice();
    const decision = run('pca:k_rank=2,v_rank=2', store);
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        const head = decision.layers![l]![h]!;
        expect(head.reencode!.map((re) => re.index)).toEqual([0, 1, 2, 3, 4, 5]);
        for (const re of head.reencode!) {
          expect(re.codec).toMatchObject({ name: 'pca', kElements: 2, vElements: 2, kBits: 32, vBits: 32, group: `pca.L${l}/kv${h}/k2v2`, rank: 2 });
          expect(re.kError!).toBeLessThan(1e-6);
          expect(re.vError!).toBeLessThan(1e-6);
        }
      }
    }
    Array.from(store.keys(1, 1)).forEach((x, i) => expect(x).toBeCloseTo(before[i], 5));
  });

  it('below the data’s rank the graph sees μ + Σ_{j<r} ((x − μ)·u_j) u_j', () => {
    const rows = (l: number, h: number, t: number) => noise(d, 100 + l * 10 + h * 3 + t, 4);
    const store = storeOf(DIMS, 3, rows, rows);
    run('pca:k_rank=1,v_rank=3', store);
    for (const [side, r] of [['keys', 1], ['values', 3]] as const) {
      const u = basisFor(side, 0, 1).components;
      for (let t = 0; t < 3; t++) {
        const x = rows(0, 1, t);
        const expected = [...MEAN];
        for (let j = 0; j < r; j++) {
          const c = Math.fround(x.reduce((s, xi, i) => s + (xi - MEAN[i]) * u[j][i], 0));
          for (let i = 0; i < d; i++) expected[i] += c * u[j][i];
        }
        const got = (side === 'keys' ? store.keys(0, 1) : store.values(0, 1)).subarray(t * d, (t + 1) * d);
        Array.from(got).forEach((g, i) => expect(g).toBeCloseTo(expected[i], 5));
        expect(store.exact(0, 1, t)![side]).toEqual(Float32Array.from(x));
      }
    }
  });

  it('memory: coefficients per entry plus one basis + mean per head, K and V separately', () => {
    const rows = (l: number, h: number, t: number) => noise(d, 7 + t + 5 * h + 11 * l);
    const n = 10;
    const store = storeOf(DIMS, n, rows, rows);
    run('pca:k_rank=1,v_rank=3', store);
    const heads = DIMS.nLayers * DIMS.nKvHeads;
    const m = store.memory();
    expect(m.kBytes).toBe(heads * (n * 1 * 4 + (d * 1 + d) * 4));
    expect(m.vBytes).toBe(heads * (n * 3 * 4 + (d * 3 + d) * 4));
    expect(m.groupBytes).toBe(heads * ((d * 1 + d) * 4 + (d * 3 + d) * 4));
    expect(m.fullKBytes).toBe(heads * n * d * 4);
  });

  it('a side at rank head_dim stays exact (no projection, no basis); both at head_dim change nothing', () => {
    const rows = (l: number, h: number, t: number) => noise(d, 40 + t + h + l);
    const store = storeOf(DIMS, 4, rows, rows);
    const values = store.values(0, 0).slice();
    const decision = run('pca:k_rank=2,v_rank=4', store);
    const re = decision.layers![0]![0]!.reencode![0];
    expect(re.values).toBeUndefined();
    expect(re.codec.vElements).toBe(d);
    expect(store.values(0, 0)).toEqual(values);
    expect(store.memory().vBytes).toBe(4 * 4 * d * 4);
    expect(run('pca:k_rank=4,v_rank=1.5', storeOf(DIMS, 4, rows, rows)).layers![0]![0]!.reencode![0].codec).toMatchObject({ kElements: 4, vElements: 1 });
    // both at head_dim: nothing is re-encoded (the decision carries the measures only)
    const none = run('pca:k_rank=4,v_rank=4', storeOf(DIMS, 4, rows, rows));
    expect(none.layers).toBeNull();
    expect(none.headMeasures!.k_rank[1][1]).toEqual([4]);
  });

  it('fractions of head_dim and explained-variance ranks per head; headMeasures carry spectra and ranks', () => {
    const spectra = [
      [4, 3, 2, 1],
      [10, 1, 1, 1],
    ];
    const cal = projectionCalibration(DIMS, (side, l, h) => basisFor(side, l, h, spectra[h]));
    const rows = (l: number, h: number, t: number) => noise(d, 3 + t);
    const decision = run('pca:variance=0.7', storeOf(DIMS, 2, rows, rows), cal);
    expect(decision.headMeasures!.k_rank).toEqual([
      [[2], [1]],
      [[2], [1]],
    ]);
    expect(decision.headMeasures!.v_singular_values[1][0]).toEqual([2, Math.sqrt(3), Math.sqrt(2), 1]);
    expect(decision.layers![0]![1]!.reencode![0].codec.kElements).toBe(1);
    const half = run('pca:k_rank=0.5,v_rank=0.25', storeOf(DIMS, 2, rows, rows), cal);
    expect(half.headMeasures!.k_rank[0][0]).toEqual([2]);
    expect(half.headMeasures!.v_rank[0][0]).toEqual([1]);
  });
});

describe('pca: decoding', () => {
  it('each step encodes only the entry that left the recent window; the group is declared once', () => {
    const rows = (l: number, h: number, t: number) => noise(d, 900 + t * 7 + h + l * 3, 2);
    const store = storeOf(DIMS, 5, rows, rows);
    const policy = createPolicy('pca:k_rank=2,v_rank=2,recent=2', calibratedContext(calibration, DIMS));
    const first = policy.afterPrefill(store, prefillObservation(5));
    expect(first.layers![1]![0]!.reencode!.map((re) => re.index)).toEqual([0, 1, 2]);
    expect(first.groups).toHaveLength(4);
    store.apply(first);
    for (let step = 0; step < 3; step++) {
      appendRows(store, 1, rows, rows);
      const decision = policy.afterStep(store, stepObservation(null, step));
      expect(decision.layers![0]![1]!.reencode!.map((re) => re.index)).toEqual([3 + step]);
      expect(decision.groups).toBeUndefined();
      store.apply(decision);
    }
    expect(store.codec(0, 0, 5)).not.toBeNull();
    expect(store.codec(0, 0, 6)).toBeNull();
    expect(store.memory().kBytes).toBe(4 * (6 * 2 * 4 + 2 * d * 4 + (2 * d + d) * 4));
  });

  it('looks back from the newest entry to the first coded one: another member’s codes and what lies below them stay', () => {
    const rows = (l: number, h: number, t: number) => noise(d, 5 + t);
    const store = storeOf(DIMS, 4, rows, rows);
    store.apply({ layers: [[{ keep: [0, 1, 2, 3], reencode: [{ index: 1, codec: { name: 'other', kBits: 8, vBits: 8, kElements: d, vElements: d, kMetaBytes: 0, vMetaBytes: 0 } }] }, null], null] });
    const decision = run('pca', store);
    expect(decision.layers![0]![0]!.reencode!.map((re) => re.index)).toEqual([2, 3]);
    expect(decision.layers![0]![1]!.reencode!.map((re) => re.index)).toEqual([0, 1, 2, 3]);
    expect(store.codec(0, 0, 1)!.name).toBe('other');
    expect(store.codec(0, 0, 0)).toBeNull();
  });
});

describe('pca: calibration', () => {
  it('refuses to start without projections, with a message that says how to compute them', () => {
    expect(() => createPolicy('pca', contextFor(DIMS))).toThrow(/^pca needs calibration data \(projections\): none was loaded for this model — compute one with `kvscope calibrate/);
    expect(() => createPolicy('pca', calibratedContext(handCalibration(DIMS, { layerError: [1, 1] }), DIMS))).toThrow(
      /pca needs the calibration section\(s\) projections, which this calibration lacks/,
    );
    expect(() => createPolicy('pca', { ...contextFor(DIMS), calibration: null, calibrationError: 'calibration.json is stale: …' })).toThrow(/pca needs calibration data \(projections\): calibration.json is stale/);
    const other = projectionCalibration({ ...DIMS, headDim: 2 }, () => basisJson(rotationBasis(2, 1)));
    expect(() => createPolicy('pca', calibratedContext(other, DIMS))).toThrow(CalibrationError);
    expect(() => createPolicy('pca', calibratedContext(other, DIMS))).toThrow(/projections are for 2 layers × 2 KV heads of dim 2, this model has 2 × 2 of dim 4 — recompute/);
  });
});

describe('pca on the tiny model', () => {
  it('runs finite, restores from snapshots, and holds less than the fp32 cache', async () => {
    const model = await fixtureModel();
    const cal = manifestCalibration(model.manifest, await tinyCalibration());
    // head_dim 8, rank 4 + 4 of 8: 120 tokens × 4 heads × 32 bytes, plus 4 heads × 2 sides × (8·4 + 8) floats
    const session = await calibratedRun('pca', () => Infinity, cal);
    const memory = session.cache.memory();
    expect(memory.bytes).toBe(120 * 4 * 32 + 4 * 2 * 40 * 4);
    expect(memory.ratio).toBeCloseTo((120 * 4 * 32 + 1280) / (120 * 4 * 64), 12);
    for (const spec of ['pca:variance=0.9,recent=4', 'pca:k_rank=1,v_rank=0.75']) {
      const run = await calibratedRun(spec, () => Infinity, cal);
      expect(run.cache.memory().ratio).toBeLessThan(1);
      expect(run.cache.memory().groupBytes).toBeGreaterThan(0);
    }
    const plain = new Session(model, { policy: 'full' });
    expect(() => plain.setPolicy('pca')).toThrow(/pca needs calibration data/);
  });

  it('at full rank of one side the logits of that side are the full cache’s', async () => {
    const model = await fixtureModel();
    const cal = manifestCalibration(model.manifest, await tinyCalibration());
    const prompt = [1, 5, 9, 14, 22, 31, 40, 51, 63, 70];
    const full = new Session(model, { policy: 'full', calibration: cal });
    const both = new Session(model, { policy: 'pca:k_rank=8,v_rank=8', calibration: cal });
    await full.prefill(prompt);
    await both.prefill(prompt);
    const a = await full.step({ token: 7 });
    const b = await both.step({ token: 7 });
    expect(b.token.id).toBe(a.token.id);
    expect(Array.from(both.nextTokenLogits!)).toEqual(Array.from(full.nextTokenLogits!));
  });
});
