/** `kvscope inspect --kv-similarity`: the measurement on hand-made arrays, a hand-made cache, the fixture model and the CLI. */
import { describe, expect, it } from 'vitest';
import { KVCacheStore } from '../../engine/cache/store.ts';
import { main } from '../../engine/cli/index.ts';
import {
  addCacheSamples,
  angles,
  cosineDistribution,
  distribution,
  emptySamples,
  laggedCosines,
  pairedCosines,
  removeRope,
  runKvSimilarity,
  summarizeSamples,
  type KvSimilarityReport,
} from '../../engine/metrics/kv-similarity.ts';
import { Rope } from '../../engine/model/rope.ts';
import { indexRange } from '../../engine/policies/types.ts';
import { FIXTURE_DIR, fixtureModel } from '../engine/helpers/fixture.ts';

const rows = (...vectors: number[][]) => Float32Array.from(vectors.flat());

describe('kv similarity: hand-made arrays', () => {
  it('adjacent cosines: identical rows give 1, orthogonal 0, a fixed rotation its cosine; lags skip rows', () => {
    expect(Array.from(laggedCosines(rows([1, 2, 3], [1, 2, 3], [2, 4, 6]), 3, 3))).toEqual([1, 1].map((x) => expect.closeTo(x, 12)));
    expect(Array.from(laggedCosines(rows([1, 0], [0, 1], [-1, 0]), 3, 2))).toEqual([0, 0]);
    const theta = 0.3;
    const circle = Array.from({ length: 5 }, (_, t) => [Math.cos(t * theta), Math.sin(t * theta)]);
    laggedCosines(rows(...circle), 5, 2).forEach((c) => expect(c).toBeCloseTo(Math.cos(theta), 6));
    const lag2 = laggedCosines(rows(...circle), 5, 2, 2);
    expect(lag2).toHaveLength(3);
    lag2.forEach((c) => expect(c).toBeCloseTo(Math.cos(2 * theta), 6));
    expect(laggedCosines(rows([0, 0], [1, 0]), 2, 2)[0]).toBe(0); // a zero row
    expect(laggedCosines(rows([1, 0]), 1, 2)).toHaveLength(0);
  });

  it('paired cosines and MiniCache angles: same direction 1 (Ω 0), orthogonal 0 (Ω π/2), opposite −1 (Ω π)', () => {
    const a = rows([1, 2], [1, 0], [3, 4]);
    const b = rows([2, 4], [0, 5], [-3, -4]);
    const c = pairedCosines(a, b, 3, 2);
    expect(Array.from(c)).toEqual([expect.closeTo(1, 12), 0, expect.closeTo(-1, 12)]);
    const omega = angles([...c, 0.5, 1 + 1e-9]);
    expect(Array.from(omega)).toEqual([expect.closeTo(0, 5), Math.PI / 2, expect.closeTo(Math.PI, 5), expect.closeTo(Math.PI / 3, 12), 0]);
  });

  it('distributions: mean, interpolated quantiles, shares above the thresholds', () => {
    expect(distribution([5, 1, 4, 2, 3])).toEqual({ count: 5, mean: 3, median: 3, p10: expect.closeTo(1.4, 12), p90: expect.closeTo(4.6, 12) });
    const d = cosineDistribution([0.95, 0.85, 0.6, 0.1]);
    expect(d.above).toEqual({ '0.9': 0.25, '0.8': 0.5, '0.5': 0.75 });
    expect(d.median).toBeCloseTo(0.725, 12);
    expect(distribution([]).count).toBe(0);
    expect(distribution([]).mean).toBeNaN();
  });

  it('removing RoPE: keys that are one vector rotated to their positions become identical again', () => {
    const rope = new Rope({ theta: 10000, dim: 4 }, 4);
    const x = [1, 0, 0, 0]; // channel 0 pairs with channel 2 at inverse frequency 1: position p rotates by p radians
    const n = 6;
    const keys = new Float32Array(n * 4);
    for (let t = 0; t < n; t++) {
      keys.set(x, t * 4);
      rope.rotate(keys, t, t * 4);
    }
    laggedCosines(keys, n, 4).forEach((c) => expect(c).toBeCloseTo(Math.cos(1), 6));
    const back = removeRope(keys, indexRange(0, n), rope);
    for (let t = 0; t < n; t++) Array.from(back.subarray(t * 4, t * 4 + 4)).forEach((v, c) => expect(v).toBeCloseTo(x[c], 6));
    laggedCosines(back, n, 4).forEach((c) => expect(c).toBeCloseTo(1, 6));
  });
});

