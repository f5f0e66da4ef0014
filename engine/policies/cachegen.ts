/**
 * CacheGen — Liu et al., 2024, "CacheGen: KV Cache Compression and Streaming for Fast Large
 * Language Model Serving" (SIGCOMM 2024, https://arxiv.org/abs/2310.07240). Reference read:
 * UChi-JCL/CacheGen (LMCache/lmcache/storage_backend/serde/cachegen_{basics,encoder,decoder}.py,
 * third_party/torchac_cuda/cal_cdf.cu); our own code, not a port.
 *
 * The cache as a bitstream: every `chunk` (256) entries of a KV head are encoded once, as
 * quant/kv-bitstream.ts describes — per-token symmetric quantization with layer-dependent bins,
 * optional deltas to anchor rows, a per-channel empirical symbol distribution, range coding
 * (quant/entropy.ts) — and the graph sees from then on exactly what decoding the stored bytes
 * gives (the policy decodes its own stream to get the re-encoded K/V).
 *
 * Readings:
 * - Bins per layer, the reference's default (its 7B family) as fractions of the depth: keys 32
 *   bins below 10/32 of the layers, 16 below 20/32, 16 above; values 32 below 2/32, 16 above
 *   (layer l is "below f" when l < f·L). 32 bins = 31 symbols (reference: C = bins/2 − 1).
 * - The scale is per token and KV head (max |x| over the head's channels); the reference takes it
 *   over all heads of a layer. Per head, every block (chunk × layer × KV head) decodes alone.
 * - The symbol distribution is per chunk × layer × KV head × channel, from the chunk itself (the
 *   reference computes its CDF per layer × channel over the tokens it encodes), stored as counts.
 * - Delta to anchors (paper §5.1, groups of 10) is not in the released code: `anchor` (0 = off).
 * - Keys are encoded post-RoPE (as the reference encodes HF's past_key_values).
 * - A chunk is `chunk` consecutive entries of a head not yet encoded (after the last entry this
 *   instance encoded), so ragged heads and compositions work; the newest entries stay fp32 until
 *   a chunk fills. Prefill and attach encode every full chunk; a step encodes one when it fills
 *   (O(chunk) once per chunk; other steps only look at the pending entries' codecs).
 *
 * Bytes: per block, a CodecGroup holds every byte — K: stream + packed tables + fp16 scales, V
 * the same. Its entries name it with 0 own bits (kElements = headDim, kBits = 0, no metadata), so
 * cache.memory() is exactly Σ blocks + the fp32 entries not encoded yet.
 *
 * Measures per layer on a decision that encodes (NaN for layers that encoded nothing):
 * encoded_bytes, raw_bytes (fp32), k_error / v_error (relative L2 ‖x − x̂‖/‖x‖ over the layer's new
 * blocks), k_bits / v_bits (bits per element, tables and scales included), and the schedule
 * k_bins / v_bins. No entry budget: every entry is kept (eval/budgets.ts lists it as unbudgeted).
 */
import type { CodecGroup, EntryCodec, Reencode } from '../cache/decision.ts';
import { BYTES_PER_FLOAT32 } from '../cache/memory.ts';
import type { PolicyCache } from '../cache/view.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import type { Transform } from '../pipeline/stages.ts';
import { blockBytes, decodeBlock, encodeBlock } from '../quant/kv-bitstream.ts';
import { relativeL2 } from '../quant/quantize.ts';
import { floatParam, intParam } from './types.ts';

export interface CacheGenOptions {
  /** entries per encoded block */
  chunk: number;
  /** rows per anchor group (0 = no delta coding) */
  anchor: number;
  /** bins per layer */
  kBins: readonly number[];
  vBins: readonly number[];
}

/** What one block (chunk × layer × KV head) took. */
export interface BlockReport {
  layer: number;
  kvHead: number;
  group: string;
  firstToken: number;
  lastToken: number;
  kBytes: number;
  vBytes: number;
  kError: number;
  vError: number;
}

/** Bins of each layer: `bins[g]` for the first group g with l < splits[g]·L, else the last. */
export function binSchedule(nLayers: number, bins: readonly number[], splits: readonly number[]): number[] {
  return Array.from({ length: nLayers }, (_, l) => {
    const g = splits.findIndex((f) => l < f * nLayers);
    return bins[g < 0 ? bins.length - 1 : g];
  });
}

export function cachegenGroupId(prefix: string, layer: number, kvHead: number, firstToken: number, lastToken: number): string {
  return `${prefix}L${layer}/kv${kvHead}/t${firstToken}-${lastToken}`;
}

/** First entry after the last one this instance encoded (its groups start with `prefix`). */
function pendingStart(cache: PolicyCache, layer: number, kvHead: number, prefix: string): number {
  for (let i = cache.length(layer, kvHead) - 1; i >= 0; i--) if (cache.codec(layer, kvHead, i)?.group?.startsWith(prefix)) return i + 1;
  return 0;
}

