/** CSKV: ranks, projection, exact window, full-rank exactness, byte-exact memory, decoding, tiny-model runs. */
import { describe, expect, it } from 'vitest';
import type { Decision } from '../../engine/cache/decision.ts';
import type { KVCacheStore } from '../../engine/cache/store.ts';
import { PolicySpecError } from '../../engine/errors.ts';
import { Rope } from '../../engine/model/rope.ts';
import { decideWithStages, standaloneEnv } from '../../engine/pipeline/pipeline.ts';
import type { StageEnv } from '../../engine/pipeline/stages.ts';
import { cskvTransform, projectRow, resolveRank, type CskvOptions } from '../../engine/policies/cskv.ts';
import { relativeL2 } from '../../engine/quant/quantize.ts';
import { Xoshiro128 } from '../../engine/sampling.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { cacheOf, integrationRun, policyFor, type Dims } from './helpers/policy.ts';

const D = 8;
const DIMS8: Dims = { nLayers: 2, nKvHeads: 2, nHeads: 4, headDim: D };
const FP32 = 4;
const rope = new Rope({ theta: 10000, dim: D }, D);
const OPTIONS: CskvOptions = { kRank: 3, vRank: 2, window: 4, bits: 32, keys: 'pre_rope', loops: 10, seed: 0 };

/** Appends n tokens of seeded random K/V (keys rotated to their positions, like the graph's). */
function appendTokens(store: KVCacheStore, n: number, seed: number): void {
  const rng = new Xoshiro128(seed);
  const first = store.tokenCount;
  for (let l = 0; l < DIMS8.nLayers; l++) {
    const keys = Float32Array.from({ length: DIMS8.nKvHeads * n * D }, () => rng.nextFloat() * 2 - 1);
    const values = Float32Array.from({ length: DIMS8.nKvHeads * n * D }, () => rng.nextFloat() * 2 - 1);
    for (let h = 0; h < DIMS8.nKvHeads; h++) for (let i = 0; i < n; i++) rope.rotate(keys, first + i, (h * n + i) * D, 1);
    store.appendLayer(l, keys, values, n, Array.from({ length: n }, (_, i) => first + i), first);
  }
  store.tokenCount = first + n;
}

function envOf(store: KVCacheStore, phase: 'prefill' | 'step'): StageEnv {
  return { ...standaloneEnv(store, phase, { prefix: 'cskv.' }), rope };
}

function runner(options: CskvOptions) {
  const transform = cskvTransform(options);
  return {
    transform,
    decide: (store: KVCacheStore, phase: 'prefill' | 'step'): Decision => decideWithStages({ transforms: [transform] }, envOf(store, phase), { id: 'cskv', reportScores: 'selected' }),
  };
}

describe('cskv: ranks and projection', () => {
  it('ranks: a fraction of head_dim below 1, else an integer capped at head_dim', () => {
    expect(resolveRank(0.5, 32, 'k_rank')).toBe(16);
    expect(resolveRank(0.01, 32, 'k_rank')).toBe(1);
    expect(resolveRank(4, 32, 'k_rank')).toBe(4);
    expect(resolveRank(40, 32, 'k_rank')).toBe(32);
    expect(() => resolveRank(1.5, 32, 'k_rank')).toThrow(PolicySpecError);
    expect(() => resolveRank(0, 32, 'k_rank')).toThrow(PolicySpecError);
    expect(() => policyFor('cskv:bits=12')).toThrow(PolicySpecError);
  });

  it('projectRow: Uᵀ·stored(U·x); the identity basis is exact in fp32, quantized coefficients are not', () => {
    const identity = Float32Array.from({ length: 4 * 4 }, (_, i) => (i % 5 === 0 ? 1 : 0));
    const x = [0.5, -2, 3, 1.25];
    expect(Array.from(projectRow(x, identity, 4, 32))).toEqual(x);
    // one basis row e₀: keeps channel 0 only
    expect(Array.from(projectRow(x, Float32Array.from([1, 0, 0, 0]), 4, 32))).toEqual([0.5, 0, 0, 0]);
    // 2-bit coefficients {0.5, −2, 3, 1.25}: scale 5/3, zero −2 → −2, 3 and two rounded levels
    const q = projectRow(x, identity, 4, 2);
    expect(q[1]).toBe(-2);
    expect(q[2]).toBeCloseTo(3, 2); // the fp16 scale's rounding
    expect(q[0]).not.toBe(0.5);
  });
});