/** A cache of 2 layers × 1 KV head, head dim 4: layer 1's keys are layer 0's, its values orthogonal to layer 0's. */
function handMadeCache(rope: Rope, n: number): KVCacheStore {
  const cache = new KVCacheStore({ nLayers: 2, nKvHeads: 1, nHeads: 1, headDim: 4 }, rope);
  const keys = new Float32Array(n * 4);
  const v0 = new Float32Array(n * 4);
  const v1 = new Float32Array(n * 4);
  for (let t = 0; t < n; t++) {
    keys.set([1, 0.5, 0, 0], t * 4);
    rope.rotate(keys, t, t * 4);
    v0.set([1, 0, 0, 0], t * 4);
    v1.set(t % 2 ? [0, 1, 0, 0] : [0, 0, 1, 0], t * 4);
  }
  cache.appendLayer(0, keys, v0, n, indexRange(0, n), 0);
  cache.appendLayer(1, keys.slice(), v1, n, indexRange(0, n), 0);
  cache.tokenCount = n;
  return cache;
}

describe('kv similarity: a hand-made cache', () => {
  it('per layer and per pair: RoPE-removed keys 1, constant values 1, alternating values 0, cross-layer keys 1 and values 0', () => {
    const rope = new Rope({ theta: 10000, dim: 4 }, 4);
    const samples = emptySamples(2, 1, [1, 2, 8]);
    addCacheSamples(samples, handMadeCache(rope, 8), rope);
    addCacheSamples(samples, handMadeCache(rope, 8), rope);
    const report = summarizeSamples(samples, { windows: 2, tokens: 8, seed: 0 });
    expect(report.settings.lags).toEqual([1, 2, 8]);
    expect(report.deepFrom).toBe(1);
    const [l0, l1] = report.layers;
    expect(l0.keys.count).toBe(14);
    expect(l0.keysNoRope.mean).toBeCloseTo(1, 6);
    expect(l0.keysNoRope.above['0.9']).toBe(1);
    expect(l0.keys.mean).toBeLessThan(0.9);
    expect(l0.values).toMatchObject({ mean: 1, median: 1, above: { '0.9': 1 } });
    expect(l1.values).toMatchObject({ mean: 0, median: 0, p90: 0, above: { '0.5': 0 } });
    // lag 8 is not shorter than the window: left out
    expect(l1.byLag.map((m) => m.lag)).toEqual([1, 2]);
    expect(l1.byLag[1].values).toBeCloseTo(1, 6); // every other value is the same vector
    expect(l0.heads).toHaveLength(1);
    expect(report.layerPairs).toHaveLength(1);
    const pair = report.layerPairs[0];
    expect(pair).toMatchObject({ layer: 1, previous: 0, deep: false });
    expect(pair.keys.mean).toBeCloseTo(1, 6);
    expect(pair.keys.count).toBe(16);
    expect(pair.keyAngle.median).toBeCloseTo(0, 3);
    expect(pair.values.mean).toBe(0);
    expect(pair.valueAngle.mean).toBeCloseTo(Math.PI / 2, 12);
  });

  it('refuses a cache that is not full, and lags without 1', () => {
    const rope = new Rope({ theta: 10000, dim: 4 }, 4);
    const cache = handMadeCache(rope, 8);
    cache.apply({ layers: [[{ keep: [0, 1, 2] }], [null]] });
    expect(() => addCacheSamples(emptySamples(2, 1), cache, rope)).toThrow(/needs a full cache/);
    expect(() => emptySamples(2, 1, [2, 4])).toThrow(/including 1/);
  });
});

function checkCosine(d: { mean: number; median: number; p10: number; p90: number; above: Record<string, number> }): void {
  for (const x of [d.mean, d.median, d.p10, d.p90]) {
    expect(x).toBeGreaterThanOrEqual(-1);
    expect(x).toBeLessThanOrEqual(1);
  }
  expect(d.p10).toBeLessThanOrEqual(d.median);
  expect(d.median).toBeLessThanOrEqual(d.p90);
  expect(d.above['0.9']).toBeLessThanOrEqual(d.above['0.8']);
  expect(d.above['0.8']).toBeLessThanOrEqual(d.above['0.5']);
}

