/**
 * What merge methods assume about the KV cache, measured on a full cache (`kvscope inspect
 * --kv-similarity`):
 *
 *   adjacent tokens  cos(x_t, x_{t+1}) over t, per layer and KV head, for keys and values —
 *                    Chelsea and KVMerger merge consecutive tokens because their keys are similar.
 *                    Cached keys are post-RoPE, so neighbours differ by one position's rotation as
 *                    well; the keys are also compared with RoPE removed (rotated back to position 0).
 *                    For a baseline, the mean cosine at larger lags cos(x_t, x_{t+lag}) too: when
 *                    distant tokens are nearly as similar as neighbours, the similarity is a shared
 *                    direction of the whole head, not locality.
 *   adjacent layers  cos(x^(l−1)_t, x^l_t) per token and KV head, for keys and values, and the
 *                    angle Ω = arccos(cos) MiniCache interpolates along (it merges layer pairs from
 *                    the middle layer up). Both layers' keys of one token are rotated to the same
 *                    position, and a rotation preserves dot products and norms, so the cross-layer
 *                    cosine is the same with or without RoPE: no "RoPE removed" variant is needed.
 *
 * Samples are pooled over windows (and over KV heads for the per-layer rows) before summarizing.
 * Cosines come from pipeline/similarity.ts, as the merge methods compute them.
 */
import type { CacheView } from '../cache/view.ts';
import type { Rope } from '../model/rope.ts';
import { rowCosine, rowNorms, vectorCosine } from '../pipeline/similarity.ts';
import { Session, type EngineModel } from '../session.ts';
import type { ReadonlyFloat32Array } from '../types.ts';
import { heldoutWindows } from './heldout.ts';

/** Summary of a sample: mean and quantiles (linear interpolation between order statistics). */
export interface Distribution {
  count: number;
  mean: number;
  median: number;
  p10: number;
  p90: number;
}

/** A cosine distribution plus the share of samples above 0.9, 0.8 and 0.5. */
export interface CosineDistribution extends Distribution {
  above: { '0.9': number; '0.8': number; '0.5': number };
}

/** Adjacent-token similarity of one layer (pooled over KV heads) or one KV head. */
export interface AdjacentTokenStats {
  /** post-RoPE keys, as cached */
  keys: CosineDistribution;
  /** keys rotated back to position 0 (pre-RoPE) */
  keysNoRope: CosineDistribution;
  values: CosineDistribution;
  /** mean cos(x_t, x_{t+lag}) over t, for each lag of the settings shorter than the window (lag 1 = the rows above) */
  byLag: LagMeans[];
}

export interface LagMeans {
  lag: number;
  keys: number;
  keysNoRope: number;
  values: number;
}

/** Adjacent-layer similarity of one pair (pooled over KV heads) or one KV head. */
export interface AdjacentLayerStats {
  /** per-token cosine of the keys (the same with or without RoPE) */
  keys: CosineDistribution;
  values: CosineDistribution;
  /** MiniCache's Ω = arccos(cos) in radians */
  keyAngle: Distribution;
  valueAngle: Distribution;
}

export interface KvSimilarityReport {
  settings: { windows: number; tokens: number; seed: number; lags: number[] };
  nLayers: number;
  nKvHeads: number;
  /** first layer of MiniCache's deep half: floor(nLayers / 2) */
  deepFrom: number;
  layers: (AdjacentTokenStats & { layer: number; heads: AdjacentTokenStats[] })[];
  /** one per l = 1 … nLayers − 1: layers l − 1 and l */
  layerPairs: (AdjacentLayerStats & { layer: number; previous: number; deep: boolean; heads: AdjacentLayerStats[] })[];
  notes: string[];
  seconds: number;
}

/** Lags of the baseline: neighbours, Chelsea-sized chunks, far apart. */
export const DEFAULT_LAGS = [1, 2, 4, 8, 16, 64, 256];

/** Quantile q of ascending `sorted` (linear interpolation, NaN when empty). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const at = q * (n - 1);
  const lo = Math.floor(at);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo] + (at - lo) * (sorted[hi] - sorted[lo]);
}

export function distribution(samples: ArrayLike<number>): Distribution {
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (const x of sorted) sum += x;
  const n = sorted.length;
  return { count: n, mean: n ? sum / n : NaN, median: quantile(sorted, 0.5), p10: quantile(sorted, 0.1), p90: quantile(sorted, 0.9) };
}

export function cosineDistribution(samples: ArrayLike<number>): CosineDistribution {
  const d = distribution(samples);
  const share = (t: number) => {
    let k = 0;
    for (let i = 0; i < samples.length; i++) if (samples[i] > t) k++;
    return samples.length ? k / samples.length : NaN;
  };
  return { ...d, above: { '0.9': share(0.9), '0.8': share(0.8), '0.5': share(0.5) } };
}

/** cos(row t, row t+lag) of a [n, d] matrix for t < n − lag (lag 1: adjacent rows); norms from rowNorms. */
export function laggedCosines(rows: ArrayLike<number>, n: number, d: number, lag = 1, norms = rowNorms(rows, n, d)): Float64Array {
  const out = new Float64Array(Math.max(0, n - lag));
  for (let t = 0; t + lag < n; t++) out[t] = rowCosine(rows, t, t + lag, d, norms);
  return out;
}

