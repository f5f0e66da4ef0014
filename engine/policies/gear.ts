/**
 * GEAR — Kang et al., 2024, "GEAR: An Efficient KV Cache Compression Recipe for Near-Lossless
 * Generative Inference of LLM" (https://arxiv.org/abs/2403.05527). Reference read:
 * HaoKang-Timmy/GEAR `GEARLM/Simulated/compress_function.py` (gears_channelQ / gears_tokenQ,
 * gearslkivi_*_new, fake_poweriteration_group), `GEARLM/Simulated/compress_config.py` (prefill vs
 * decode ranks) and `cuda_supported_gear/modeling_llamagear.py` (key_compression /
 * value_compression, the full-precision buffer flushed every `residual` tokens).
 *
 * X ≈ D̂ + S + L, per layer × KV head, K and V separately, on blocks of `block` tokens:
 * - S: per line the top and bottom s/2 by value kept exactly (fp16) — lines are channels over the
 *   block for keys, tokens for values (quant/outliers.ts: round(s·n/2) per side, filled with the
 *   line mean before quantizing, as the reference);
 * - D̂: KIVI-style asymmetric b-bit quantization of the rest (quant/quantize.ts): keys per channel
 *   over groups of G tokens, values per token over groups of G channels (G ≥ head_dim: one);
 * - L: rank-r approximation of the residual X − (D̂ with S restored) by seeded power iteration
 *   (quant/low-rank.ts, `loops` = 3), factors stored in fp16 and used as stored.
 * The graph sees D̂ + S + L (Reencode); errors are relative L2 to the exact entry.
 *
 * When: new tokens stay fp32 in a buffer; whenever a head's buffer — its newest entries without a
 * codec, back to the first entry under any codec — holds ≥ `block` entries, its oldest
 * ⌊c / block⌋·block are compressed, block by block (prefill / attach: the prompt in blocks, the
 * remainder stays buffered; decoding: once every `block` steps). Stateless: what is buffered is
 * read from the codecs, so attach, snapshots, forks and compositions need no state; O(block) per
 * head per step. Rank `prefill_rank` for blocks compressed at prefill / attach, `rank` while
 * decoding (compress_config's prefill_rank / rank). Reading: at prefill the reference takes the
 * key outliers (per channel) and the factors over the whole prompt at once; here every block has
 * its own, so decoding and prefill compress alike and a block's bytes go with its entries.
 * Outlier counts are per line (quant/outliers.ts): at s = 2 % a 64-token key channel keeps 1 per
 * side, a 32-channel value token none (raise `outliers` to 4 % for one per side).
 *
 * Memory (bytes, K and V separately; memory.ts adds them up):
 * - per entry: codes (b × head_dim bits, packed); its row of the factor A (rank × fp16, K and V);
 *   its outliers, K and V (each an fp16 value + its channel index, `outlierBytes`: 1 byte for
 *   head_dim ≤ 256; the token is the entry); its value scales + zeros (fp16, ⌈head_dim / G⌉ groups);
 * - per block × head, one CodecGroup: the keys' per-channel scales + zeros (fp16, head_dim ×
 *   ⌈block / G⌉ groups) and the factors B of K and of V (rank × head_dim fp16 each).
 * Measures for views (Decision.headMeasures, [layer][kvHead], heads that compressed a block):
 * `k_singular_values` / `v_singular_values` — the residual's spectrum of the head's last block —
 * and `k_rank` / `v_rank` ([r]). Positions unchanged (P1). No entry budget: GEAR saves bytes.
 */
import type { EntryCodec, Reencode } from '../cache/decision.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import type { DecisionDraft, StageEnv, Transform } from '../pipeline/stages.ts';
import { HALF_BYTES, roundHalf } from '../quant/half.ts';
import { derivedSeed, powerIterationLowRank, singularValues } from '../quant/low-rank.ts';
import { extractOutliers, outlierBytes, outlierChannels, restoreOutliers, type Outliers } from '../quant/outliers.ts';
import { groupCount, metadataBytes, quantizeBlock, relativeL2, type QuantAxis } from '../quant/quantize.ts';
import { floatParam, intParam } from './types.ts';

export interface GearSideOptions {
  bits: number;
  /** G: tokens per key group (per channel), channels per value group (per token) */
  group: number;
  /** s: outlier fraction per line */
  outliers: number;
  rank: number;
  loops: number;
  seed: number;
}

export interface GearOptions extends Omit<GearSideOptions, 'rank'> {
  block: number;
  prefillRank: number;
  decodeRank: number;
}

/** One side (K or V) of a block, compressed. */
export interface GearSide {
  /** D̂ + S + L, rows × cols */
  reconstructed: Float32Array;
  outliers: Outliers;
  rank: number;
  /** the residual X − (D̂ with S) the factors approximate, rows × cols */
  residual: Float64Array;
}

