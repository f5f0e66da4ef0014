/** GEAR: the block codec by hand, GEAR vs quantization alone, byte-exact memory, buffering, tiny-model runs. */
import { describe, expect, it } from 'vitest';
import type { Decision } from '../../engine/cache/decision.ts';
import type { KVCacheStore } from '../../engine/cache/store.ts';
import { loadModelFromDirectory } from '../../engine/model/load-node.ts';
import { decideWithStages, standaloneEnv } from '../../engine/pipeline/pipeline.ts';
import { gearCompress, gearGroupBytes, gearGroupId, gearTransform, type GearOptions } from '../../engine/policies/gear.ts';
import { HALF_BYTES } from '../../engine/quant/half.ts';
import { outlierBytes } from '../../engine/quant/outliers.ts';
import { groupCount, metadataBytes, quantizeBlock, relativeL2, type QuantAxis } from '../../engine/quant/quantize.ts';
import { Xoshiro128 } from '../../engine/sampling.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { cacheOf, integrationRun, type Dims } from './helpers/policy.ts';

const FP32 = 4;

function gaussian(rng: Xoshiro128): number {
  const u = Math.max(1e-12, rng.nextFloat());
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.nextFloat());
}

/** rows × cols: Gaussian noise, every 7th channel 8× larger, 2% of entries with a 10× Gaussian kick. */
function heavyTailed(rows: number, cols: number, seed: number): Float32Array {
  const rng = new Xoshiro128(seed);
  return Float32Array.from({ length: rows * cols }, (_, i) => (i % cols) % 7 === 0 ? 8 : 1).map((s) => s * (gaussian(rng) + (rng.nextFloat() < 0.02 ? 10 * gaussian(rng) : 0)));
}

const side = (bits: number, rank: number, outliers = 0.02) => ({ bits, group: 64, outliers, rank, loops: 3, seed: 1 });

/** Stored bits per element of one side of a GEAR block (codes, outliers, factors, scales). */
function gearBits(rows: number, d: number, axis: QuantAxis, bits: number, rank: number, outliers: number): number {
  const group = gearGroupBytes(rows, d, 64, rank, rank);
  const scales = axis === 'channel' ? group.kBytes : group.vBytes + rows * metadataBytes(groupCount(1, d, 'token', 64));
  return ((rows * d * bits) / 8 + rows * rank * HALF_BYTES + outlierBytes(outliers, d) + scales) * 8 / (rows * d);
}
const plainBits = (rows: number, d: number, axis: QuantAxis, bits: number) => bits + (metadataBytes(groupCount(rows, d, axis, 64)) * 8) / (rows * d);

describe('gear: the block codec (D̂ + S + L)', () => {
  it('rank 0, no outliers: exactly KIVI-style quantization (keys per channel, values per token)', () => {
    const x = heavyTailed(64, 8, 1);
    for (const axis of ['channel', 'token'] as const) {
      const g = gearCompress(x, 64, 8, axis, side(2, 0, 0));
      expect(Array.from(g.reconstructed)).toEqual(Array.from(quantizeBlock(x, 64, 8, { bits: 2, axis, groupSize: 64 }).dequantized));
      expect(g.rank).toBe(0);
    }
  });

  it('outliers are restored exactly (fp16) and the rest is the quantized remainder', () => {
    const x = Float32Array.from([1, 2, 3, 100, 2, 3, 4, 1, -50, 2, 1, 3, 2, 4, 3, 2]); // 8 tokens × 2 channels
    const g = gearCompress(x, 8, 2, 'channel', { bits: 2, group: 8, outliers: 0.25, rank: 0, loops: 3, seed: 0 });
    expect(g.outliers.perSide).toBe(1);
    const outliers = new Map(Array.from(g.outliers.positions, (p, i) => [p, g.outliers.values[i]]));
    expect(outliers.get(3)).toBe(100);
    expect(outliers.get(8)).toBe(-50);
    const rest = quantizeBlock(g.outliers.remainder, 8, 2, { bits: 2, axis: 'channel', groupSize: 8 }).dequantized;
    for (let i = 0; i < x.length; i++) expect(g.reconstructed[i]).toBe(outliers.get(i) ?? rest[i]);
    // the residual is 0 at the outliers and x − D̂ elsewhere
    expect(g.residual[3]).toBe(0);
    expect(g.residual[0]).toBeCloseTo(x[0] - rest[0], 12);
  });

  it('the low-rank part removes residual energy: error falls with the rank; a rank-d factor leaves only fp16 rounding', () => {
    const x = heavyTailed(64, 8, 2);
    const errors = [0, 1, 2, 4, 8].map((r) => relativeL2(x, gearCompress(x, 64, 8, 'channel', side(2, r)).reconstructed));
    for (let i = 1; i < errors.length; i++) expect(errors[i]).toBeLessThan(errors[i - 1]);
    expect(errors[4]).toBeLessThan(2e-3);
    // seeded: the same block and seed give the same bits
    expect(Array.from(gearCompress(x, 64, 8, 'token', side(2, 2)).reconstructed)).toEqual(Array.from(gearCompress(x, 64, 8, 'token', side(2, 2)).reconstructed));
  });
});

