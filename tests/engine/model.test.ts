/**
 * Engine against the real tiny fixture graph: reference logits, cached decoding vs full
 * recomputation, chunked prefill, masking, RoPE re-rotation, perplexity.
 */
import { describe, expect, it } from 'vitest';
import { MASK_BIAS } from '../../engine/cache/store.ts';
import { maxAbsDiff } from '../../engine/metrics/kl.ts';
import { perplexity } from '../../engine/metrics/perplexity.ts';
import { logSoftmax } from '../../engine/metrics/softmax.ts';
import { Rope } from '../../engine/model/rope.ts';
import type { ForwardResult, LayerFeed } from '../../engine/runtime/forward.ts';
import { Session } from '../../engine/session.ts';
import { FIXTURE_DIR, decodeFloat32Base64, fixtureModel, readJson, tokenSequence } from './helpers/fixture.ts';

interface ReferenceFile {
  vocab_size: number;
  prompts: { ids: number[]; positions: number[]; logits_b64: string }[];
}

/** One uncached forward over `ids` at positions 0..n−1 with a causal bias (the "no cache" path). */
async function fullForward(ids: number[], maskValue = MASK_BIAS): Promise<ForwardResult> {
  const model = await fixtureModel();
  const { nLayers, nHeads } = model.forward.dims;
  const q = ids.length;
  const layers: LayerFeed[] = [];
  for (let l = 0; l < nLayers; l++) {
    const bias = new Float32Array(nHeads * q * q);
    for (let h = 0; h < nHeads; h++) for (let i = 0; i < q; i++) for (let j = i + 1; j < q; j++) bias[(h * q + i) * q + j] = maskValue;
    layers.push({ length: 0, keys: new Float32Array(0), values: new Float32Array(0), bias });
  }
  return model.forward.run({ inputIds: ids, positionIds: ids.map((_, i) => i), layers });
}

