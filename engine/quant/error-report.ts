/**
 * What a codec did to one layer × KV head, measured against the K/V the model computed (the store
 * keeps each re-encoded entry's exact K/V for this: CacheView.exact, cache/apply.ts). The
 * quantization error view (src/lib/worker/pack-quant.ts) renders this report and does no math.
 *
 * - per element: x − x̂ (exact minus stored; 0 where the entry has no codec) and the same divided by
 *   the RMS of the entry's exact vector, so that the RMS of an entry's relative row is its
 *   relative L2 error ‖x − x̂‖ / ‖x‖ (dividing by |x| itself would blow up near-zero channels);
 * - per entry: that relative L2 error, for keys and values;
 * - per layer: the mean relative error over every entry of every KV head (plain entries count 0);
 * - for the current query (when given): per query head of the KV head, the score error
 *   scale · q · (k − k̂) per entry and the softmax attention over the held entries with the exact
 *   keys and with the stored keys, each with the graph's log(count) bias for merged entries
 *   (cache/feeds.ts); hidden entries and padding are not masked — every held entry is scored.
 *   The attention output error ‖o − ô‖ / ‖o‖ (o = Σ a·v with exact keys and values, ô with the
 *   stored ones) says what the K and V errors do together.
 */
import type { EntryCodec } from '../cache/decision.ts';
import type { CacheView } from '../cache/view.ts';

/** Bits of channelFlags: which channels of an entry its codec treats specially. */
export const CHANNEL_FLAG = {
  /** key channel stored exactly beside the codes (GEAR, MiKV outliers) */
  kOutlier: 1,
  /** value channel stored exactly */
  vOutlier: 2,
  /** key channel dropped (ThinK) */
  kPruned: 4,
} as const;

export interface LayerError {
  /** mean relative L2 error over every entry of every KV head of the layer (plain entries count 0) */
  k: number;
  v: number;
  /** entries held in the layer (all KV heads) and how many of them carry a codec */
  held: number;
  encoded: number;
}

export interface QueryHeadError {
  queryHead: number;
  /** [entries] scale · q · (k − k̂): how far the stored key moves each attention score */
  scoreError: Float32Array;
  /** [entries] softmax over the held entries with the exact keys, and with the stored keys */
  exact: Float32Array;
  stored: Float32Array;
  /** ‖o − ô‖ / ‖o‖ of the attention output (exact keys and values vs stored ones); 0 when o = 0 */
  outputError: number;
}

export interface QuantErrorReport {
  layer: number;
  kvHead: number;
  headDim: number;
  /** entries the head holds */
  length: number;
  /** first origin token of each entry, and the tokens it stands for */
  tokens: Int32Array;
  counts: Int32Array;
  /** each entry's codec (null: plain fp32) */
  codecs: (EntryCodec | null)[];
  /** [length × headDim] x − x̂ of keys and values */
  kError: Float32Array;
  vError: Float32Array;
  /** [length × headDim] (x − x̂) / RMS(x) (0 where x is all zero and nothing was lost, NaN where it is all zero and something was) */
  kRelative: Float32Array;
  vRelative: Float32Array;
  /** [length] relative L2 error of each entry's key and value */
  kEntryError: Float32Array;
  vEntryError: Float32Array;
  /** [length × headDim] CHANNEL_FLAG bits from each entry's codec */
  channelFlags: Uint8Array;
  /** [layer] the bars */
  layers: LayerError[];
  /** per query head of the KV head; null when no queries were given */
  attention: QueryHeadError[] | null;
}

/**
 * Measures one head. `queries`: the current query of each query head reading this KV head,
 * [groupSize × headDim] (query head kvHead · groupSize + i in row i); `scale`: the graph's score
 * scale, 1 / sqrt(headDim).
 */
export function quantErrorReport(cache: CacheView, layer: number, kvHead: number, queries?: Float32Array | null, scale = 1 / Math.sqrt(cache.headDim)): QuantErrorReport {
  if (!(Number.isInteger(layer) && layer >= 0 && layer < cache.nLayers && Number.isInteger(kvHead) && kvHead >= 0 && kvHead < cache.nKvHeads)) {
    throw new RangeError(`no layer ${layer} / KV head ${kvHead} (the cache has ${cache.nLayers} layers × ${cache.nKvHeads} KV heads)`);
  }
  const d = cache.headDim;
  if (queries && (queries.length === 0 || queries.length % d !== 0)) throw new RangeError(`queries must be [query heads × ${d}] floats, got ${queries.length}`);
  const n = cache.length(layer, kvHead);
  const keys = cache.keys(layer, kvHead);
  const values = cache.values(layer, kvHead);
  const report: QuantErrorReport = {
    layer,
    kvHead,
    headDim: d,
    length: n,
    tokens: Int32Array.from(cache.tokens(layer, kvHead)),
    counts: Int32Array.from(cache.counts(layer, kvHead)),
    codecs: [],
    kError: new Float32Array(n * d),
    vError: new Float32Array(n * d),
    kRelative: new Float32Array(n * d),
    vRelative: new Float32Array(n * d),
    kEntryError: new Float32Array(n),
    vEntryError: new Float32Array(n),
    channelFlags: new Uint8Array(n * d),
    layers: layerErrors(cache),
    attention: null,
  };
  // exact keys of the head: the stored ones where nothing was lost
  const exactKeys = Float32Array.from(keys);
  const exactValues = Float32Array.from(values);
  for (let i = 0; i < n; i++) {
    const codec = cache.codec(layer, kvHead, i);
    report.codecs.push(codec);
    if (!codec) continue;
    markChannels(report.channelFlags, i * d, d, codec);
    const exact = cache.exact(layer, kvHead, i);
    if (!exact) continue;
    exactKeys.set(exact.keys, i * d);
    exactValues.set(exact.values, i * d);
    report.kEntryError[i] = entryError(exact.keys, keys, i * d, d, report.kError, report.kRelative);
    report.vEntryError[i] = entryError(exact.values, values, i * d, d, report.vError, report.vRelative);
  }
  if (queries) report.attention = queryErrors(queries, kvHead, exactKeys, keys, exactValues, values, report.counts, n, d, scale);
  return report;
}