describe('gear: error below quantization alone', () => {
  /**
   * At the same b, on the default model's own cache (head_dim 32, 64-token blocks), GEAR's error is
   * below KIVI-style quantization's — for the bytes it adds. At equal stored bits it is not: with
   * head_dim 32 a fp16 row of A costs r·16 bits per 32 elements, so GEAR 2-bit (rank 4) stores
   * ~6.1 bits per element, and 5-bit quantization, which fits in those bits, is ~8× more accurate.
   */
  it('real K/V (kvscope-llama-8l): GEAR b-bit < quantization b-bit, and what GEAR spends for it', async () => {
    const model = await loadModelFromDirectory(new URL('../../static/models/kvscope-llama-8l/', import.meta.url).pathname);
    const session = new Session(model, { policy: 'full' });
    const text = 'The cache keeps every key and value the model computed. Quantization stores them in fewer bits; ';
    await session.prefill(model.tokenizer.encode(text.repeat(12)).slice(0, 128));
    const d = session.dims.headDim;
    let worse = 0;
    const sums = { gear: 0, plain: 0, plainAtGearBits: 0 };
    for (let l = 0; l < session.dims.nLayers; l++) {
      for (let h = 0; h < session.dims.nKvHeads; h++) {
        for (const [axis, rows] of [['channel', session.cache.keys(l, h)], ['token', session.cache.values(l, h)]] as const) {
          const x = Float32Array.from(rows.subarray(64 * d, 128 * d));
          const gear = relativeL2(x, gearCompress(x, 64, d, axis, side(2, 4)).reconstructed);
          const plain = relativeL2(x, quantizeBlock(x, 64, d, { bits: 2, axis, groupSize: 64 }).dequantized);
          const outliers = gearCompress(x, 64, d, axis, side(2, 4)).outliers.positions.length;
          // the most bits plain quantization can have without storing more than GEAR
          let equalBits = 2;
          while (plainBits(64, d, axis, equalBits + 1) <= gearBits(64, d, axis, 2, 4, outliers)) equalBits++;
          if (gear >= plain) worse++;
          sums.gear += gear;
          sums.plain += plain;
          sums.plainAtGearBits += relativeL2(x, quantizeBlock(x, 64, d, { bits: equalBits, axis, groupSize: 64 }).dequantized);
        }
      }
    }
    expect(worse).toBe(0);
    const n = session.dims.nLayers * session.dims.nKvHeads * 2;
    // mean relative L2 (K and V): GEAR 2-bit rank 4 ≈ 0.24, 2-bit quantization ≈ 0.32, quantization within GEAR's bits (5-bit) ≈ 0.03
    expect(sums.gear / n).toBeLessThan(0.85 * (sums.plain / n));
    expect(sums.plainAtGearBits / n).toBeLessThan(sums.gear / n);
    expect(gearBits(64, d, 'channel', 2, 4, 64)).toBeCloseTo(6.25, 10); // 2 + 0.5 scales + 0.75 outliers + 2 (A) + 1 (B)
    await model.release();
  }, 60_000);

  it('equal bits, sparse large outliers: GEAR 2-bit (outliers only) beats quantization at ⌈its bits⌉', () => {
    const rng = new Xoshiro128(7);
    const x = Float32Array.from({ length: 64 * 32 }, () => gaussian(rng) + (rng.nextFloat() < 0.01 ? (rng.nextFloat() < 0.5 ? -100 : 100) : 0));
    const g = gearCompress(x, 64, 32, 'channel', side(2, 0));
    const bits = gearBits(64, 32, 'channel', 2, 0, g.outliers.positions.length);
    expect(bits).toBeCloseTo(3.25, 10);
    const plain = quantizeBlock(x, 64, 32, { bits: Math.ceil(bits), axis: 'channel', groupSize: 64 }).dequantized;
    expect(plainBits(64, 32, 'channel', Math.ceil(bits))).toBeGreaterThan(bits);
    expect(relativeL2(x, g.reconstructed)).toBeLessThan(0.6 * relativeL2(x, plain)); // ≈ 0.084 vs 0.160
  });
});