/**
 * Compresses a rows × cols block (keys: `axis` 'channel'; values: 'token'): outliers, quantization
 * of the rest, rank-r factors (fp16) of the residual.
 */
export function gearCompress(x: ArrayLike<number>, rows: number, cols: number, axis: QuantAxis, options: GearSideOptions): GearSide {
  const outliers = extractOutliers(x, rows, cols, { fraction: options.outliers, axis, fill: 'mean' });
  const quant = quantizeBlock(outliers.remainder, rows, cols, { bits: options.bits, axis, groupSize: options.group });
  const base = quant.dequantized;
  restoreOutliers(base, outliers);
  const residual = new Float64Array(rows * cols);
  for (let i = 0; i < residual.length; i++) residual[i] = x[i] - base[i];
  const reconstructed = Float32Array.from(base);
  let rank = 0;
  if (options.rank > 0) {
    const f = powerIterationLowRank(residual, rows, cols, options.rank, { loops: options.loops, seed: options.seed });
    rank = f.rank;
    // the factors are stored in fp16: the graph sees what a decoder of the stored bytes gets
    const a = f.a.map(roundHalf);
    const b = f.b.map(roundHalf);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < rank; j++) {
        const aij = a[i * rank + j];
        for (let c = 0; c < cols; c++) reconstructed[i * cols + c] += aij * b[j * cols + c];
      }
    }
  }
  return { reconstructed, outliers, rank, residual };
}

/** Bytes of one block × head's codec group: key scales + zeros, factors B of K and V. */
export function gearGroupBytes(rows: number, d: number, group: number, kRank: number, vRank: number): { kBytes: number; vBytes: number } {
  return { kBytes: metadataBytes(groupCount(rows, d, 'channel', group)) + kRank * d * HALF_BYTES, vBytes: vRank * d * HALF_BYTES };
}

export function gearGroupId(prefix: string, layer: number, kvHead: number, firstToken: number): string {
  return `${prefix}L${layer}/kv${kvHead}/t${firstToken}`;
}

/** First entry of a head's fp32 buffer: its newest entries without a codec. */
export function bufferStart(env: StageEnv, layer: number, kvHead: number): number {
  let start = env.cache.length(layer, kvHead);
  while (start > 0 && env.cache.codec(layer, kvHead, start - 1) === null) start--;
  return start;
}

interface HeadSpectra {
  k: number[];
  v: number[];
  kRank: number;
  vRank: number;
}

/** Compresses the block of entries [first, first + rows) of one head: re-encodes + its group. */
function compressBlock(env: StageEnv, draft: DecisionDraft, layer: number, kvHead: number, first: number, rows: number, options: GearOptions, rank: number, spectra: boolean): HeadSpectra | null {
  const { cache } = env;
  const d = cache.headDim;
  const keys = cache.keys(layer, kvHead).subarray(first * d, (first + rows) * d);
  const values = cache.values(layer, kvHead).subarray(first * d, (first + rows) * d);
  const firstToken = cache.tokens(layer, kvHead)[first];
  const side = (seedPart: number): GearSideOptions => ({ ...options, rank, seed: derivedSeed(options.seed, layer, kvHead, firstToken, seedPart) });
  const k = gearCompress(keys, rows, d, 'channel', side(0));
  const v = gearCompress(values, rows, d, 'token', side(1));
  const id = gearGroupId(env.column(''), layer, kvHead, firstToken);
  const lastToken = cache.tokens(layer, kvHead)[first + rows - 1];
  draft.groups.push({
    id,
    ...gearGroupBytes(rows, d, options.group, k.rank, v.rank),
    label: `GEAR key scales + zeros and low-rank factors B (rank ${rank}) of tokens ${firstToken}–${lastToken} (layer ${layer}, KV head ${kvHead})`,
  });
  const valueMeta = metadataBytes(groupCount(1, d, 'token', options.group));
  const reencodes: Reencode[] = draft.layers[layer][kvHead].reencode;
  for (let r = 0; r < rows; r++) {
    const kOutliers = outlierChannels(k.outliers, r);
    const vOutliers = outlierChannels(v.outliers, r);
    const codec: EntryCodec = {
      name: `gear-${options.bits}`,
      kBits: options.bits,
      vBits: options.bits,
      kElements: d,
      vElements: d,
      kMetaBytes: k.rank * HALF_BYTES + outlierBytes(kOutliers.length, d),
      vMetaBytes: v.rank * HALF_BYTES + outlierBytes(vOutliers.length, d) + valueMeta,
      group: id,
      groupSize: options.group,
      rank: k.rank,
      // always present (possibly empty): one codec shape for every entry
      kOutliers,
      vOutliers,
    };
    reencodes.push({
      index: first + r,
      codec,
      keys: k.reconstructed.slice(r * d, (r + 1) * d),
      values: v.reconstructed.slice(r * d, (r + 1) * d),
      kError: relativeL2(keys, k.reconstructed, r * d, d),
      vError: relativeL2(values, v.reconstructed, r * d, d),
    });
  }
  if (!spectra) return null;
  return { k: Array.from(singularValues(k.residual, rows, d)), v: Array.from(singularValues(v.residual, rows, d)), kRank: k.rank, vRank: v.rank };
}

