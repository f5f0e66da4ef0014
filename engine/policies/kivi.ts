/**
 * KIVI — Liu et al., 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache"
 * (ICML 2024, https://arxiv.org/abs/2402.02750). Reference read: jy-yuan/KIVI
 * `models/llama_kivi.py` (LlamaAttention_KIVI.forward: the prefill and decode branches) and
 * `quant/new_pack.py` (triton_quantize_and_pack_along_last_dim: per group min / max, scale =
 * (max − min)/(2^b − 1), codes clamped and rounded). The quantizer is engine/quant/quantize.ts.
 *
 * Keys per channel, values per token (asymmetric, fp16 scale + zero point per group):
 * - Keys: each channel is quantized over groups of `group` (G) consecutive tokens. The reference
 *   keeps a full-precision key residual and quantizes it as one block when it reaches R =
 *   `residual` (R a multiple of G, asserted there, refused here); at prefill it quantizes the
 *   largest multiple of R of the prompt and keeps the n mod R newest keys in fp32 (all of them
 *   when n mod R = 0). A key is never quantized alone: one token per group would make per-channel
 *   quantization a no-op (the porting bug of LESSONS.md).
 * - Values: each token over groups of `v_group` channels (the reference uses G for both; with
 *   head_dim 32 the default 32 is one group per token). A sliding fp32 window of the R newest
 *   values: at prefill every value but the R newest is quantized, each step the value leaving the
 *   window.
 *
 * Stateless reading (what is fp32 is read from the cache's codecs, so attach mid-run, snapshots,
 * forks and compositions need no state). Per head, from the newest entry back to the newest entry
 * that is fully quantized or stored under another method's codec (or a quantized value older than a
 * quantized key), lies the pending region:
 * - key residual = its entries after the last quantized key; when it holds c ≥ R keys the oldest
 *   ⌊c/R⌋·R are quantized in runs of G (prefill: c = n gives the reference's n − n mod R;
 *   decoding: c reaches R once every R steps, as there: the key that completes the block is
 *   quantized with it, after the forward that saw it in fp32, as the reference does);
 * - every value of the region older than the head's R newest entries is quantized.
 * The residual counts keys the head holds, not token indices: when an earlier member of a
 * composition (`h2o + kivi`) evicts entries of the partly filled residual, the block fills later
 * (it flushes when R fp32 keys are held), and a quantized run that loses members keeps its
 * shared scales until its last member goes (the store's codec groups). Entries another method
 * encoded, and plain entries older than the pending region (e.g. made by a later merge), are left
 * as they are: KIVI never quantizes twice and never re-scans the cache (O(R) per head per step).
 *
 * Memory: per entry the codes (k_bits / v_bits × head_dim, packed) and its value scales + zeros
 * (fp16, metadataBytes of its ⌈d / v_group⌉ groups); the keys' per-channel scales + zeros are
 * shared by the G tokens of a run: one CodecGroup per (layer, KV head, run of G keys) of
 * metadataBytes(head_dim) bytes, charged while any of its keys lives. The graph sees the
 * dequantized keys and values; errors are relative L2 to the exact entry.
 * Positions unchanged (P1).
 */
import type { CodecGroup, EntryCodec, Reencode } from '../cache/decision.ts';
import type { CacheView } from '../cache/view.ts';
import { PolicySpecError } from '../errors.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import type { DecisionDraft, StageEnv, Transform } from '../pipeline/stages.ts';
import { groupCount, metadataBytes, quantizeBlock, relativeL2 } from '../quant/quantize.ts';
import { intParam, type PolicyParams } from './types.ts';

const FP32_BITS = 32;

export interface KiviOptions {
  kBits: number;
  vBits: number;
  /** G: tokens per key group (per channel) */
  group: number;
  /** channels per value group (per token) */
  vGroup: number;
  /** R: the fp32 key residual's flush size and the fp32 value window */
  residual: number;
}

/** What KIVI sees of an entry: plain fp32, key quantized, value quantized, both, or another method's. */
export type KiviEntryState = 'plain' | 'key' | 'value' | 'done' | 'foreign';

export function kiviEntryState(codec: EntryCodec | null): KiviEntryState {
  if (!codec) return 'plain';
  if (!codec.name.startsWith('kivi-')) return 'foreign';
  const key = codec.kBits < FP32_BITS;
  const value = codec.vBits < FP32_BITS;
  return key && value ? 'done' : key ? 'key' : value ? 'value' : 'plain';
}