const DIMS8: Dims = { nLayers: 2, nKvHeads: 2, nHeads: 4, headDim: 8 };
const OPTIONS: GearOptions = { bits: 2, group: 4, outliers: 0.5, prefillRank: 2, decodeRank: 1, loops: 3, block: 4, seed: 0 };

/** A cache with n entries of heavy-tailed K/V per head. */
function storeOf(n: number): KVCacheStore {
  const store = cacheOf(0, DIMS8);
  appendTokens(store, n, 3);
  return store;
}
function appendTokens(store: KVCacheStore, n: number, seed: number): void {
  const d = DIMS8.headDim;
  const first = store.tokenCount;
  for (let l = 0; l < DIMS8.nLayers; l++) {
    const keys = heavyTailed(DIMS8.nKvHeads * n, d, seed + 10 * l);
    const values = heavyTailed(DIMS8.nKvHeads * n, d, seed + 10 * l + 5);
    store.appendLayer(l, keys, values, n, Array.from({ length: n }, (_, i) => first + i), first);
  }
  store.tokenCount = first + n;
}
function decide(store: KVCacheStore, phase: 'prefill' | 'step', options = OPTIONS): Decision {
  return decideWithStages({ transforms: [gearTransform(options)] }, standaloneEnv(store, phase, { prefix: 'gear.' }), { id: 'gear', reportScores: 'selected' });
}