/** cos(a_t, b_t) for each row t of two [n, d] matrices. */
export function pairedCosines(a: ReadonlyFloat32Array, b: ReadonlyFloat32Array, n: number, d: number): Float64Array {
  const out = new Float64Array(n);
  for (let t = 0; t < n; t++) out[t] = vectorCosine(a.subarray(t * d, (t + 1) * d), b.subarray(t * d, (t + 1) * d));
  return out;
}

/** MiniCache's angle Ω = arccos(cos), cosines clamped to [−1, 1]. */
export function angles(cosines: ArrayLike<number>): Float64Array {
  return Float64Array.from(cosines, (c) => Math.acos(Math.max(-1, Math.min(1, c))));
}

/** A copy of post-RoPE keys [n, headDim] with each row rotated back from its position to 0. */
export function removeRope(keys: ArrayLike<number>, positions: ArrayLike<number>, rope: Rope): Float32Array {
  const out = Float32Array.from(keys);
  for (let t = 0; t < positions.length; t++) rope.rotate(out, -positions[t], t * rope.headDim);
  return out;
}

interface TokenSamples {
  keys: number[];
  keysNoRope: number[];
  values: number[];
  /** per lag of `lags`: sums of cosines and their count */
  lagSums: { keys: number; keysNoRope: number; values: number; count: number }[];
}

/** Raw samples of one or more caches: [layer][kvHead] lists, appended per cache. */
export interface KvSimilaritySamples {
  lags: number[];
  adjacent: TokenSamples[][];
  crossLayer: { keys: number[]; values: number[] }[][];
}

export function emptySamples(nLayers: number, nKvHeads: number, lags: readonly number[] = DEFAULT_LAGS): KvSimilaritySamples {
  if (!lags.includes(1) || lags.some((lag) => !Number.isInteger(lag) || lag < 1)) throw new RangeError(`lags must be positive integers including 1, got ${lags.join(',')}`);
  const grid = <T>(layers: number, make: () => T) => Array.from({ length: layers }, () => Array.from({ length: nKvHeads }, make));
  return {
    lags: [...lags],
    adjacent: grid(nLayers, () => ({ keys: [], keysNoRope: [], values: [], lagSums: lags.map(() => ({ keys: 0, keysNoRope: 0, values: 0, count: 0 })) })),
    crossLayer: grid(Math.max(0, nLayers - 1), () => ({ keys: [], values: [] })),
  };
}

const sum = (xs: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return s;
};

function push(into: number[], from: ArrayLike<number>): void {
  for (let i = 0; i < from.length; i++) into.push(from[i]);
}

/**
 * Adds one cache's samples. Every head must hold the same tokens in the same order (a full cache):
 * cross-layer pairs compare entry t of layer l − 1 with entry t of layer l.
 */
export function addCacheSamples(samples: KvSimilaritySamples, view: CacheView, rope: Rope): void {
  const { nLayers, nKvHeads, headDim: d } = view;
  for (let l = 0; l < nLayers; l++) {
    for (let h = 0; h < nKvHeads; h++) {
      const n = view.length(l, h);
      if (n !== view.tokenCount) throw new RangeError(`layer ${l} head ${h} holds ${n} of ${view.tokenCount} tokens: the measurement needs a full cache`);
      const keys = view.keys(l, h);
      const values = view.values(l, h);
      const unroped = removeRope(keys, view.positions(l, h), rope);
      const norms = { keys: rowNorms(keys, n, d), keysNoRope: rowNorms(unroped, n, d), values: rowNorms(values, n, d) };
      const into = samples.adjacent[l][h];
      samples.lags.forEach((lag, i) => {
        if (lag >= n) return;
        const k = laggedCosines(keys, n, d, lag, norms.keys);
        const kr = laggedCosines(unroped, n, d, lag, norms.keysNoRope);
        const v = laggedCosines(values, n, d, lag, norms.values);
        const sums = into.lagSums[i];
        sums.keys += sum(k);
        sums.keysNoRope += sum(kr);
        sums.values += sum(v);
        sums.count += k.length;
        if (lag === 1) {
          push(into.keys, k);
          push(into.keysNoRope, kr);
          push(into.values, v);
        }
      });
      if (l > 0) {
        const cross = samples.crossLayer[l - 1][h];
        push(cross.keys, pairedCosines(view.keys(l - 1, h), keys, n, d));
        push(cross.values, pairedCosines(view.values(l - 1, h), values, n, d));
      }
    }
  }
}

