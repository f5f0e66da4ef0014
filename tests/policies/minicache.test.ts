/** MiniCache: SLERP merge / restore, layer pairing, retention, byte accounting, decode blocks — by hand — and tiny-model runs. */
import { describe, expect, it } from 'vitest';
import type { Decision, HeadDecision } from '../../engine/cache/decision.ts';
import { angularDistance, crossRowCosine, relativeError, slerpMerge, slerpRestore } from '../../engine/pipeline/slerp.ts';
import { minicachePairs, retainedSet, startLayerOf } from '../../engine/pipeline/layer-pairs.ts';
import { minicacheGroupId } from '../../engine/policies/minicache.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { integrationRun, policyFor, prefillObservation, stepObservation, type Dims } from './helpers/policy.ts';
import { appendRows, storeOf } from './helpers/store.ts';

const norm = (x: ArrayLike<number>) => Math.sqrt(Array.from(x).reduce((s, v) => s + v * v, 0));
const unit = (x: number[]) => x.map((v) => v / norm(x));


const reencoded = (decision: Decision, l: number, h: number): number[] => (decision.layers?.[l]?.[h]?.reencode ?? []).map((re) => re.index).sort((a, b) => a - b);
const headOf = (decision: Decision, l: number, h: number): HeadDecision | null => decision.layers?.[l]?.[h] ?? null;

describe('minicache: SLERP merge and restoration (pipeline/slerp.ts)', () => {
  it('orthogonal unit vectors: e = (sin((1−t)π/2), sin(tπ/2)), a unit vector', () => {
    const m = slerpMerge([1, 0, 0], [0, 1, 0], 0.6);
    expect(m.omega).toBeCloseTo(Math.PI / 2, 12);
    expect(m.direction[0]).toBeCloseTo(Math.sin(0.4 * (Math.PI / 2)), 6);
    expect(m.direction[1]).toBeCloseTo(Math.sin(0.6 * (Math.PI / 2)), 6);
    expect(m.direction[2]).toBe(0);
    expect(norm(m.direction)).toBeCloseTo(1, 6);
  });

  it('keeps each vector’s norm: ‖restored‖ = ‖x‖, direction shared', () => {
    const a = [3, -1, 2, 0.5];
    const b = [1, 2, 2.5, -1];
    const m = slerpMerge(a, b, 0.6);
    const [ra, rb] = slerpRestore(m);
    expect(norm(ra)).toBeCloseTo(norm(a), 5);
    expect(norm(rb)).toBeCloseTo(norm(b), 5);
    expect(crossRowCosine(ra, 0, norm(ra), rb, 0, norm(rb), 4)).toBeCloseTo(1, 6);
    // the direction lies between the two: its angle to a is t·Ω, to b (1−t)·Ω
    const ua = unit(a);
    const ub = unit(b);
    const e = Array.from(m.direction);
    expect(Math.acos(ua.reduce((s, v, c) => s + v * e[c], 0))).toBeCloseTo(0.6 * m.omega, 5);
    expect(Math.acos(ub.reduce((s, v, c) => s + v * e[c], 0))).toBeCloseTo(0.4 * m.omega, 5);
  });

  it('t = 0 restores the first exactly in direction, t = 1 the second', () => {
    const a = [3, -1, 2, 0.5];
    const b = [1, 2, 2.5, -1];
    const [a0] = slerpRestore(slerpMerge(a, b, 0));
    a0.forEach((v, c) => expect(v).toBeCloseTo(a[c], 5));
    const [, b1] = slerpRestore(slerpMerge(a, b, 1));
    b1.forEach((v, c) => expect(v).toBeCloseTo(b[c], 5));
    expect(relativeError(a, 0, a0, 0, 4)).toBeLessThan(1e-6);
  });

  it('Ω = 0 (parallel vectors): both restore exactly, whatever t', () => {
    const a = [1, 2, -2, 4];
    const b = a.map((v) => 2.5 * v);
    const m = slerpMerge(a, b, 0.6);
    expect(m.omega).toBeLessThan(1e-6);
    const [ra, rb] = slerpRestore(m);
    ra.forEach((v, c) => expect(v).toBeCloseTo(a[c], 5));
    rb.forEach((v, c) => expect(v).toBeCloseTo(b[c], 5));
    expect(norm(m.direction)).toBeCloseTo(1, 6);
  });

  it('degenerate inputs: antipodal → the nearer endpoint; a zero vector takes the other’s direction', () => {
    expect(Array.from(slerpMerge([1, 0], [-1, 0], 0.4).direction)).toEqual([1, 0]);
    expect(Array.from(slerpMerge([1, 0], [-1, 0], 0.6).direction)).toEqual([-1, 0]);
    const z = slerpMerge([0, 0], [0, 3], 0.6);
    expect(Array.from(z.direction)).toEqual([0, 1]);
    expect(Array.from(slerpRestore(z)[0])).toEqual([0, 0]);
    expect(Array.from(slerpMerge([0, 0], [0, 0], 0.6).direction)).toEqual([0, 0]);
    expect(angularDistance(-1)).toBe(1);
    expect(angularDistance(0)).toBeCloseTo(0.5, 12);
  });
});