/** The codec group holding the per-channel scales + zeros of one run of G keys (first token `token`). */
export function kiviGroupId(prefix: string, layer: number, kvHead: number, token: number): string {
  return `${prefix}L${layer}/kv${kvHead}/t${token}`;
}

/** What one decision does to one head: runs of G entries whose keys are quantized, entries whose values are. */
export interface KiviHeadPlan {
  /** first entry index of each key run (G consecutive entries) */
  keyRuns: number[];
  /** entries whose value is quantized now, ascending */
  values: number[];
}

export function kiviHeadPlan(cache: CacheView, layer: number, kvHead: number, options: KiviOptions): KiviHeadPlan {
  const n = cache.length(layer, kvHead);
  const state = (i: number) => kiviEntryState(cache.codec(layer, kvHead, i));
  // the pending region ends (going back) at a fully quantized entry, another method's entry, or a
  // quantized value older than a quantized key (a plain key left there by a merge stays fp32)
  let pending = n;
  let pastResidual = false;
  while (pending > 0) {
    const s = state(pending - 1);
    if (s === 'done' || s === 'foreign' || (pastResidual && s === 'value')) break;
    if (s === 'key') pastResidual = true;
    pending--;
  }
  let residual = pending;
  for (let i = n - 1; i >= pending; i--) {
    if (state(i) === 'key') {
      residual = i + 1;
      break;
    }
  }
  const flushed = Math.floor((n - residual) / options.residual) * options.residual;
  const keyRuns: number[] = [];
  for (let i = residual; i < residual + flushed; i += options.group) keyRuns.push(i);
  const values: number[] = [];
  for (let i = pending; i < n - options.residual; i++) {
    const s = state(i);
    if (s === 'plain' || s === 'key') values.push(i);
  }
  return { keyRuns, values };
}

/**
 * An entry's codec after quantizing its key (into run `keyGroup`) and/or its value now; the half
 * not quantized now is carried over from the entry's previous KIVI codec (fp32 without one).
 */
function nextCodec(previous: EntryCodec | null, d: number, options: KiviOptions, keyGroup: string | null, value: boolean): EntryCodec {
  const carried = kiviEntryState(previous) === 'foreign' ? null : previous;
  const kBits = keyGroup !== null ? options.kBits : (carried?.kBits ?? FP32_BITS);
  const vBits = value ? options.vBits : (carried?.vBits ?? FP32_BITS);
  const codec: EntryCodec = {
    name: `kivi-${kBits < FP32_BITS ? `k${kBits}` : ''}${vBits < FP32_BITS ? `v${vBits}` : ''}`,
    kBits,
    vBits,
    kElements: d,
    vElements: d,
    // a key's scales + zeros are its run's (the codec group); a value's are its own
    kMetaBytes: 0,
    vMetaBytes: value ? metadataBytes(groupCount(1, d, 'token', options.vGroup)) : (carried?.vMetaBytes ?? 0),
    groupSize: options.group,
  };
  const group = keyGroup ?? carried?.group;
  if (group !== undefined) codec.group = group;
  return codec;
}

/** The re-encodes and codec groups of one head's plan (the graph sees the dequantized K/V). */
export function kiviHeadReencodes(env: StageEnv, layer: number, kvHead: number, plan: KiviHeadPlan, options: KiviOptions, groups: CodecGroup[]): Reencode[] {
  const { cache } = env;
  const d = cache.headDim;
  const G = options.group;
  const keys = cache.keys(layer, kvHead);
  const values = cache.values(layer, kvHead);
  const tokens = cache.tokens(layer, kvHead);
  const byIndex = new Map<number, Reencode>();
  for (const first of plan.keyRuns) {
    const block = keys.subarray(first * d, (first + G) * d);
    const q = quantizeBlock(block, G, d, { bits: options.kBits, axis: 'channel', groupSize: G });
    const id = kiviGroupId(env.column(''), layer, kvHead, tokens[first]);
    groups.push({
      id,
      kBytes: metadataBytes(d),
      vBytes: 0,
      label: `KIVI per-channel key scales + zeros of tokens ${tokens[first]}–${tokens[first + G - 1]} (layer ${layer}, KV head ${kvHead})`,
    });
    for (let r = 0; r < G; r++) {
      byIndex.set(first + r, {
        index: first + r,
        codec: nextCodec(cache.codec(layer, kvHead, first + r), d, options, id, false),
        keys: q.dequantized.slice(r * d, (r + 1) * d),
        kError: relativeL2(block, q.dequantized, r * d, d),
      });
    }
  }
  for (const i of plan.values) {
    const row = values.subarray(i * d, (i + 1) * d);
    const q = quantizeBlock(row, 1, d, { bits: options.vBits, axis: 'token', groupSize: options.vGroup });
    const flushed = byIndex.get(i);
    const re: Reencode = flushed ?? { index: i, codec: nextCodec(null, d, options, null, true) };
    re.codec = nextCodec(flushed?.codec ?? cache.codec(layer, kvHead, i), d, options, null, true);
    re.values = q.dequantized;
    re.vError = relativeL2(row, q.dequantized);
    byIndex.set(i, re);
  }
  return [...byIndex.values()];
}

