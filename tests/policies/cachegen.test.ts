/** CacheGen: the block codec (quant/kv-bitstream.ts), layer bins, chunking, byte accounting — by hand — and tiny-model runs. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { Decision } from '../../engine/cache/decision.ts';
import { KVCacheStore } from '../../engine/cache/store.ts';
import { Rope } from '../../engine/model/rope.ts';
import { decideWithStages, standaloneEnv } from '../../engine/pipeline/pipeline.ts';
import { binSchedule, cachegenGroupId, cachegenTransform, type CacheGenOptions } from '../../engine/policies/cachegen.ts';
import { indexRange } from '../../engine/policies/types.ts';
import { roundHalf } from '../../engine/quant/half.ts';
import { blockBytes, decodeBlock, decodeSymbols, encodeBlock, symbolCount } from '../../engine/quant/kv-bitstream.ts';
import { relativeL2 } from '../../engine/quant/quantize.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { integrationRun, policyFor, prefillObservation, stepObservation, type Dims } from './helpers/policy.ts';

const DIMS: Dims = { nLayers: 2, nKvHeads: 2, nHeads: 4, headDim: 4 };

/** Seeded normal-ish values (sum of uniforms, mulberry32). */
function gaussian(seed: number): () => number {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => u() + u() + u() + u() - 2;
}

/** Appends n tokens of seeded random K/V (the same in every layer, so layers differ only by bins). */
function appendRandom(store: KVCacheStore, n: number, seed: number): void {
  const d = store.headDim;
  const first = store.tokenCount;
  const random = gaussian(seed + first);
  const keys = Float32Array.from({ length: store.nKvHeads * n * d }, () => 3 * random());
  const values = Float32Array.from({ length: store.nKvHeads * n * d }, () => random());
  for (let l = 0; l < store.nLayers; l++) store.appendLayer(l, keys.slice(), values.slice(), n, indexRange(first, first + n), first);
  store.tokenCount = first + n;
}

function storeOf(n: number, dims: Dims = DIMS, seed = 1): KVCacheStore {
  const store = new KVCacheStore(dims, new Rope({ theta: 10000, dim: dims.headDim }, dims.headDim));
  appendRandom(store, n, seed);
  return store;
}

const OPTIONS: CacheGenOptions = { chunk: 4, anchor: 0, kBins: [32, 8], vBins: [16, 8] };

function decide(store: KVCacheStore, options: CacheGenOptions, phase: 'prefill' | 'step' = 'prefill') {
  const transform = cachegenTransform(options);
  const env = standaloneEnv(store, phase, { prefix: 'cachegen.' });
  const decision = decideWithStages({ transforms: [transform] }, env, { id: 'cachegen', reportScores: 'selected' });
  return { decision, blocks: transform.lastBlocks };
}

const reencoded = (decision: Decision, l: number, h: number): number[] => (decision.layers?.[l]?.[h]?.reencode ?? []).map((re) => re.index);