describe('minicache: pairing and retention', () => {
  it('pairs adjacent layers from the start layer (default the middle) up', () => {
    expect(startLayerOf(0.5, 8)).toBe(4);
    expect(startLayerOf(0.5, 7)).toBe(3);
    expect(startLayerOf(2, 8)).toBe(2);
    expect(startLayerOf(0, 8)).toBe(0);
    expect(minicachePairs(8, 4)).toEqual([
      [4, 5],
      [6, 7],
    ]);
    expect(minicachePairs(7, 3)).toEqual([
      [3, 4],
      [5, 6],
    ]);
    expect(minicachePairs(2, 1)).toEqual([]);
    expect(minicachePairs(2, 0)).toEqual([[0, 1]]);
  });

  it('retention: the round(γ·m) most distant (ties → lower index), or the top γ of the distance range', () => {
    const distances = [0.1, 0.5, 0.3, 0.5];
    expect(Array.from(retainedSet(distances, 0.5, 'share'))).toEqual([0, 1, 0, 1]);
    expect(Array.from(retainedSet(distances, 0.25, 'share'))).toEqual([0, 1, 0, 0]);
    expect(Array.from(retainedSet(distances, 0.1, 'share'))).toEqual([0, 0, 0, 0]); // round(0.4) = 0
    expect(Array.from(retainedSet(distances, 0, 'share'))).toEqual([0, 0, 0, 0]);
    expect(Array.from(retainedSet([0, 0.2, 0.9, 1], 0.15, 'range'))).toEqual([0, 0, 1, 1]); // ≥ 1 − 0.15
    expect(Array.from(retainedSet([0, 0.2, 0.9, 1], 0, 'range'))).toEqual([0, 0, 0, 0]);
    expect(Array.from(retainedSet([], 0.5, 'share'))).toEqual([]);
  });

  it('a 4-layer cache: only layers 2 and 3 are paired; measures per layer', () => {
    const dims: Dims = { nLayers: 4, nKvHeads: 2, nHeads: 4, headDim: 4 };
    // keys: layer 0 [1,0,0,0]; layers ≥ 1 rotate by 30° per layer in the (0,1) plane
    const angle = (l: number) => (l * Math.PI) / 6;
    const store = storeOf(
      dims,
      4,
      (l, h, i) => [Math.cos(angle(l)) * (1 + i + h), Math.sin(angle(l)) * (1 + i + h), 0, 0],
      (l, h, i) => [0, 0, 1 + l, 1 + i],
    );
    const decision = policyFor('minicache:retain=0', dims).afterPrefill(store, prefillObservation(4));
    expect(decision.layers?.[0]).toEqual([null, null]);
    expect(decision.layers?.[1]).toEqual([null, null]);
    for (const l of [2, 3]) for (const h of [0, 1]) expect(reencoded(decision, l, h)).toEqual([0, 1, 2, 3]);
    const m = decision.measures!;
    expect(m.pair_partner).toEqual([NaN, NaN, 3, 2]);
    expect(m.layer_similarity[0]).toBeNaN();
    for (const l of [1, 2, 3]) expect(m.layer_similarity[l]).toBeCloseTo(Math.cos(Math.PI / 6), 6);
    expect(m.retained_fraction).toEqual([NaN, NaN, 0, 0]);
    expect(decision.groups).toHaveLength(2 * 4);
    expect(decision.groups![0]).toMatchObject({ id: minicacheGroupId('minicache.', 2, 3, 0, 0), kBytes: 16, vBytes: 16 });
  });
});