describe('cskv on a hand-made cache', () => {
  it('prefill: entries older than the window projected, the window untouched; bytes exact', () => {
    const store = cacheOf(0, DIMS8);
    appendTokens(store, 12, 1);
    const windowBefore = Array.from(store.keys(1, 1).subarray(8 * D));
    const { decide, transform } = runner(OPTIONS);
    const decision = decide(store, 'prefill');
    store.apply(decision);
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        for (let i = 0; i < 12; i++) expect(store.codec(l, h, i)?.name ?? null).toBe(i < 8 ? 'cskv-k3v2' : null);
        expect(store.codec(l, h, 0)!.group).toBe(`cskv.L${l}/kv${h}/basis@12`);
      }
    }
    expect(Array.from(store.keys(1, 1).subarray(8 * D))).toEqual(windowBefore);
    // bytes: 8 projected entries × (3 + 2) fp32 coefficients, 4 exact entries, one basis group of (3 + 2) × d fp32 per head
    const memory = store.memory();
    expect(memory.kBytes).toBe(4 * (8 * 3 * FP32 + 4 * D * FP32 + 3 * D * FP32));
    expect(memory.vBytes).toBe(4 * (8 * 2 * FP32 + 4 * D * FP32 + 2 * D * FP32));
    expect(memory.groupBytes).toBe(4 * 5 * D * FP32);
    // measures on the fitting decision: the whole spectrum (d values, descending) and the ranks
    expect(decision.headMeasures!.k_singular_values[0][1].length).toBe(D);
    expect(decision.headMeasures!.k_rank[1][0]).toEqual([3]);
    expect(decision.headMeasures!.v_rank[1][0]).toEqual([2]);
    expect(transform.bases.every((b) => b !== null && b.k.length === 3 * D && b.v.length === 2 * D)).toBe(true);
    // the graph's key is the basis reconstruction of the un-rotated key, rotated back
    const exact = store.exact(0, 1, 5)!;
    const unrotated = Float32Array.from(exact.keys);
    rope.rotate(unrotated, -5);
    const expected = projectRow(unrotated, transform.bases[1]!.k, D, 32);
    rope.rotate(expected, 5);
    Array.from(store.keys(0, 1).subarray(5 * D, 6 * D)).forEach((v, c) => expect(v).toBeCloseTo(expected[c], 6));
  });

  it('full rank reconstructs exactly (up to fp32 rounding), pre- and post-RoPE; lower ranks lose more', () => {
    const errors: number[] = [];
    for (const keys of ['pre_rope', 'post_rope'] as const) {
      for (const rank of [8, 6, 3]) {
        const store = cacheOf(0, DIMS8);
        appendTokens(store, 20, 2);
        const { decide } = runner({ ...OPTIONS, kRank: rank, vRank: rank, keys });
        const decision = decide(store, 'prefill');
        const re = decision.layers![1]![0]!.reencode!;
        const kError = Math.max(...re.map((r) => r.kError!));
        const vError = Math.max(...re.map((r) => r.vError!));
        if (rank === 8) {
          expect(kError).toBeLessThan(1e-6);
          expect(vError).toBeLessThan(1e-6);
        }
        errors.push(re.reduce((s, r) => s + r.kError! + r.vError!, 0));
      }
    }
    expect(errors[1]).toBeGreaterThan(errors[0]);
    expect(errors[2]).toBeGreaterThan(errors[1]);
    expect(errors[5]).toBeGreaterThan(errors[4]);
  });

  it('decoding: each step projects the entry leaving the window onto the same basis (O(1)); no refit', () => {
    const store = cacheOf(0, DIMS8);
    appendTokens(store, 12, 3);
    const { decide, transform } = runner(OPTIONS);
    store.apply(decide(store, 'prefill'));
    const basis = Array.from(transform.bases[0]!.k);
    appendTokens(store, 1, 4);
    const step = decide(store, 'step');
    expect(step.layers![0]![0]!.reencode!.map((r) => r.index)).toEqual([8]);
    expect(step.headMeasures).toBeUndefined();
    store.apply(step);
    expect(store.codec(0, 0, 8)!.group).toBe('cskv.L0/kv0/basis@12');
    expect(store.codec(0, 0, 9)).toBeNull();
    expect(Array.from(transform.bases[0]!.k)).toEqual(basis);
  });

  it('a prompt within the window: the basis is fitted when the first entry leaves it', () => {
    const store = cacheOf(0, DIMS8);
    appendTokens(store, 3, 5);
    const { decide, transform } = runner(OPTIONS);
    expect(decide(store, 'prefill').layers).toBeNull();
    expect(transform.bases.every((b) => b === null)).toBe(true);
    appendTokens(store, 2, 6);
    const step = decide(store, 'step');
    expect(step.layers![1]![1]!.reencode!.map((r) => r.index)).toEqual([0]);
    expect(step.headMeasures!.v_singular_values[1][1].length).toBe(D);
    expect(transform.bases[3]!.group).toBe('cskv.L1/kv1/basis@5');
  });

  it('quantized coefficients: per-token scale + zero (4 bytes) per entry and side; fp16 stores 2 bytes each', () => {
    for (const [bits, perEntry] of [
      [4, Math.ceil((3 * 4) / 8) + 4],
      [16, 3 * 2],
    ] as const) {
      const store = cacheOf(0, DIMS8);
      appendTokens(store, 12, 7);
      const { decide } = runner({ ...OPTIONS, bits });
      const decision = decide(store, 'prefill');
      store.apply(decision);
      expect(store.codec(0, 0, 0)!.name).toBe(`cskv-k3v2-${bits}bit`);
      expect(store.memory().kBytes).toBe(4 * (8 * perEntry + 4 * D * FP32 + 3 * D * FP32));
      const exact = runner(OPTIONS).decide(cacheWith(12, 7), 'prefill').layers![0]![0]!.reencode!;
      const lossy = decision.layers![0]![0]!.reencode!;
      expect(lossy.reduce((s, r) => s + r.kError!, 0)).toBeGreaterThan(exact.reduce((s, r) => s + r.kError!, 0));
    }
  });
});