function squaredError(x: ArrayLike<number>, xHat: ArrayLike<number>): [number, number] {
  let num = 0;
  let den = 0;
  for (let i = 0; i < x.length; i++) {
    const e = x[i] - xHat[i];
    num += e * e;
    den += x[i] * x[i];
  }
  return [num, den];
}

/** ‖x − x̂‖ / ‖x‖ from [Σ (x − x̂)², Σ x²]. */
const rel = ([num, den]: readonly number[]) => (den > 0 ? Math.sqrt(num / den) : Math.sqrt(num));

const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KB`;

/** Per layer: what the decision's blocks took and lost (K and V: [Σ (x − x̂)², Σ x²]). */
interface LayerSums {
  kBytes: number;
  vBytes: number;
  raw: number;
  elements: number;
  k: [number, number];
  v: [number, number];
}

/** Encodes the `chunk` entries of one head from `i0`: its group, re-encodes (decoded K/V) and report. */
function encodeChunk(cache: PolicyCache, options: CacheGenOptions, prefix: string, l: number, h: number, i0: number, sums: LayerSums): { group: CodecGroup; reencode: Reencode[]; report: BlockReport } {
  const { chunk, anchor } = options;
  const d = cache.headDim;
  const kx = cache.keys(l, h).subarray(i0 * d, (i0 + chunk) * d);
  const vx = cache.values(l, h).subarray(i0 * d, (i0 + chunk) * d);
  const k = encodeBlock(kx, { rows: chunk, cols: d, bins: options.kBins[l], anchor }).block;
  const v = encodeBlock(vx, { rows: chunk, cols: d, bins: options.vBins[l], anchor }).block;
  // what the graph sees: the stored bytes decoded
  const kHat = decodeBlock(k);
  const vHat = decodeBlock(v);
  const tokens = cache.tokens(l, h);
  const first = tokens[i0];
  const last = tokens[i0 + chunk - 1];
  const id = cachegenGroupId(prefix, l, h, first, last);
  const group: CodecGroup = {
    id,
    kBytes: blockBytes(k),
    vBytes: blockBytes(v),
    label:
      `CacheGen bitstream of tokens ${first}–${last}, layer ${l}, KV head ${h}: ` +
      `K ${k.stream.length} + ${k.tables.length} tables + ${2 * chunk} scales B (${k.bins} bins), ` +
      `V ${v.stream.length} + ${v.tables.length} + ${2 * chunk} B (${v.bins} bins)`,
  };
  const codec: EntryCodec = { name: `cachegen-k${k.bins}v${v.bins}`, kBits: 0, vBits: 0, kElements: d, vElements: d, kMetaBytes: 0, vMetaBytes: 0, group: id };
  const reencode: Reencode[] = [];
  for (let t = 0; t < chunk; t++) {
    reencode.push({
      index: i0 + t,
      codec,
      keys: kHat.subarray(t * d, (t + 1) * d),
      values: vHat.subarray(t * d, (t + 1) * d),
      kError: relativeL2(kx, kHat, t * d, d),
      vError: relativeL2(vx, vHat, t * d, d),
    });
  }
  const ke = squaredError(kx, kHat);
  const ve = squaredError(vx, vHat);
  sums.k[0] += ke[0];
  sums.k[1] += ke[1];
  sums.v[0] += ve[0];
  sums.v[1] += ve[1];
  sums.kBytes += group.kBytes;
  sums.vBytes += group.vBytes;
  sums.raw += 2 * chunk * d * BYTES_PER_FLOAT32;
  sums.elements += chunk * d;
  const report: BlockReport = { layer: l, kvHead: h, group: id, firstToken: first, lastToken: last, kBytes: group.kBytes, vBytes: group.vBytes, kError: rel(ke), vError: rel(ve) };
  return { group, reencode, report };
}

export function cachegenTransform(options: CacheGenOptions): Transform & { readonly lastBlocks: readonly BlockReport[] } {
  let lastBlocks: BlockReport[] = [];
  return {
    get lastBlocks() {
      return lastBlocks;
    },
    finish(env, draft) {
      const { cache } = env;
      const { chunk } = options;
      const prefix = env.column('');
      const blocks: BlockReport[] = [];
      const sums: LayerSums[] = Array.from({ length: cache.nLayers }, () => ({ kBytes: 0, vBytes: 0, raw: 0, elements: 0, k: [0, 0], v: [0, 0] }));
      let pending = 0;
      let chunks = 0;
      for (let l = 0; l < cache.nLayers; l++) {
        for (let h = 0; h < cache.nKvHeads; h++) {
          const start = pendingStart(cache, l, h, prefix);
          const full = Math.floor((cache.length(l, h) - start) / chunk);
          pending = Math.max(pending, cache.length(l, h) - start - full * chunk);
          chunks = Math.max(chunks, full);
          for (let b = 0; b < full; b++) {
            const { group, reencode, report } = encodeChunk(cache, options, prefix, l, h, start + b * chunk, sums[l]);
            draft.groups.push(group);
            draft.layers[l][h].reencode.push(...reencode);
            blocks.push(report);
          }
        }
      }
      lastBlocks = blocks;
      if (blocks.length === 0) {
        if (env.phase !== 'step') draft.notes.push(`cachegen: no full chunk of ${chunk} yet (${pending} entries per head stay fp32)`);
        return;
      }
      const per = (f: (s: LayerSums) => number) => sums.map((s) => (s.elements > 0 ? f(s) : NaN));
      draft.measures.encoded_bytes = per((s) => s.kBytes + s.vBytes);
      draft.measures.raw_bytes = per((s) => s.raw);
      draft.measures.k_error = per((s) => rel(s.k));
      draft.measures.v_error = per((s) => rel(s.v));
      draft.measures.k_bits = per((s) => (8 * s.kBytes) / s.elements);
      draft.measures.v_bits = per((s) => (8 * s.vBytes) / s.elements);
      draft.measures.k_bins = [...options.kBins];
      draft.measures.v_bins = [...options.vBins];
      const bytes = sums.reduce((a, s) => a + s.kBytes + s.vBytes, 0);
      const raw = sums.reduce((a, s) => a + s.raw, 0);
      const total = (pick: (s: LayerSums) => readonly number[]) => rel(sums.reduce((a, s) => [a[0] + pick(s)[0], a[1] + pick(s)[1]], [0, 0]));
      const firstToken = Math.min(...blocks.map((b) => b.firstToken));
      const lastToken = Math.max(...blocks.map((b) => b.lastToken));
      draft.notes.push(
        `cachegen: ${chunks} chunk${chunks === 1 ? '' : 's'} of ${chunk} (tokens ${firstToken}–${lastToken}), ${kb(bytes)} vs ${kb(raw)} raw fp32 ` +
          `(${(raw / bytes).toFixed(1)}×), rel. error K ${total((s) => s.k).toFixed(3)} V ${total((s) => s.v).toFixed(3)}`,
      );
    },
  };
}

export const cachegenPolicy = defineMethod({
  id: 'cachegen',
  holdsEveryEntry: 'keeps every entry; saves bytes by quantizing and entropy coding',
  label: 'CacheGen (entropy-coded bitstream)',
  description:
    'Encodes the cache in chunks of 256 tokens as a bitstream: per-token symmetric quantization with more bins in early layers, a per-channel symbol distribution and arithmetic coding. Keeps every entry; the graph sees the decoded values.',
  paper: {
    short: 'Liu et al., 2024 (CacheGen, SIGCOMM)',
    title: 'CacheGen: KV Cache Compression and Streaming for Fast Large Language Model Serving',
    url: 'https://arxiv.org/abs/2310.07240',
    code: 'https://github.com/UChi-JCL/CacheGen',
  },
  params: [
    { name: 'chunk', kind: 'int', default: 256, min: 1, max: 4096, description: 'entries per encoded chunk (newer entries stay fp32 until a chunk fills)' },
    { name: 'anchor', kind: 'int', default: 0, min: 0, description: 'delta coding: tokens per anchor group (the paper: 10), 0 = off (the released code)' },
    { name: 'k_bins_early', kind: 'int', default: 32, min: 4, max: 64, description: 'key bins of the early layers (2·(bins/2 − 1) + 1 symbols)' },
    { name: 'k_bins_mid', kind: 'int', default: 16, min: 4, max: 64, description: 'key bins of the middle layers' },
    { name: 'k_bins_late', kind: 'int', default: 16, min: 4, max: 64, description: 'key bins of the late layers' },
    { name: 'k_split_early', kind: 'float', default: 0.3125, min: 0, max: 1, description: 'keys: layers l < split·L are early (reference: 10 of 32)' },
    { name: 'k_split_late', kind: 'float', default: 0.625, min: 0, max: 1, description: 'keys: layers l ≥ split·L are late (reference: 20 of 32)' },
    { name: 'v_bins_early', kind: 'int', default: 32, min: 4, max: 64, description: 'value bins of the early layers' },
    { name: 'v_bins_late', kind: 'int', default: 16, min: 4, max: 64, description: 'value bins of the other layers' },
    { name: 'v_split', kind: 'float', default: 0.0625, min: 0, max: 1, description: 'values: layers l < split·L are early (reference: 2 of 32)' },
  ],
  needs: { attention: false, queries: false, calibration: false },
  build(params, context) {
    const L = context.dims.nLayers;
    const options: CacheGenOptions = {
      chunk: intParam(params, 'chunk'),
      anchor: intParam(params, 'anchor'),
      kBins: binSchedule(
        L,
        [intParam(params, 'k_bins_early'), intParam(params, 'k_bins_mid'), intParam(params, 'k_bins_late')],
        [floatParam(params, 'k_split_early'), floatParam(params, 'k_split_late')],
      ),
      vBins: binSchedule(L, [intParam(params, 'v_bins_early'), intParam(params, 'v_bins_late')], [floatParam(params, 'v_split')]),
    };
    return { transforms: [cachegenTransform(options)] };
  },
});
