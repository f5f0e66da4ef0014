/**
 * engine/quant/error-report.ts on a hand-made cache with a re-encode (exact per-element, per-entry
 * and per-layer errors, outlier / pruned channel masks, the score error q·(k − k̂)/sqrt(d), attention
 * with and without the codec, a merged entry's log(count) bias), then on the fixture model: with the
 * exact keys the report's attention is the graph's own, and the session keeps the newest queries
 * through snapshots, forks and failed steps.
 */
import { describe, expect, it } from 'vitest';
import { KVCacheStore } from '../../engine/cache/store.ts';
import type { EntryCodec } from '../../engine/cache/decision.ts';
import { CHANNEL_FLAG, quantErrorReport } from '../../engine/quant/error-report.ts';
import { Session } from '../../engine/session.ts';
import { fillCache, smallDims } from '../engine/helpers/cache.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';

const D = 4;
const codec = (extra: Partial<EntryCodec> = {}): EntryCodec => ({ name: 'test-4', kBits: 4, vBits: 4, kElements: D, vElements: D, kMetaBytes: 4, vMetaBytes: 4, ...extra });

/**
 * 2 layers × 2 KV heads × 4 tokens (fillCache: key channels token + 0.25 + 100·kvHead, values
 * token + 0.5). Layer 0 / KV head 0: entry 1 re-encoded with a known error (key outlier channel 2,
 * key channel 3 pruned), entries 2 and 3 merged (count 2); layer 1 / KV head 1: entry 0 re-encoded
 * without new K/V (a codec that loses nothing).
 */
function cache(): KVCacheStore {
  const store = fillCache(new KVCacheStore(smallDims()), 4);
  const kDelta = [0.1, -0.2, 0, 0.3];
  const vDelta = [0, 0.5, 0, -0.5];
  store.apply({
    layers: [
      [{ keep: [0, 1, 2, 3], reencode: [{ index: 1, codec: codec({ kOutliers: [2], kPruned: [3], vOutliers: [0, 9] }), keys: Float32Array.from(kDelta, (e) => 1.25 + e), values: Float32Array.from(vDelta, (e) => 1.5 + e) }] }, null],
      [null, { keep: [0, 1, 2, 3], reencode: [{ index: 0, codec: codec() }] }],
    ],
  });
  store.apply({ layers: [[{ keep: [0, 1], merge: [{ members: [2, 3], weights: [0.5, 0.5] }] }, null], null] });
  return store;
}