function cacheWith(n: number, seed: number): KVCacheStore {
  const store = cacheOf(0, DIMS8);
  appendTokens(store, n, seed);
  return store;
}

describe('cskv on the tiny model', () => {
  it('integration: prefill 100, decode 20; snapshot / restore reproduce', async () => {
    await integrationRun('cskv', () => 256);
  });

  it('a session: the 32 newest entries exact, the rest projected; memory below full; full rank ≈ exact', async () => {
    const model = await fixtureModel();
    const prompt = [1, ...tokenSequence(79, 2)];
    const session = new Session(model, { policy: 'cskv', sampler: { seed: 1, temperature: 0 } });
    await session.prefill(prompt);
    for (let s = 0; s < 5; s++) await session.step();
    const n = session.cache.length(0, 0);
    for (let i = 0; i < n; i++) expect(session.cache.codec(0, 0, i)?.name ?? null).toBe(i < n - 32 ? 'cskv-k4v4' : null);
    const memory = session.memory();
    expect(memory.bytes).toBeLessThan(memory.fullBytes);
    const full = new Session(model, { policy: 'cskv:k_rank=8,v_rank=8', sampler: { seed: 1, temperature: 0 } });
    await full.prefill(prompt);
    const plain = new Session(model, { policy: 'full', sampler: { seed: 1, temperature: 0 } });
    await plain.prefill(prompt);
    for (let i = 0; i < 48; i++) {
      const exact = plain.cache.keys(1, 1).subarray(i * 8, (i + 1) * 8);
      expect(relativeL2(exact, full.cache.keys(1, 1).subarray(i * 8, (i + 1) * 8))).toBeLessThan(1e-5);
    }
    const a = full.nextTokenLogits!;
    const b = plain.nextTokenLogits!;
    for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i], 4);
  });
});