describe('gear: blocks, buffering and bytes on a hand-made cache', () => {
  it('prefill of 10 tokens, block 4: entries 0–7 compressed in two blocks, 8–9 buffered; bytes exact', () => {
    const store = storeOf(10);
    const before = store.memory();
    const decision = decide(store, 'prefill');
    store.apply(decision);
    const d = DIMS8.headDim;
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        for (let i = 0; i < 10; i++) expect(store.codec(l, h, i)?.name ?? null).toBe(i < 8 ? 'gear-2' : null);
        expect(store.codec(l, h, 0)!.group).toBe(gearGroupId('gear.', l, h, 0));
        expect(store.codec(l, h, 5)!.group).toBe(gearGroupId('gear.', l, h, 4));
      }
    }
    // s = 0.5 of a 4-token key channel: 1 per side per channel → 2·8 key outliers per block;
    // of an 8-channel value token: 2 per side → 4 value outliers per entry
    let expectedK = 0;
    let expectedV = 0;
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        for (let i = 0; i < 8; i++) {
          const codec = store.codec(l, h, i)!;
          expect(codec.vOutliers!.length).toBe(4);
          expect(codec.kMetaBytes).toBe(2 * HALF_BYTES + outlierBytes(codec.kOutliers?.length ?? 0, d));
          expect(codec.vMetaBytes).toBe(2 * HALF_BYTES + outlierBytes(4, d) + metadataBytes(2)); // 2 value groups of 4 channels
          expectedK += (d * 2) / 8 + codec.kMetaBytes;
          expectedV += (d * 2) / 8 + codec.vMetaBytes;
        }
        let keyOutliers = 0;
        for (let i = 0; i < 4; i++) keyOutliers += store.codec(l, h, i)!.kOutliers?.length ?? 0;
        expect(keyOutliers).toBe(2 * d);
        // two groups per head: per-channel key scales + zeros (d groups of 4 tokens) + B of K and V (rank 2)
        expectedK += 2 * (metadataBytes(d) + 2 * d * HALF_BYTES);
        expectedV += 2 * (2 * d * HALF_BYTES);
        expectedK += 2 * d * FP32;
        expectedV += 2 * d * FP32;
      }
    }
    const after = store.memory();
    expect(after.kBytes).toBe(expectedK);
    expect(after.vBytes).toBe(expectedV);
    expect(after.groupBytes).toBe(2 * 2 * 2 * (metadataBytes(d) + 4 * d * HALF_BYTES));
    // this toy setting (d = 8, 4-token blocks, s = 0.5, rank 2) stores more than fp32: bytes are counted, not assumed
    expect(after.bytes).toBeGreaterThan(before.bytes);
    expect(decision.note).toContain('8 blocks of 4 tokens'); // 2 per head
    // measures: each head's last block's residual spectrum (descending) and rank
    const sv = decision.headMeasures!.k_singular_values;
    expect(sv[1][1].length).toBe(4); // min(block, d)
    expect(sv[1][1][0]).toBeGreaterThanOrEqual(sv[1][1][3]);
    expect(decision.headMeasures!.v_rank[0][1]).toEqual([2]);
    // errors in the trace are relative L2 to the exact entry
    const exact = store.exact(0, 0, 1)!;
    expect(decision.layers![0]![0]!.reencode![1].kError).toBeCloseTo(relativeL2(exact.keys, store.keys(0, 0).subarray(8, 16)), 6);
  });

  it('decoding: the buffer flushes once it holds a block, at the decode rank; O(block) per step', () => {
    const store = storeOf(10);
    store.apply(decide(store, 'prefill'));
    appendTokens(store, 1, 40);
    const quiet = decide(store, 'step');
    expect(quiet.layers).toBeNull();
    expect(quiet.headMeasures).toBeUndefined();
    appendTokens(store, 1, 41);
    const flush = decide(store, 'step');
    expect(flush.layers![0]![0]!.reencode!.map((r) => r.index)).toEqual([8, 9, 10, 11]);
    expect(flush.layers![0]![0]!.reencode![0].codec.rank).toBe(1);
    expect(flush.headMeasures!.k_rank[0][0]).toEqual([1]);
    store.apply(flush);
    expect(store.codec(1, 1, 11)!.group).toBe(gearGroupId('gear.', 1, 1, 8));
  });
});

describe('gear on the tiny model', () => {
  it('integration: prefill 100, decode 20; snapshot / restore reproduce', async () => {
    await integrationRun('gear', () => 256);
  });

  it('a session under gear: every entry older than the buffer is compressed, the rest fp32; memory below full', async () => {
    const session = new Session(await fixtureModel(), { policy: 'gear', sampler: { seed: 1, temperature: 0 } });
    await session.prefill([1, ...tokenSequence(149, 4)]);
    for (let s = 0; s < 30; s++) await session.step();
    // 180 tokens: blocks 0–63 (prefill), 64–127 (prefill), then the decoding flush at 192 has not come
    for (let i = 0; i < 180; i++) expect(session.cache.codec(1, 0, i)?.name ?? null).toBe(i < 128 ? 'gear-2' : null);
    const memory = session.memory();
    expect(memory.bytes).toBeLessThan(memory.fullBytes);
  });
});