describe('minicache: the decision on a hand-made cache (2 layers, start 0)', () => {
  const dims: Dims = { nLayers: 2, nKvHeads: 2, nHeads: 4, headDim: 4 };
  const keyOf = (l: number, h: number, i: number) => (l === 0 ? [1 + i, h, 0, 1] : [1 + i, h, 0.5 * i, 1 + l]);
  const valueOf = (l: number, h: number, i: number) => [h + 1, i, l + 1, 2];

  it('the graph sees ‖x‖·e in both layers, K and V each their own SLERP; codec holds only the norms', () => {
    const store = storeOf(dims, 3, keyOf, valueOf);
    const decision = policyFor('minicache:start=0,retain=0', dims).afterPrefill(store, prefillObservation(3));
    const head = headOf(decision, 1, 1)!;
    const re = head.reencode!.find((r) => r.index === 2)!;
    const merged = slerpMerge(keyOf(0, 1, 2), keyOf(1, 1, 2), 0.6);
    const [, restoredUpper] = slerpRestore(merged);
    expect(Array.from(re.keys!)).toEqual(Array.from(restoredUpper));
    const [, restoredValue] = slerpRestore(slerpMerge(valueOf(0, 1, 2), valueOf(1, 1, 2), 0.6));
    expect(Array.from(re.values!)).toEqual(Array.from(restoredValue));
    expect(re.codec).toEqual({ name: 'minicache', kBits: 32, vBits: 32, kElements: 0, vElements: 0, kMetaBytes: 4, vMetaBytes: 4, group: 'minicache.L0-1/kv1/t2' });
    expect(re.kError).toBeCloseTo(relativeError(keyOf(1, 1, 2), 0, restoredUpper, 0, 4), 12);
    store.apply(decision);
    const keysAfter = Array.from(store.keys(0, 1).subarray(2 * 4, 3 * 4));
    const [restoredLower] = slerpRestore(merged);
    expect(keysAfter).toEqual(Array.from(restoredLower));
    expect(store.codec(0, 1, 2)?.group).toBe('minicache.L0-1/kv1/t2');
  });

  it('bytes: the shared direction once per pair × head × token, plus each entry’s norms; a group goes with its last member', () => {
    const store = storeOf(dims, 4, keyOf, valueOf);
    const full = store.memory();
    expect(full.bytes).toBe(2 * 2 * 4 * 4 * 4 * 2); // layers × heads × tokens × d × fp32 × (K, V)
    store.apply(policyFor('minicache:start=0,retain=0', dims).afterPrefill(store, prefillObservation(4)));
    let memory = store.memory();
    // 16 entries × (4 B ‖k‖ + 4 B ‖v‖) + 8 groups × (16 B K direction + 16 B V direction)
    expect(memory.groupBytes).toBe(8 * 32);
    expect(memory.kBytes).toBe(16 * 4 + 8 * 16);
    expect(memory.vBytes).toBe(16 * 4 + 8 * 16);
    expect(memory.bytes).toBe(384);
    expect(memory.heldEntries).toBe(16);
    // evicting token 0 from layer 0 head 0: its norms go, the direction stays (layer 1 still uses it)
    const drop0 = { keep: [1, 2, 3] };
    store.apply({ layers: [[drop0, null], null] });
    memory = store.memory();
    expect(memory.groupBytes).toBe(8 * 32);
    expect(memory.bytes).toBe(384 - 8);
    // … and from layer 1 head 0: the last member, the group is gone
    store.apply({ layers: [null, [drop0, null]] });
    memory = store.memory();
    expect(memory.groupBytes).toBe(7 * 32);
    expect(memory.bytes).toBe(384 - 16 - 32);
  });

  it('retention keeps the most distant state exact in both layers; separate K and V, or joint', () => {
    // token 1's keys are orthogonal across the layers, token 3's values antiparallel-ish; the rest parallel
    const keys = (l: number, _h: number, i: number) => (i === 1 && l === 1 ? [0, 0, 1, 0] : [1, 0, 0, 0.1 * i]);
    const values = (l: number, _h: number, i: number) => (i === 3 && l === 1 ? [-1, 0.2, 0, 0] : [1, 0, 0.1 * i, 0]);
    // 4 paired tokens per head, round(0.25·4) = 1 retained per side
    const store = storeOf(dims, 4, keys, values);
    const decision = policyFor('minicache:start=0,retain=0.25', dims).afterPrefill(store, prefillObservation(4));
    for (const l of [0, 1]) {
      const byIndex = new Map((headOf(decision, l, 0)!.reencode ?? []).map((re) => [re.index, re]));
      expect([...byIndex.keys()].sort()).toEqual([0, 1, 2, 3]);
      // token 1: key stays exact (4 fp32 elements, no norm), value merged
      expect(byIndex.get(1)!.codec).toMatchObject({ name: 'minicache-v', kElements: 4, kMetaBytes: 0, vElements: 0, vMetaBytes: 4 });
      expect(byIndex.get(1)!.keys).toBeUndefined();
      // token 3: value stays exact, key merged
      expect(byIndex.get(3)!.codec).toMatchObject({ name: 'minicache-k', kElements: 0, vElements: 4 });
      expect(byIndex.get(3)!.values).toBeUndefined();
    }
    expect(decision.groups!.find((g) => g.id === 'minicache.L0-1/kv0/t1')).toMatchObject({ kBytes: 0, vBytes: 16 });
    expect(decision.measures!.retained_fraction).toEqual([0.25, 0.25]); // (1 K + 1 V) per head / (2 · 4)

    const joint = policyFor('minicache:start=0,retain=0.25,retain_by=joint', dims).afterPrefill(storeOf(dims, 4, keys, values), prefillObservation(4));
    // joint: one token retained whole — token 3 (values antiparallel-ish: distance > 0.5) beats token 1 (0.5)
    expect(reencoded(joint, 0, 0)).toEqual([0, 1, 2]);
    expect(reencoded(joint, 1, 0)).toEqual([0, 1, 2]);
    expect(joint.measures!.retained_fraction).toEqual([0.25, 0.25]);
  });

  it('pairs only tokens both layers hold (after an eviction) as plain single-token entries', () => {
    const store = storeOf(dims, 5, keyOf, valueOf);
    // layer 1 head 0 lost token 2; layer 0 head 1 merged tokens 3 and 4 into one entry
    store.apply({ layers: [[null, { keep: [0, 1, 2], merge: [{ members: [3, 4], weights: [0.5, 0.5] }] }], [{ keep: [0, 1, 3, 4] }, null]] });
    const decision = policyFor('minicache:start=0,retain=0', dims).afterPrefill(store, prefillObservation(5));
    expect(reencoded(decision, 0, 0)).toEqual([0, 1, 3, 4]); // token 2 (index 2) unpaired
    expect(reencoded(decision, 1, 0)).toEqual([0, 1, 2, 3]); // tokens 0, 1, 3, 4
    expect(reencoded(decision, 0, 1)).toEqual([0, 1, 2]);
    expect(reencoded(decision, 1, 1)).toEqual([0, 1, 2]);
    store.apply(decision);
    expect(store.codec(0, 0, 2)).toBeNull();
    expect(store.codec(0, 1, 3)).toBeNull();
  });

  it('decoding: tokens merge in blocks once they leave the recent window; each token is considered once', () => {
    const store = storeOf(dims, 4, keyOf, valueOf);
    const policy = policyFor('minicache:start=0,retain=0,recent=2,block=3', dims);
    store.apply(policy.afterPrefill(store, prefillObservation(4)));
    const merged = () => Array.from({ length: store.length(0, 0) }, (_, i) => store.codec(0, 0, i) !== null);
    expect(merged()).toEqual([true, true, true, true]);
    const steps: (number[] | null)[] = [];
    for (let s = 0; s < 6; s++) {
      appendRows(store, 1, (l, h) => keyOf(l, h, 4 + s), (l, h) => valueOf(l, h, 4 + s));
      const decision = policy.afterStep(store, stepObservation(null, s));
      steps.push(decision.layers ? reencoded(decision, 0, 0) : null);
      store.apply(decision);
    }
    // tokens 4, 5, 6 leave the 2-token window when token 8 arrives (step 4); tokens 7, 8 not yet
    expect(steps).toEqual([null, null, null, null, [4, 5, 6], null]);
    expect(merged()).toEqual([true, true, true, true, true, true, true, false, false, false]);
    // the state round-trips: a restored policy merges the next block at the same step
    const state = policy.getState();
    const again = policyFor('minicache:start=0,retain=0,recent=2,block=3', dims);
    again.setState(state);
    expect(again.getState()).toEqual(state);
  });
});