const pooled = <T>(heads: T[], pick: (h: T) => number[]) => heads.flatMap(pick);

function tokenStats(heads: TokenSamples[], lags: readonly number[]): AdjacentTokenStats {
  const all = (pick: (h: TokenSamples) => number[]) => heads.flatMap(pick);
  const byLag: LagMeans[] = [];
  lags.forEach((lag, i) => {
    const total = (pick: (s: TokenSamples['lagSums'][number]) => number) => heads.reduce((a, h) => a + pick(h.lagSums[i]), 0);
    const count = total((s) => s.count);
    if (count > 0) byLag.push({ lag, keys: total((s) => s.keys) / count, keysNoRope: total((s) => s.keysNoRope) / count, values: total((s) => s.values) / count });
  });
  return {
    keys: cosineDistribution(all((h) => h.keys)),
    keysNoRope: cosineDistribution(all((h) => h.keysNoRope)),
    values: cosineDistribution(all((h) => h.values)),
    byLag,
  };
}

function layerStats(keys: number[], values: number[]): AdjacentLayerStats {
  return { keys: cosineDistribution(keys), values: cosineDistribution(values), keyAngle: distribution(angles(keys)), valueAngle: distribution(angles(values)) };
}

export function summarizeSamples(samples: KvSimilaritySamples, settings: Omit<KvSimilarityReport['settings'], 'lags'>, seconds = 0): KvSimilarityReport {
  const nLayers = samples.adjacent.length;
  const nKvHeads = samples.adjacent[0]?.length ?? 0;
  const deepFrom = Math.floor(nLayers / 2);
  return {
    settings: { ...settings, lags: samples.lags },
    nLayers,
    nKvHeads,
    deepFrom,
    layers: samples.adjacent.map((heads, layer) => ({
      layer,
      ...tokenStats(heads, samples.lags),
      heads: heads.map((h) => tokenStats([h], samples.lags)),
    })),
    layerPairs: samples.crossLayer.map((heads, i) => ({
      layer: i + 1,
      previous: i,
      deep: i >= deepFrom,
      ...layerStats(pooled(heads, (h) => h.keys), pooled(heads, (h) => h.values)),
      heads: heads.map((h) => layerStats(h.keys, h.values)),
    })),
    notes: [
      'adjacent tokens: cached keys are post-RoPE, so neighbours also differ by one position of rotation; keysNoRope rotates every key back to position 0 first',
      'adjacent layers: both layers of a token are rotated to the same position and a rotation preserves cosines, so the cross-layer key cosine is the same with or without RoPE',
      `deep pairs: both layers ≥ ${deepFrom} (MiniCache merges from the middle layer up); angles in radians`,
    ],
    seconds,
  };
}

export interface KvSimilarityOptions {
  windows?: number;
  /** tokens per window (default min(512, context)) */
  tokens?: number;
  /** lags of the baseline (default DEFAULT_LAGS) */
  lags?: readonly number[];
  seed?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Prefills seeded held-out windows (seed + 1, the attention-sink windows' stream) into a full-cache
 * session each and measures the cache.
 */
export async function runKvSimilarity(model: EngineModel, documents: readonly string[], options: KvSimilarityOptions = {}): Promise<KvSimilarityReport> {
  if (!model.tokenizer) throw new RangeError('the KV similarity measurement needs a model with a tokenizer');
  const started = globalThis.performance.now();
  const { nLayers, nKvHeads, contextLength } = model.forward.dims;
  const settings = { windows: options.windows ?? 4, tokens: options.tokens ?? Math.min(512, contextLength), seed: options.seed ?? 0 };
  const lags = options.lags ?? DEFAULT_LAGS;
  if (settings.tokens < 2 || settings.tokens > contextLength) throw new RangeError(`windows need 2..${contextLength} tokens, got ${settings.tokens}`);
  const windows = heldoutWindows(model.tokenizer, documents, { windows: settings.windows, tokens: settings.tokens, seed: settings.seed + 1 });
  const samples = emptySamples(nLayers, nKvHeads, lags);
  for (let w = 0; w < windows.length; w++) {
    const session = new Session(model, { policy: 'full', trace: { attention: false, fullSteps: 0, topTokens: 0 } });
    await session.prefill(windows[w]);
    addCacheSamples(samples, session.cache, session.rope);
    options.onProgress?.(w + 1, windows.length);
  }
  return summarizeSamples(samples, settings, (globalThis.performance.now() - started) / 1000);
}