/** Writes x − x̂ and (x − x̂) / RMS(x) of one entry at `offset`; returns ‖x − x̂‖ / ‖x‖. */
function entryError(exact: ArrayLike<number>, stored: ArrayLike<number>, offset: number, d: number, error: Float32Array, relative: Float32Array): number {
  let lost = 0;
  let norm = 0;
  for (let c = 0; c < d; c++) {
    const x = exact[c];
    const e = x - stored[offset + c];
    error[offset + c] = e;
    lost += e * e;
    norm += x * x;
  }
  const rms = Math.sqrt(norm / d);
  for (let c = 0; c < d; c++) relative[offset + c] = rms > 0 ? error[offset + c] / rms : error[offset + c] === 0 ? 0 : Number.NaN;
  return norm > 0 ? Math.sqrt(lost / norm) : lost === 0 ? 0 : Number.NaN;
}

function markChannels(flags: Uint8Array, offset: number, d: number, codec: EntryCodec): void {
  const mark = (channels: readonly number[] | undefined, bit: number) => {
    for (const c of channels ?? []) if (Number.isInteger(c) && c >= 0 && c < d) flags[offset + c] |= bit;
  };
  mark(codec.kOutliers, CHANNEL_FLAG.kOutlier);
  mark(codec.vOutliers, CHANNEL_FLAG.vOutlier);
  mark(codec.kPruned, CHANNEL_FLAG.kPruned);
}

/** Relative L2 error of one stored vector against its exact one (0 for an entry without exact K/V). */
function vectorError(exact: ArrayLike<number>, stored: ArrayLike<number>, offset: number, d: number): number {
  let lost = 0;
  let norm = 0;
  for (let c = 0; c < d; c++) {
    const e = exact[c] - stored[offset + c];
    lost += e * e;
    norm += exact[c] * exact[c];
  }
  return norm > 0 ? Math.sqrt(lost / norm) : 0;
}

/** The bars: per layer, the mean relative K / V error over every entry of every KV head. */
function layerErrors(cache: CacheView): LayerError[] {
  const d = cache.headDim;
  const out: LayerError[] = [];
  for (let l = 0; l < cache.nLayers; l++) {
    let k = 0;
    let v = 0;
    let held = 0;
    let encoded = 0;
    for (let h = 0; h < cache.nKvHeads; h++) {
      const n = cache.length(l, h);
      const keys = cache.keys(l, h);
      const values = cache.values(l, h);
      held += n;
      for (let i = 0; i < n; i++) {
        if (!cache.codec(l, h, i)) continue;
        encoded++;
        const exact = cache.exact(l, h, i);
        if (!exact) continue;
        k += vectorError(exact.keys, keys, i * d, d);
        v += vectorError(exact.values, values, i * d, d);
      }
    }
    out.push({ k: held > 0 ? k / held : 0, v: held > 0 ? v / held : 0, held, encoded });
  }
  return out;
}

/** Softmax of scale · q · k + log(count) over the n entries of `keys` ([n × d]), written to `out`. */
function attend(q: Float32Array, qOffset: number, keys: ArrayLike<number>, counts: Int32Array, n: number, d: number, scale: number, out: Float32Array): void {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let c = 0; c < d; c++) dot += q[qOffset + c] * keys[i * d + c];
    // the bias the graph adds for a merged entry (cache/feeds.ts)
    const logit = scale * dot + (counts[i] > 1 ? Math.log(counts[i]) : 0);
    out[i] = logit;
    if (logit > max) max = logit;
  }
  let sum = 0;
  for (let i = 0; i < n; i++) {
    out[i] = Math.exp(out[i] - max);
    sum += out[i];
  }
  for (let i = 0; i < n; i++) out[i] /= sum;
}

function queryErrors(
  queries: Float32Array,
  kvHead: number,
  exactKeys: Float32Array,
  keys: ArrayLike<number>,
  exactValues: Float32Array,
  values: ArrayLike<number>,
  counts: Int32Array,
  n: number,
  d: number,
  scale: number,
): QueryHeadError[] {
  const group = queries.length / d;
  const out: QueryHeadError[] = [];
  for (let g = 0; g < group; g++) {
    const qOffset = g * d;
    const scoreError = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += queries[qOffset + c] * (exactKeys[i * d + c] - keys[i * d + c]);
      scoreError[i] = scale * dot;
    }
    const exact = new Float32Array(n);
    const stored = new Float32Array(n);
    if (n > 0) {
      attend(queries, qOffset, exactKeys, counts, n, d, scale, exact);
      attend(queries, qOffset, keys, counts, n, d, scale, stored);
    }
    let lost = 0;
    let norm = 0;
    for (let c = 0; c < d; c++) {
      let o = 0;
      let oHat = 0;
      for (let i = 0; i < n; i++) {
        o += exact[i] * exactValues[i * d + c];
        oHat += stored[i] * values[i * d + c];
      }
      lost += (o - oHat) ** 2;
      norm += o * o;
    }
    out.push({ queryHead: kvHead * group + g, scoreError, exact, stored, outputError: norm > 0 ? Math.sqrt(lost / norm) : 0 });
  }
  return out;
}