describe('minicache: sessions on the tiny model', () => {
  it('prefill + decode with snapshot / restore (start 0: the fixture has 2 layers)', async () => {
    await integrationRun('minicache:start=0,recent=4,block=4', () => 120);
  });

  it('re-encodes entries and holds fewer bytes; composes with eviction', async () => {
    const model = await fixtureModel();
    for (const spec of ['minicache:start=0', 'streaming:sinks=4,recent=60 + minicache:start=0', 'h2o:heavy=24,recent=24 + minicache:start=0', 'minicache:start=0 + h2o:heavy=24,recent=24']) {
      const session = new Session(model, { policy: spec, sampler: { seed: 3, temperature: 1 }, prefillChunk: 32 });
      await session.prefill([1, ...tokenSequence(99, 5)]);
      const reencodes = session.trace.all()[0].decision.reencoded;
      expect(reencodes, spec).toBeGreaterThan(0);
      for (let i = 0; i < 40; i++) await session.step();
      const memory = session.memory();
      expect(memory.groupBytes, spec).toBeGreaterThan(0);
      expect(memory.bytes, spec).toBeLessThan(memory.heldEntries * 2 * 4 * session.dims.headDim);
      for (let l = 0; l < session.dims.nLayers; l++) {
        for (let h = 0; h < session.dims.nKvHeads; h++) for (const x of session.cache.keys(l, h)) expect(Number.isFinite(x)).toBe(true);
      }
    }
  });

  it('default parameters leave the 2-layer fixture unpaired (start = ⌊L/2⌋ = 1): no change, layer measures still reported', async () => {
    const model = await fixtureModel();
    const session = new Session(model, { policy: 'minicache', prefillChunk: 32 });
    await session.prefill([1, ...tokenSequence(40, 5)]);
    const event = session.trace.all()[0];
    expect(event.decision.reencoded).toBe(0);
    expect(event.decision.measures?.pair_partner).toEqual([NaN, NaN]);
    expect(event.decision.measures?.layer_similarity[1]).toBeGreaterThan(-1);
    expect(session.memory().ratio).toBe(1);
  });
});