describe('kv similarity: the fixture model', () => {
  it('shapes and ranges over seeded held-out windows; the same seed gives the same report', async () => {
    const model = await fixtureModel();
    const { readHeldout, heldoutPath } = await import('../../engine/cli/models.ts');
    const documents = await readHeldout(heldoutPath(undefined));
    const report = await runKvSimilarity(model, documents, { windows: 2, tokens: 64, seed: 3 });
    expect(report.settings).toEqual({ windows: 2, tokens: 64, seed: 3, lags: [1, 2, 4, 8, 16, 64, 256] });
    expect(report.nLayers).toBe(2);
    expect(report.nKvHeads).toBe(2);
    expect(report.layers).toHaveLength(2);
    expect(report.layerPairs).toHaveLength(1);
    for (const layer of report.layers) {
      expect(layer.keys.count).toBe(2 * 2 * 63);
      [layer.keys, layer.keysNoRope, layer.values].forEach(checkCosine);
      expect(layer.heads).toHaveLength(2);
      expect(layer.byLag.map((m) => m.lag)).toEqual([1, 2, 4, 8, 16]);
      expect(layer.byLag[0].keys).toBeCloseTo(layer.keys.mean, 9);
    }
    const pair = report.layerPairs[0];
    expect(pair.keys.count).toBe(2 * 2 * 64);
    [pair.keys, pair.values].forEach(checkCosine);
    for (const a of [pair.keyAngle, pair.valueAngle]) {
      expect(a.p10).toBeGreaterThanOrEqual(0);
      expect(a.p90).toBeLessThanOrEqual(Math.PI);
      expect(a.median).toBeCloseTo(Math.acos(pair[a === pair.keyAngle ? 'keys' : 'values'].median), 6);
    }
    const again = await runKvSimilarity(model, documents, { windows: 2, tokens: 64, seed: 3 });
    expect({ ...again, seconds: 0 }).toEqual({ ...report, seconds: 0 });
  });
});

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) });
  return { code, stdout, stderr };
}

describe('kvscope inspect --kv-similarity (tiny fixture)', () => {
  it('prints the tables, or the report as JSON', async () => {
    const text = await cli(['inspect', '--model', FIXTURE_DIR, '--kv-similarity', '--windows', '1', '--tokens', '32']);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('tiny-fixture — KV cache similarity on 1 held-out windows of 32 tokens');
    expect(text.stdout).toContain('Adjacent tokens — keys with RoPE removed');
    expect(text.stdout).toMatch(/\n {2}0→1 /);
    expect(text.stderr).toContain('kv similarity: window 1/1');
    const json = await cli(['inspect', '--model', FIXTURE_DIR, '--kv-similarity', '--quick', '--json']);
    expect(json.code).toBe(0);
    const out = JSON.parse(json.stdout) as { model: { id: string }; kvSimilarity: KvSimilarityReport };
    expect(out.model.id).toBe('tiny-fixture');
    expect(out.kvSimilarity.settings).toMatchObject({ windows: 2, tokens: 256 });
    expect(out.kvSimilarity.layers[1].keys.count).toBe(2 * 2 * 255);
  });

  it('usage errors', async () => {
    const tiny = ['inspect', '--model', FIXTURE_DIR];
    expect(await cli([...tiny, '--windows', '2'])).toMatchObject({ code: 2, stderr: 'kvscope inspect: --windows applies to --kv-similarity only\n' });
    expect(await cli([...tiny, '--kv-similarity', '--trials', '3'])).toMatchObject({ code: 2, stderr: 'kvscope inspect: --trials does not apply to --kv-similarity\n' });
    expect(await cli([...tiny, '--kv-similarity', '--tokens', '257'])).toMatchObject({
      code: 2,
      stderr: "kvscope inspect: --tokens must be an integer in 2..256 (the model's context), got \"257\"\n",
    });
    expect((await cli(['inspect', '--help'])).stdout).toContain('--kv-similarity');
  });
});