describe('tiny fixture model', () => {
  it('loads with the manifest I/O names and a tokenizer', async () => {
    const model = await fixtureModel();
    expect([...model.session.inputNames].sort()).toEqual([...model.manifest.graph.inputs].sort());
    expect([...model.session.outputNames].sort()).toEqual([...model.manifest.graph.outputs].sort());
    expect(model.forward.dims).toMatchObject({ nLayers: 2, nHeads: 4, nKvHeads: 2, headDim: 8, groupSize: 2, contextLength: 256 });
  });

  it('prefill logits match reference.json (PyTorch) within 1e-3', async () => {
    const model = await fixtureModel();
    const reference = (await readJson(`${FIXTURE_DIR}/reference.json`)) as ReferenceFile;
    const vocab = model.manifest.architecture.vocab_size;
    expect(reference.vocab_size).toBe(vocab);
    for (const prompt of reference.prompts) {
      const expected = decodeFloat32Base64(prompt.logits_b64);
      expect(expected.length).toBe(prompt.positions.length * vocab);
      // small chunks so that the reference also exercises chunked prefill through the cache
      const session = new Session(model, { prefillChunk: 5 });
      const { logits } = await session.prefill(prompt.ids, { allLogits: true });
      prompt.positions.forEach((position, r) => {
        const engineRow = logits!.subarray(position * vocab, (position + 1) * vocab);
        const referenceRow = expected.subarray(r * vocab, (r + 1) * vocab);
        expect(maxAbsDiff(engineRow, referenceRow)).toBeLessThanOrEqual(1e-3);
      });
    }
  });

  it('cached incremental decoding equals full recomputation over 80 steps (≤ 1e-4)', async () => {
    const model = await fixtureModel();
    const vocab = model.manifest.architecture.vocab_size;
    const ids = [1, ...tokenSequence(95, 7)];
    const promptLength = 16;
    const session = new Session(model, { policy: 'full', trace: { fullSteps: 4 } });
    const { lastLogits } = await session.prefill(ids.slice(0, promptLength));
    const cached: Float32Array[] = [lastLogits];
    for (let i = promptLength; i < ids.length; i++) {
      await session.step({ token: ids[i] });
      cached.push(session.nextTokenLogits!.slice());
    }
    expect(cached.length - 1).toBeGreaterThanOrEqual(64);
    const full = await fullForward(ids);
    let worst = 0;
    cached.forEach((row, k) => {
      const position = promptLength - 1 + k;
      worst = Math.max(worst, maxAbsDiff(row, full.logits.subarray(position * vocab, (position + 1) * vocab)));
    });
    expect(worst).toBeLessThanOrEqual(1e-4);
    // keys the cache holds equal the keys of the uncached forward
    const d = model.forward.dims.headDim;
    const cacheKeys = session.cache.keys(1, 1);
    const fullKeys = full.keys[1].subarray(1 * ids.length * d, 2 * ids.length * d);
    expect(maxAbsDiff(cacheKeys, fullKeys)).toBeLessThanOrEqual(1e-4);
  });

  it('chunked prefill equals one-chunk prefill for every chunk size', async () => {
    const model = await fixtureModel();
    const ids = [1, ...tokenSequence(40, 3)];
    const one = await new Session(model, { prefillChunk: 1000 }).prefill(ids, { allLogits: true });
    for (const chunk of [1, 3, 16, 40]) {
      const chunked = await new Session(model, { prefillChunk: chunk }).prefill(ids, { allLogits: true });
      expect(chunked.trace.chunks).toBe(Math.ceil(ids.length / chunk));
      expect(maxAbsDiff(chunked.logits!, one.logits!)).toBeLessThanOrEqual(1e-4);
    }
  });

  it('masked padding slots are neutral with −1e9 and with −Infinity', async () => {
    const model = await fixtureModel();
    const { nLayers, nHeads, nKvHeads, headDim } = model.forward.dims;
    const ids = [1, ...tokenSequence(12, 11)];
    const session = new Session(model);
    await session.prefill(ids.slice(0, -1));
    const exact = session.cache.buildFeeds(1).map((f) => ({ ...f, keys: f.keys.slice(), values: f.values.slice(), bias: f.bias.slice() }));
    const position = ids.length - 1;
    const run = (layers: LayerFeed[]) => model.forward.run({ inputIds: [ids[position]], positionIds: [position], layers });
    const reference = await run(exact);
    expect(reference.logits.every(Number.isFinite)).toBe(true);

    for (const mask of [-1e9, -Infinity]) {
      // three garbage slots appended to every head, masked out
      const padded = exact.map((feed): LayerFeed => {
        const t = feed.length + 3;
        const keys = new Float32Array(nKvHeads * t * headDim).fill(7.5);
        const values = new Float32Array(nKvHeads * t * headDim).fill(-3.25);
        for (let h = 0; h < nKvHeads; h++) {
          keys.set(feed.keys.subarray(h * feed.length * headDim, (h + 1) * feed.length * headDim), h * t * headDim);
          values.set(feed.values.subarray(h * feed.length * headDim, (h + 1) * feed.length * headDim), h * t * headDim);
        }
        const bias = new Float32Array(nHeads * (t + 1)).fill(0);
        for (let qh = 0; qh < nHeads; qh++) bias.fill(mask, qh * (t + 1) + feed.length, qh * (t + 1) + t);
        return { length: t, keys, values, bias };
      });
      const result = await run(padded);
      expect(maxAbsDiff(result.logits, reference.logits)).toBeLessThanOrEqual(1e-5);
      for (let l = 0; l < nLayers; l++) expect(result.attention![l].every(Number.isFinite)).toBe(true);
    }
  });

  it('RoPE re-rotation moves a layer-0 key to another position (≤ 1e-4)', async () => {
    const model = await fixtureModel();
    const { headDim, nKvHeads } = model.forward.dims;
    const rope = new Rope(model.manifest.rope, headDim);
    // Layer-0 keys depend only on the token and its position (no earlier context), so the key of
    // the same token fed alone at two positions differs exactly by the rotation.
    const at = async (position: number) => {
      const feeds = new Session(model).cache.buildFeeds(1); // empty cache: T = 0
      const result = await model.forward.run({ inputIds: [1234], positionIds: [position], layers: feeds });
      return result.keys[0];
    };
    const from = await at(5);
    const to = await at(200);
    const moved = from.slice();
    rope.rotate(moved, 195, 0, nKvHeads);
    expect(maxAbsDiff(moved, to)).toBeLessThanOrEqual(1e-4);
    expect(maxAbsDiff(from, to)).toBeGreaterThan(1e-2);
    const back = to.slice();
    rope.rotate(back, -195, 0, nKvHeads);
    expect(maxAbsDiff(back, from)).toBeLessThanOrEqual(1e-4);
  });

  it('attention rows of a step sum to 1 over the entries, including the new token', async () => {
    const model = await fixtureModel();
    const session = new Session(model, { policy: 'window:size=6' });
    await session.prefill([1, ...tokenSequence(20, 5)]);
    const step = await session.step();
    for (const layer of step.attention!) {
      for (const row of layer.weights) {
        expect(row.length).toBe(7); // 6 kept entries + the new token
        expect(Math.abs(row.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-5);
      }
      expect(layer.entries[0].tokens[6]).toBe(step.tokenIndex);
    }
  });

  it('perplexity through the engine equals the perplexity of one full forward', async () => {
    const model = await fixtureModel();
    const vocab = model.manifest.architecture.vocab_size;
    const ids = [1, ...tokenSequence(30, 21)];
    const result = await perplexity(model, ids, { prefix: 1 });
    const full = await fullForward(ids);
    let nll = 0;
    for (let i = 1; i < ids.length; i++) nll -= logSoftmax(full.logits.subarray((i - 1) * vocab, i * vocab))[ids[i]];
    expect(result.scored).toBe(ids.length - 1);
    expect(result.meanNll).toBeCloseTo(nll / (ids.length - 1), 4);
    const windowed = await perplexity(model, ids, { prefix: 1, policy: 'window:size=4' });
    expect(windowed.meanNll).not.toBeCloseTo(result.meanNll, 4);
  });
});