export function kiviTransform(options: KiviOptions): Transform {
  return {
    // in `finish`: the re-encodes name codec groups, which only the decision draft carries
    finish(env: StageEnv, draft: DecisionDraft) {
      let keys = 0;
      let values = 0;
      for (const heads of draft.layers) {
        for (const head of heads) {
          const plan = kiviHeadPlan(env.cache, head.layer, head.kvHead, options);
          if (plan.keyRuns.length === 0 && plan.values.length === 0) continue;
          head.reencode.push(...kiviHeadReencodes(env, head.layer, head.kvHead, plan, options, draft.groups));
          keys += plan.keyRuns.length * options.group;
          values += plan.values.length;
        }
      }
      if (keys + values > 0) {
        const bits = options.kBits === options.vBits ? `${options.kBits}-bit` : `k${options.kBits}/v${options.vBits}-bit`;
        draft.notes.push(`kivi ${bits}: ${keys} keys, ${values} values quantized; residual ${options.residual}, key group ${options.group}`);
      }
    },
  };
}

/** Validated options from a spec's parameters (`k_bits` / `v_bits` 0 = `bits`). */
export function kiviOptions(params: PolicyParams): KiviOptions {
  const bits = intParam(params, 'bits');
  const options: KiviOptions = {
    kBits: intParam(params, 'k_bits') || bits,
    vBits: intParam(params, 'v_bits') || bits,
    group: intParam(params, 'group'),
    vGroup: intParam(params, 'v_group'),
    residual: intParam(params, 'residual'),
  };
  if (options.residual % options.group !== 0) {
    throw new PolicySpecError(`kivi: residual ${options.residual} must be a multiple of group ${options.group} (keys are quantized in whole groups of G tokens)`);
  }
  return options;
}

export const kiviPolicy = defineMethod({
  id: 'kivi',
  holdsEveryEntry: 'keeps every entry; saves bytes by quantizing',
  label: 'KIVI (2-bit keys per channel, values per token)',
  description:
    'Quantizes keys per channel over groups of G tokens and values per token; the newest keys stay fp32 until R of them can be quantized as a block, the R newest values stay fp32. Keeps every entry.',
  paper: {
    short: 'Liu et al., 2024 (KIVI, ICML)',
    title: 'KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache',
    url: 'https://arxiv.org/abs/2402.02750',
    code: 'https://github.com/jy-yuan/KIVI',
  },
  params: [
    { name: 'bits', kind: 'int', default: 2, min: 1, max: 8, description: 'bits per quantized key and value element' },
    { name: 'k_bits', kind: 'int', default: 0, min: 0, max: 8, description: 'bits per key element (0 = bits)' },
    { name: 'v_bits', kind: 'int', default: 0, min: 0, max: 8, description: 'bits per value element (0 = bits)' },
    { name: 'group', kind: 'int', default: 32, min: 1, description: 'G: tokens per key quantization group (each channel on its own)' },
    { name: 'v_group', kind: 'int', default: 32, min: 1, description: 'channels per value quantization group (each token on its own; ≥ head_dim = one group)' },
    { name: 'residual', kind: 'int', default: 32, min: 1, description: 'R (a multiple of G): fp32 keys flushed as one block when R accumulate; fp32 window of the R newest values' },
  ],
  needs: { attention: false, queries: false, calibration: false },
  build(params) {
    return { transforms: [kiviTransform(kiviOptions(params))] };
  },
});