function softmax(logits: number[]): number[] {
  const max = Math.max(...logits);
  const e = logits.map((x) => Math.exp(x - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

describe('quantErrorReport on a hand-made cache', () => {
  const store = cache();
  // query heads 0 and 1 read KV head 0
  const queries = Float32Array.from([1, 0, 0, 0, 0, 1, 1, 0]);
  const report = quantErrorReport(store, 0, 0, queries, 1 / Math.sqrt(D));

  it('per element: x − x̂ and the same over the exact RMS; 0 for plain and merged entries', () => {
    expect(report.length).toBe(3);
    expect([...report.tokens]).toEqual([0, 1, 2]);
    expect([...report.counts]).toEqual([1, 1, 2]);
    expect(report.codecs.map((c) => c?.name ?? null)).toEqual([null, 'test-4', null]);
    const row = (a: Float32Array, i: number) => [...a.subarray(i * D, (i + 1) * D)];
    const close = (actual: number[], expected: number[]) => actual.forEach((v, c) => expect(v).toBeCloseTo(expected[c], 6));
    close(row(report.kError, 1), [-0.1, 0.2, 0, -0.3]);
    close(row(report.vError, 1), [0, -0.5, 0, 0.5]);
    close(row(report.kRelative, 1), [-0.1 / 1.25, 0.2 / 1.25, 0, -0.3 / 1.25]);
    expect(row(report.kError, 0)).toEqual([0, 0, 0, 0]);
    expect(row(report.vError, 2)).toEqual([0, 0, 0, 0]);
    expect(report.kEntryError[1]).toBeCloseTo(Math.sqrt(0.01 + 0.04 + 0.09) / 2.5, 6);
    expect(report.vEntryError[1]).toBeCloseTo(Math.sqrt(0.5) / 3, 6);
    expect([report.kEntryError[0], report.kEntryError[2]]).toEqual([0, 0]);
    // the RMS of a relative row is the entry's relative L2 error
    const rms = Math.sqrt(row(report.kRelative, 1).reduce((s, x) => s + x * x, 0) / D);
    expect(rms).toBeCloseTo(report.kEntryError[1], 6);
  });

  it('outlier and pruned channels from the codec (out-of-range channels ignored)', () => {
    const flags = [...report.channelFlags.subarray(D, 2 * D)];
    expect(flags).toEqual([CHANNEL_FLAG.vOutlier, 0, CHANNEL_FLAG.kOutlier, CHANNEL_FLAG.kPruned]);
    expect([...report.channelFlags.subarray(0, D)]).toEqual([0, 0, 0, 0]);
  });

  it('per layer: the mean relative error over every entry of every KV head', () => {
    // layer 0: 3 entries in KV head 0 (one re-encoded) + 4 in KV head 1
    expect(report.layers[0].held).toBe(7);
    expect(report.layers[0].encoded).toBe(1);
    expect(report.layers[0].k).toBeCloseTo(report.kEntryError[1] / 7, 6);
    expect(report.layers[0].v).toBeCloseTo(report.vEntryError[1] / 7, 6);
    // layer 1: a codec that kept the K/V as they were loses nothing
    expect(report.layers[1]).toEqual({ k: 0, v: 0, held: 8, encoded: 1 });
  });

  it('score error = q·(k − k̂)/sqrt(d); attention with the exact and the stored keys, log(count) bias for the merged entry', () => {
    const attention = report.attention!;
    expect(attention.map((a) => a.queryHead)).toEqual([0, 1]);
    const [q0, q1] = attention;
    expect(q0.scoreError[1]).toBeCloseTo(-0.1 / 2, 6);
    expect(q1.scoreError[1]).toBeCloseTo((0.2 + 0) / 2, 6);
    expect([q0.scoreError[0], q0.scoreError[2]]).toEqual([0, 0]);
    // keys of KV head 0: token 0 → 0.25, token 1 → 1.25 (stored 1.25 + delta), merged [2, 3] → mean 2.75
    const exactLogits = [0.25 / 2, 1.25 / 2, 2.75 / 2 + Math.log(2)];
    const storedLogits = [0.25 / 2, 1.35 / 2, 2.75 / 2 + Math.log(2)];
    softmax(exactLogits).forEach((p, i) => expect(q0.exact[i]).toBeCloseTo(p, 6));
    softmax(storedLogits).forEach((p, i) => expect(q0.stored[i]).toBeCloseTo(p, 6));
    for (const a of attention) {
      expect(a.exact.reduce((s, x) => s + x, 0)).toBeCloseTo(1, 6);
      expect(a.stored.reduce((s, x) => s + x, 0)).toBeCloseTo(1, 6);
      expect(a.outputError).toBeGreaterThan(0);
    }
  });

  it('without queries: no attention; refuses a head or queries of the wrong shape', () => {
    expect(quantErrorReport(store, 1, 1).attention).toBeNull();
    expect(() => quantErrorReport(store, 2, 0)).toThrow(RangeError);
    expect(() => quantErrorReport(store, 0, 0, new Float32Array(3))).toThrow(/queries must be/);
  });
});

describe('quantErrorReport on the fixture model', () => {
  it("with the exact keys its attention is the graph's own (scale 1/sqrt(d), every held entry)", async () => {
    const model = await fixtureModel();
    const session = new Session(model, { policy: 'full', keepQueries: true, sampler: { temperature: 0, seed: 1 } });
    expect(session.lastQueries()).toBeNull();
    await session.prefill(tokenSequence(12, 3));
    const { nLayers, nHeads, nKvHeads, headDim, groupSize } = session.dims;
    expect(session.lastQueries()!.map((q) => q.length)).toEqual(Array(nLayers).fill(nHeads * headDim));
    const step = await session.step();
    for (let l = 0; l < nLayers; l++) {
      for (let h = 0; h < nKvHeads; h++) {
        const queries = session.lastQueries()![l].slice(h * groupSize * headDim, (h + 1) * groupSize * headDim);
        const report = quantErrorReport(session.cache, l, h, queries);
        report.attention!.forEach((a, g) => {
          const graph = step.attention![l].weights[h * groupSize + g];
          expect(a.exact.length).toBe(graph.length);
          a.exact.forEach((p, i) => expect(p).toBeCloseTo(graph[i], 4));
          // nothing is quantized: the stored keys give the same
          expect([...a.stored]).toEqual([...a.exact]);
          expect(a.outputError).toBe(0);
        });
      }
    }
  });

  it('keeps the newest queries through a snapshot, a fork and a failed step; off by default', async () => {
    const model = await fixtureModel();
    const plain = new Session(model, { policy: 'full' });
    await plain.prefill(tokenSequence(6, 1));
    expect(plain.lastQueries()).toBeNull();
    expect('queries' in plain.snapshot()).toBe(false);

    const session = new Session(model, { policy: 'full', keepQueries: true, sampler: { temperature: 0, seed: 1 } });
    await session.prefill(tokenSequence(6, 1));
    const snapshot = session.snapshot();
    const afterPrompt = session.lastQueries()!.map((q) => [...q]);
    await session.step();
    expect(session.lastQueries()![0]).not.toEqual(Float32Array.from(afterPrompt[0]));
    const fork = session.fork();
    expect(fork.lastQueries()!.map((q) => [...q])).toEqual(session.lastQueries()!.map((q) => [...q]));
    session.restore(snapshot);
    expect(session.lastQueries()!.map((q) => [...q])).toEqual(afterPrompt);
    // a step whose forward fails leaves the queries as they were
    const run = model.forward.run.bind(model.forward);
    const broken = new Session({ ...model, forward: { dims: model.forward.dims, run: async (r) => (r.inputIds.length === 1 ? Promise.reject(new Error('boom')) : run(r)) } }, { policy: 'full', keepQueries: true });
    await broken.prefill(tokenSequence(6, 1));
    const before = broken.lastQueries();
    await expect(broken.step()).rejects.toThrow('boom');
    expect(broken.lastQueries()).toBe(before);
  });
});