export function gearTransform(options: GearOptions): Transform {
  return {
    // in `finish`: the re-encodes name codec groups, which only the decision draft carries
    finish(env, draft) {
      const { cache } = env;
      const rank = env.phase === 'step' ? options.decodeRank : options.prefillRank;
      const measured: (HeadSpectra | null)[][] = [];
      let blocks = 0;
      for (let l = 0; l < cache.nLayers; l++) {
        const row: (HeadSpectra | null)[] = [];
        for (let h = 0; h < cache.nKvHeads; h++) {
          const start = bufferStart(env, l, h);
          const count = Math.floor((cache.length(l, h) - start) / options.block);
          let last: HeadSpectra | null = null;
          for (let b = 0; b < count; b++) last = compressBlock(env, draft, l, h, start + b * options.block, options.block, options, rank, b === count - 1);
          blocks += count;
          row.push(last);
        }
        measured.push(row);
      }
      if (blocks === 0) return;
      const pick = (f: (s: HeadSpectra) => number[]) => measured.map((row) => row.map((s) => (s ? f(s) : [])));
      draft.headMeasures.k_singular_values = pick((s) => s.k);
      draft.headMeasures.v_singular_values = pick((s) => s.v);
      draft.headMeasures.k_rank = pick((s) => [s.kRank]);
      draft.headMeasures.v_rank = pick((s) => [s.vRank]);
      draft.notes.push(
        `gear ${options.bits}-bit: ${blocks} block${blocks === 1 ? '' : 's'} of ${options.block} tokens compressed (outliers ${options.outliers * 100}%, rank ${rank})`,
      );
    },
  };
}

export const gearPolicy = defineMethod({
  id: 'gear',
  holdsEveryEntry: 'keeps every entry; saves bytes by quantizing (+ low rank + outliers)',
  label: 'GEAR (quantization + low rank + outliers)',
  description:
    'Compresses K and V in blocks of 64 tokens: outliers kept exactly, the rest quantized (keys per channel, values per token), and a low-rank approximation of the quantization residual by power iteration. New tokens wait in fp32 until a block fills. Keeps every entry.',
  paper: {
    short: 'Kang et al., 2024 (GEAR)',
    title: 'GEAR: An Efficient KV Cache Compression Recipe for Near-Lossless Generative Inference of LLM',
    url: 'https://arxiv.org/abs/2403.05527',
    code: 'https://github.com/HaoKang-Timmy/GEAR',
  },
  params: [
    { name: 'bits', kind: 'int', default: 2, min: 1, max: 8, description: 'b: bits per quantized key and value element' },
    { name: 'group', kind: 'int', default: 64, min: 1, description: 'G: tokens per key group (each channel), channels per value group (each token; ≥ head_dim = one)' },
    { name: 'outliers', kind: 'float', default: 0.02, min: 0, max: 1, description: 's: fraction of each key channel (over a block) and value token kept exactly, half top, half bottom' },
    { name: 'prefill_rank', kind: 'int', default: 4, min: 0, description: 'rank of the residual’s factors for blocks compressed at prefill / attach' },
    { name: 'rank', kind: 'int', default: 2, min: 0, description: 'rank of the residual’s factors for blocks compressed while decoding' },
    { name: 'loops', kind: 'int', default: 3, min: 1, description: 'power-iteration loops' },
    { name: 'block', kind: 'int', default: 64, min: 1, description: 'tokens buffered in fp32 and compressed together' },
    { name: 'seed', kind: 'int', default: 0, min: 0, description: 'seed of the power iteration’s random start (mixed with layer, head, block)' },
  ],
  needs: { attention: false, queries: false, calibration: false },
  build(params) {
    const options: GearOptions = {
      bits: intParam(params, 'bits'),
      group: intParam(params, 'group'),
      outliers: floatParam(params, 'outliers'),
      prefillRank: intParam(params, 'prefill_rank'),
      decodeRank: intParam(params, 'rank'),
      loops: intParam(params, 'loops'),
      block: intParam(params, 'block'),
      seed: intParam(params, 'seed'),
    };
    return { transforms: [gearTransform(options)] };
  },
});