describe('cachegen: one block as a bitstream (quant/kv-bitstream.ts)', () => {
  it('per-token symmetric quantization: C = bins/2 − 1, symbol q + C, x̂ = q·m/C; a zero row stores 0', () => {
    // bins 8: C = 3, 7 symbols; row 0 max 3 → step 1
    const { block, symbols, reconstruction } = encodeBlock([3, -2, 0, 1, 0, 0, 0, 0], { rows: 2, cols: 4, bins: 8, anchor: 0 });
    expect(symbolCount(8)).toBe(7);
    expect(symbolCount(32)).toBe(31);
    expect(Array.from(symbols)).toEqual([6, 1, 3, 4, 3, 3, 3, 3]);
    expect(Array.from(block.scales)).toEqual([3, 0]);
    expect(Array.from(reconstruction)).toEqual([3, -2, 0, 1, 0, 0, 0, 0]);
    expect(Array.from(decodeBlock(block))).toEqual([3, -2, 0, 1, 0, 0, 0, 0]);
    expect(blockBytes(block)).toBe(block.stream.length + block.tables.length + 2 * 2);
    expect(() => encodeBlock([1], { rows: 1, cols: 1, bins: 3, anchor: 0 })).toThrow(RangeError);
  });

  it('decode(encode(x)) is exact to the quantized values: symbols and x̂ (fast-check, with and without anchors)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 4, max: 64 }),
        fc.integer({ min: 0, max: 6 }),
        fc.integer(),
        (rows, cols, bins, anchor, seed) => {
          const random = gaussian(seed);
          const x = Float32Array.from({ length: rows * cols }, () => 5 * random());
          const { block, symbols, reconstruction } = encodeBlock(x, { rows, cols, bins, anchor });
          expect(Array.from(decodeSymbols(block))).toEqual(Array.from(symbols));
          expect(Array.from(decodeBlock(block))).toEqual(Array.from(reconstruction));
          if (anchor === 0) {
            // each value within half a step (+ the fp16 scale's rounding, absorbed by clamping)
            const c = Math.floor(bins / 2) - 1;
            for (let t = 0; t < rows; t++) {
              const m = block.scales[t];
              let max = 0;
              for (let j = 0; j < cols; j++) max = Math.max(max, Math.abs(x[t * cols + j]));
              expect(m).toBe(roundHalf(max));
              for (let j = 0; j < cols; j++) expect(Math.abs(x[t * cols + j] - reconstruction[t * cols + j])).toBeLessThanOrEqual(m / (2 * c) + Math.abs(max - m) + 1e-6);
            }
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('delta to anchors: near-identical tokens are coded as small deltas to the decoded anchor', () => {
    const random = gaussian(5);
    const base = Array.from({ length: 8 }, () => random());
    const x = Float32Array.from({ length: 10 * 8 }, (_, i) => base[i % 8] + 0.01 * random());
    const plain = encodeBlock(x, { rows: 10, cols: 8, bins: 8, anchor: 0 });
    const delta = encodeBlock(x, { rows: 10, cols: 8, bins: 8, anchor: 5 });
    expect(Array.from(decodeBlock(delta.block))).toEqual(Array.from(delta.reconstruction));
    expect(relativeL2(x, delta.reconstruction)).toBeLessThan(relativeL2(x, plain.reconstruction));
    // the anchors (rows 0, 5) are coded on their own, the same as without anchors
    expect(Array.from(delta.symbols.subarray(0, 8))).toEqual(Array.from(plain.symbols.subarray(0, 8)));
    expect(Array.from(delta.symbols.subarray(40, 48))).toEqual(Array.from(plain.symbols.subarray(40, 48)));
  });

  it('codes near the symbols’ entropy: a skewed block is much smaller than its fixed-width codes', () => {
    const random = gaussian(9);
    const x = Float32Array.from({ length: 256 * 32 }, () => random() * (random() > 0.9 ? 4 : 0.3));
    const { block } = encodeBlock(x, { rows: 256, cols: 32, bins: 32, anchor: 0 });
    expect(block.stream.length).toBeLessThan((256 * 32 * 5) / 8 / 1.5);
  });
});

describe('cachegen: layer bins (the reference’s schedule as depth fractions)', () => {
  it('32 layers: the reference’s 7B schedule; 8 and 2 layers scaled', () => {
    const kSplit = [10 / 32, 20 / 32];
    expect(binSchedule(32, [32, 16, 12], kSplit)).toEqual([...Array(10).fill(32), ...Array(10).fill(16), ...Array(12).fill(12)]);
    expect(binSchedule(32, [32, 16], [2 / 32])).toEqual([32, 32, ...Array(30).fill(16)]);
    expect(binSchedule(8, [32, 16, 16], kSplit)).toEqual([32, 32, 32, 16, 16, 16, 16, 16]);
    expect(binSchedule(8, [32, 16], [0.0625])).toEqual([32, ...Array(7).fill(16)]);
    expect(binSchedule(2, [32, 24, 16], kSplit)).toEqual([32, 24]);
  });

  it('the defaults on 2 layers: layer 0 keys 32 bins, layer 1 16; the same data loses more in layer 1', () => {
    const store = storeOf(256);
    const decision = policyFor('cachegen', DIMS).afterPrefill(store, prefillObservation(256));
    expect(decision.measures!.k_bins).toEqual([32, 16]);
    expect(decision.measures!.v_bins).toEqual([32, 16]);
    expect(decision.layers![0]![0]!.reencode![0].codec.name).toBe('cachegen-k32v32');
    expect(decision.layers![1]![0]!.reencode![0].codec.name).toBe('cachegen-k16v16');
    const { k_error, v_error, k_bits } = decision.measures!;
    expect(k_error[0]).toBeLessThan(k_error[1]);
    expect(v_error[0]).toBeLessThan(v_error[1]);
    expect(k_bits[0]).toBeGreaterThan(k_bits[1]);
  });
});

describe('cachegen: chunks on a hand-made cache (chunk 4)', () => {
  it('prefill encodes every full chunk; the remainder stays fp32; the graph sees the decoded bytes', () => {
    const store = storeOf(10);
    const { decision, blocks } = decide(store, OPTIONS);
    for (let l = 0; l < 2; l++) for (let h = 0; h < 2; h++) expect(reencoded(decision, l, h)).toEqual(Array.from(indexRange(0, 8)));
    expect(blocks).toHaveLength(2 * 2 * 2);
    expect(decision.groups!.map((g) => g.id).slice(0, 2)).toEqual([cachegenGroupId('cachegen.', 0, 0, 0, 3), cachegenGroupId('cachegen.', 0, 0, 4, 7)]);
    const d = 4;
    const rows = store.keys(1, 1).slice(4 * d, 8 * d);
    const expected = decodeBlock(encodeBlock(rows, { rows: 4, cols: d, bins: 8, anchor: 0 }).block);
    const re = decision.layers![1]![1]!.reencode!.find((r) => r.index === 5)!;
    expect(Array.from(re.keys!)).toEqual(Array.from(expected.subarray(d, 2 * d)));
    expect(re.codec).toEqual({ name: 'cachegen-k8v8', kBits: 0, vBits: 0, kElements: 4, vElements: 4, kMetaBytes: 0, vMetaBytes: 0, group: 'cachegen.L1/kv1/t4-7' });
    expect(re.kError).toBeCloseTo(relativeL2(rows, expected, d, d), 12);
    expect(decision.measures!.raw_bytes).toEqual([2 * 2 * 2 * 4 * d * 4, 2 * 2 * 2 * 4 * d * 4]);
    expect(decision.note).toMatch(/^cachegen: 2 chunks of 4 \(tokens 0–7\), .* KB vs 1\.0 KB raw fp32 .* rel\. error K 0\.\d+ V 0\.\d+$/);
    store.apply(decision);
    expect(Array.from(store.keys(1, 1).subarray(4 * d, 8 * d))).toEqual(Array.from(expected));
    expect(store.exact(1, 1, 5)!.keys).toEqual(rows.slice(d, 2 * d));
  });

  it('memory: every byte in the groups (streams + tables + scales), entries 0 own bits — cache.memory() exact', () => {
    const store = storeOf(10);
    const { decision, blocks } = decide(store, OPTIONS);
    store.apply(decision);
    const memory = store.memory();
    const kGroups = decision.groups!.reduce((s, g) => s + g.kBytes, 0);
    const vGroups = decision.groups!.reduce((s, g) => s + g.vBytes, 0);
    expect(blocks.reduce((s, b) => s + b.kBytes, 0)).toBe(kGroups);
    expect(memory.groupBytes).toBe(kGroups + vGroups);
    // 2 entries per head still fp32
    expect(memory.kBytes).toBe(kGroups + 4 * 2 * 4 * 4);
    expect(memory.vBytes).toBe(vGroups + 4 * 2 * 4 * 4);
    const { encoded_bytes } = decision.measures!;
    expect(encoded_bytes[0] + encoded_bytes[1]).toBe(kGroups + vGroups);
  });

  it('decoding: nothing until a chunk fills, then exactly that chunk (a chunk boundary)', () => {
    const store = storeOf(10);
    store.apply(decide(store, OPTIONS).decision);
    appendRandom(store, 1, 2); // 11 entries: 3 pending
    expect(decide(store, OPTIONS, 'step').decision).toEqual({ layers: null });
    appendRandom(store, 1, 3); // 12: a chunk fills
    const { decision } = decide(store, OPTIONS, 'step');
    for (let l = 0; l < 2; l++) for (let h = 0; h < 2; h++) expect(reencoded(decision, l, h)).toEqual([8, 9, 10, 11]);
    store.apply(decision);
    for (let h = 0; h < 2; h++) expect(store.codec(0, h, 11)?.group).toBe('cachegen.L0/kv0/t8-11'.replace('kv0', `kv${h}`));
    expect(decide(store, OPTIONS, 'step').decision).toEqual({ layers: null });
  });

  it('exactly one chunk: encoded; one less: a note, nothing encoded; ragged heads chunk on their own', () => {
    expect(reencoded(decide(storeOf(4), OPTIONS).decision, 0, 0)).toEqual([0, 1, 2, 3]);
    const short = decide(storeOf(3), OPTIONS).decision;
    expect(short.layers).toBeNull();
    expect(short.note).toBe('cachegen: no full chunk of 4 yet (3 entries per head stay fp32)');
    const store = storeOf(9);
    store.apply({ layers: [[{ keep: [0, 1, 2, 3, 4] }, null], null] });
    const { decision } = decide(store, OPTIONS);
    expect(reencoded(decision, 0, 0)).toEqual([0, 1, 2, 3]);
    expect(reencoded(decision, 0, 1)).toEqual(Array.from(indexRange(0, 8)));
  });

  it('the policy: at prefill with a 1-token prompt nothing is encoded; steps through the policy interface', () => {
    const store = storeOf(1);
    const policy = policyFor('cachegen:chunk=2', DIMS);
    expect(policy.afterPrefill(store, prefillObservation(1)).layers).toBeNull();
    appendRandom(store, 1, 4);
    const decision = policy.afterStep(store, stepObservation(null));
    expect(reencoded(decision, 0, 0)).toEqual([0, 1]);
  });
});

describe('cachegen on the tiny model', () => {
  it('integration (chunk 16, anchors 4): finite, every entry kept, snapshot / restore reproduce', async () => {
    await integrationRun('cachegen:chunk=16,anchor=4', (step) => 100 + step + 1);
  });

  it('default chunk 256 on the full context: the whole prompt encoded, memory exact, the graph sees decoded bytes', async () => {
    const model = await fixtureModel();
    const session = new Session(model, { policy: 'cachegen', sampler: { seed: 1, temperature: 1 }, prefillChunk: 64 });
    const { trace } = await session.prefill([1, ...tokenSequence(255, 11)]);
    expect(trace.decision.note).toMatch(/^cachegen: 1 chunk of 256/);
    const { cache } = session;
    const d = cache.headDim;
    let groupBytes = 0;
    for (let l = 0; l < cache.nLayers; l++) {
      for (let h = 0; h < cache.nKvHeads; h++) {
        for (let i = 0; i < 256; i++) expect(cache.codec(l, h, i)?.group).toBe(`cachegen.L${l}/kv${h}/t0-255`);
        // re-encoding the exact rows reproduces the stored block and what the graph sees
        const rows = new Float32Array(256 * d);
        for (let i = 0; i < 256; i++) rows.set(cache.exact(l, h, i)!.keys, i * d);
        const bins = l === 0 ? 32 : 16;
        const block = encodeBlock(rows, { rows: 256, cols: d, bins, anchor: 0 }).block;
        expect(Array.from(cache.keys(l, h))).toEqual(Array.from(decodeBlock(block)));
        const vRows = new Float32Array(256 * d);
        for (let i = 0; i < 256; i++) vRows.set(cache.exact(l, h, i)!.values, i * d);
        groupBytes += blockBytes(block) + blockBytes(encodeBlock(vRows, { rows: 256, cols: d, bins, anchor: 0 }).block);
      }
    }
    const memory = cache.memory();
    expect(memory.bytes).toBe(groupBytes);
    expect(memory.groupBytes).toBe(groupBytes);
    expect(memory.ratio).toBeLessThan(0.35);
  });

  it('attached mid-run: encodes the full chunks the cache already holds', async () => {
    const model = await fixtureModel();
    const session = new Session(model, { policy: 'full', sampler: { seed: 2, temperature: 1 } });
    await session.prefill([1, ...tokenSequence(39, 3)]);
    const event = session.setPolicy('cachegen:chunk=16');
    expect(event.decision.note).toMatch(/^cachegen: 2 chunks of 16 \(tokens 0–31\)/);
    expect(session.cache.codec(1, 1, 31)?.group).toBe('cachegen.L1/kv1/t16-31');
    expect(session.cache.codec(1, 1, 32)).toBeNull();
    await session.step();
  });
});
