/**
 * CSKV — Wang et al., 2024, "CSKV: Training-Efficient Channel Shrinking for KV Cache in
 * Long-Context Scenarios" (https://arxiv.org/abs/2409.10593). Reference read: wln20/CSKV
 * `cskv_src/modeling/modeling_llama.py` (LlamaAttention.forward: k_proj_a / k_proj_b, the
 * full-precision window, quantizer choice), `cskv_src/utils/cache_utils.py`
 * (DynamicCacheWithWindow) and `cskv_src/utils/quant_utils.py` (KVQuantizer: per-token
 * asymmetric; KVQuantizerChannel: per channel over windows).
 *
 * Training-free reading. The paper replaces W_K, W_V by low-rank factors initialised from an
 * (activation-aware) SVD and then fine-tunes them (a bi-branch cache: a full-precision window of
 * recent tokens, the low-rank latents of the rest). We keep the SVD initialisation only, from the
 * cache itself: per layer × KV head, the top-r right singular vectors of its keys (and of its
 * values) form an orthonormal basis U (r × d); an old entry is stored as its r coefficients
 * c = U·x, and the graph sees Uᵀ·c. A window of the `window` (32) newest entries stays exact.
 *
 * - The basis is fitted once per head, when the head first has entries older than the window
 *   (after prefill: from the prompt; a prompt within the window: from the window + 1 entries held
 *   then; attached mid-run: from what the cache holds), by seeded power iteration on the Gram
 *   matrix (quant/low-rank.ts rightSingularBasis, `loops` = 10: closer to the SVD than GEAR's 3,
 *   and cheap at d × d). It is kept as the method's state; later entries are projected onto it.
 * - Keys: `keys=pre_rope` (default, the reference: the latent is taken before RoPE, which is
 *   applied to the reconstruction) un-rotates each key from its position before fitting and
 *   projecting, and rotates the reconstruction back; `post_rope` works on the cached keys as is.
 * - The window slides (the brief's reading; O(1) per step: the entry leaving it is projected).
 *   The reference's window is block-aligned: 32-token blocks are compressed when full, and key
 *   latents are then quantized per channel over the block; with a sliding window a block never
 *   forms, so `bits` ≤ 8 quantizes each entry's coefficients per token (asymmetric, one fp16 scale
 *   + zero per entry and side, quant/quantize.ts) for keys as for values.
 * - `bits`: 32 = fp32 coefficients, 16 = fp16, 1–8 = quantized. Ranks `k_rank` / `v_rank`: an
 *   integer ≤ head_dim, or below 1 a fraction of head_dim (0.5 → d/2).
 * Entries under another method's codec are left as they are (no double encoding); a head's old
 * entries are scanned back from the window to the first entry under any codec.
 *
 * Memory: per entry kElements = k_rank coefficients at `bits` (+ 4 bytes of scale / zero when
 * quantized), likewise for values; per layer × KV head one CodecGroup, the bases
 * (k_rank + v_rank) × head_dim fp32, charged once while any projected entry lives. Measures
 * (headMeasures, on the decision that fits a head's basis): `k_singular_values` /
 * `v_singular_values` (the whole spectrum the basis was cut from), `k_rank` / `v_rank` ([r]).
 * Positions unchanged (P1). No entry budget: CSKV saves bytes.
 */
import type { EntryCodec, Reencode } from '../cache/decision.ts';
import { BYTES_PER_FLOAT32 } from '../cache/memory.ts';
import { PolicySpecError } from '../errors.ts';
import type { Rope } from '../model/rope.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import type { StageEnv, Transform } from '../pipeline/stages.ts';
import { roundHalf } from '../quant/half.ts';
import { derivedSeed, rightSingularBasis } from '../quant/low-rank.ts';
import { metadataBytes, quantizeBlock, relativeL2 } from '../quant/quantize.ts';
import type { JsonValue } from '../types.ts';
import { enumParam, floatParam, intParam } from './types.ts';

export type CskvKeys = 'pre_rope' | 'post_rope';

export interface CskvOptions {
  kRank: number;
  vRank: number;
  window: number;
  /** 32 = fp32, 16 = fp16, 1–8 = per-token asymmetric quantization of the coefficients */
  bits: number;
  keys: CskvKeys;
  loops: number;
  seed: number;
}

/** One head's bases (rows of fp32 values, r × d) and its group. */
export interface HeadBasis {
  k: Float32Array;
  v: Float32Array;
  group: string;
}

/** A rank parameter: below 1 a fraction of head_dim (at least 1), else an integer ≤ head_dim. */
export function resolveRank(value: number, headDim: number, name: string): number {
  if (value > 0 && value < 1) return Math.max(1, Math.min(headDim, Math.round(value * headDim)));
  if (!Number.isInteger(value) || value < 1) throw new PolicySpecError(`cskv: ${name} must be a fraction in (0, 1) or an integer ≥ 1, got ${value}`);
  return Math.min(headDim, value);
}

/** Coefficients as stored: fp32, fp16, or quantized per token (dequantized). */
function storedCoefficients(c: Float64Array, bits: number): Float32Array {
  if (bits === 32) return Float32Array.from(c);
  if (bits === 16) return Float32Array.from(c, roundHalf);
  return quantizeBlock(c, 1, c.length, { bits, axis: 'token', groupSize: c.length }).dequantized;
}

/** x̂ = Uᵀ·stored(U·x) of one d-vector (U: r × d rows). */
export function projectRow(x: ArrayLike<number>, basis: Float32Array, d: number, bits: number): Float32Array {
  const r = basis.length / d;
  const c = new Float64Array(r);
  for (let j = 0; j < r; j++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += basis[j * d + i] * x[i];
    c[j] = s;
  }
  const stored = storedCoefficients(c, bits);
  const out = new Float32Array(d);
  for (let j = 0; j < r; j++) {
    const cj = stored[j];
    for (let i = 0; i < d; i++) out[i] += cj * basis[j * d + i];
  }
  return out;
}

/** The head's keys as the basis sees them: pre-RoPE (rotated back from each position) or as cached. */
function keysAsFitted(env: StageEnv, layer: number, kvHead: number, rope: Rope | null): Float32Array {
  const keys = Float32Array.from(env.cache.keys(layer, kvHead));
  if (!rope) return keys;
  const d = env.cache.headDim;
  const positions = env.cache.positions(layer, kvHead);
  for (let i = 0; i < positions.length; i++) rope.rotate(keys, -positions[i], i * d, 1);
  return keys;
}

function ropeOf(env: StageEnv, options: CskvOptions): Rope | null {
  if (options.keys === 'post_rope') return null;
  if (!env.rope) throw new PolicySpecError('cskv: keys=pre_rope needs the model’s RoPE (use keys=post_rope outside a session)');
  return env.rope;
}

/** Plain entries just older than the window, back to the first entry under a codec: [start, end). */
export function projectedRange(env: StageEnv, layer: number, kvHead: number, window: number): [number, number] {
  const end = Math.max(0, env.cache.length(layer, kvHead) - window);
  let start = end;
  while (start > 0 && env.cache.codec(layer, kvHead, start - 1) === null) start--;
  return [start, end];
}

export function cskvTransform(options: CskvOptions): Transform & { readonly bases: readonly (HeadBasis | null)[] } {
  let bases: (HeadBasis | null)[] = [];
  /** the state as JSON, made once per change of the bases (never mutated once handed out) */
  let json: JsonValue | null = null;
  const codecOf = (d: number, group: string): EntryCodec => {
    const meta = options.bits <= 8 ? metadataBytes(1) : 0;
    return {
      name: `cskv-k${options.kRank}v${options.vRank}${options.bits < 32 ? `-${options.bits}bit` : ''}`,
      kBits: options.bits,
      vBits: options.bits,
      kElements: options.kRank,
      vElements: options.vRank,
      kMetaBytes: meta,
      vMetaBytes: meta,
      group,
      rank: options.kRank,
    };
  };
  const fit = (env: StageEnv, layer: number, kvHead: number, rope: Rope | null) => {
    const { cache } = env;
    const d = cache.headDim;
    const n = cache.length(layer, kvHead);
    const loops = { loops: options.loops };
    const k = rightSingularBasis(keysAsFitted(env, layer, kvHead, rope), n, d, options.kRank, { ...loops, seed: derivedSeed(options.seed, layer, kvHead, 0) });
    const v = rightSingularBasis(cache.values(layer, kvHead), n, d, options.vRank, { ...loops, seed: derivedSeed(options.seed, layer, kvHead, 1) });
    const basis: HeadBasis = {
      k: Float32Array.from(k.basis),
      v: Float32Array.from(v.basis),
      group: `${env.column('')}L${layer}/kv${kvHead}/basis@${cache.tokenCount}`,
    };
    return { basis, kSpectrum: Array.from(k.spectrum), vSpectrum: Array.from(v.spectrum) };
  };
  return {
    get bases() {
      return bases;
    },
    // in `finish`: the re-encodes name codec groups, which only the decision draft carries
    finish(env, draft) {
      const { cache } = env;
      const d = cache.headDim;
      const H = cache.nKvHeads;
      if (bases.length !== cache.nLayers * H) {
        bases = new Array<HeadBasis | null>(cache.nLayers * H).fill(null);
        json = null;
      }
      const rope = ropeOf(env, options);
      const spectra: { k: number[]; v: number[] }[][] = Array.from({ length: cache.nLayers }, () => Array.from({ length: H }, () => ({ k: [], v: [] })));
      let projected = 0;
      let fitted = 0;
      for (let l = 0; l < cache.nLayers; l++) {
        for (let h = 0; h < H; h++) {
          const [start, end] = projectedRange(env, l, h, options.window);
          if (start === end) continue;
          let basis = bases[l * H + h];
          if (!basis) {
            const made = fit(env, l, h, rope);
            basis = bases[l * H + h] = made.basis;
            json = null;
            spectra[l][h] = { k: made.kSpectrum, v: made.vSpectrum };
            fitted++;
          }
          draft.groups.push({
            id: basis.group,
            kBytes: options.kRank * d * BYTES_PER_FLOAT32,
            vBytes: options.vRank * d * BYTES_PER_FLOAT32,
            label: `CSKV bases (key rank ${options.kRank}, value rank ${options.vRank}, fp32) of layer ${l}, KV head ${h}`,
          });
          const codec = codecOf(d, basis.group);
          const keys = cache.keys(l, h);
          const values = cache.values(l, h);
          const positions = cache.positions(l, h);
          const reencodes: Reencode[] = draft.layers[l][h].reencode;
          for (let i = start; i < end; i++) {
            const key = keys.slice(i * d, (i + 1) * d);
            if (rope) rope.rotate(key, -positions[i]);
            const keyHat = projectRow(key, basis.k, d, options.bits);
            if (rope) rope.rotate(keyHat, positions[i]);
            const valueHat = projectRow(values.subarray(i * d, (i + 1) * d), basis.v, d, options.bits);
            reencodes.push({
              index: i,
              codec,
              keys: keyHat,
              values: valueHat,
              kError: relativeL2(keys.subarray(i * d, (i + 1) * d), keyHat),
              vError: relativeL2(values.subarray(i * d, (i + 1) * d), valueHat),
            });
          }
          projected += end - start;
        }
      }
      if (fitted > 0) {
        draft.headMeasures.k_singular_values = spectra.map((row) => row.map((s) => s.k));
        draft.headMeasures.v_singular_values = spectra.map((row) => row.map((s) => s.v));
        draft.headMeasures.k_rank = spectra.map((row) => row.map((s) => (s.k.length > 0 ? [options.kRank] : [])));
        draft.headMeasures.v_rank = spectra.map((row) => row.map((s) => (s.v.length > 0 ? [options.vRank] : [])));
      }
      if (projected > 0) {
        draft.notes.push(`cskv: ${projected} entries projected to rank k ${options.kRank} / v ${options.vRank}${fitted > 0 ? ` (${fitted} head bases fitted)` : ''}`);
      }
    },
    state: {
      get(): JsonValue {
        // the session saves the state every step (its transaction); the bases change only when fitted
        json ??= { bases: bases.map((b) => (b ? { k: Array.from(b.k), v: Array.from(b.v), group: b.group } : null)) };
        return json;
      },
      set(value) {
        json = null;
        const list = value !== null && typeof value === 'object' && !Array.isArray(value) && Array.isArray(value.bases) ? value.bases : [];
        bases = list.map((b) => {
          if (b === null || typeof b !== 'object' || Array.isArray(b) || !Array.isArray(b.k) || !Array.isArray(b.v) || typeof b.group !== 'string') return null;
          return { k: Float32Array.from(b.k as number[]), v: Float32Array.from(b.v as number[]), group: b.group };
        });
      },
      reset() {
        bases = [];
        json = null;
      },
    },
  };
}

export function cskvOptions(params: Readonly<Record<string, number | string | boolean>>, headDim: number): CskvOptions {
  const bits = intParam(params, 'bits');
  if (!(bits === 32 || bits === 16 || (bits >= 1 && bits <= 8))) throw new PolicySpecError(`cskv: bits must be 32 (fp32), 16 (fp16) or 1–8, got ${bits}`);
  return {
    kRank: resolveRank(floatParam(params, 'k_rank'), headDim, 'k_rank'),
    vRank: resolveRank(floatParam(params, 'v_rank'), headDim, 'v_rank'),
    window: intParam(params, 'window'),
    bits,
    keys: enumParam(params, 'keys') as CskvKeys,
    loops: intParam(params, 'loops'),
    seed: intParam(params, 'seed'),
  };
}

export const cskvPolicy = defineMethod({
  id: 'cskv',
  holdsEveryEntry: 'keeps every entry; saves bytes by a low-rank projection of old entries',
  label: 'CSKV (low-rank channels + exact window)',
  description:
    'Stores old keys and values as coefficients on a per-head low-rank basis (the top singular vectors of the prompt’s keys and values), optionally quantized; the 32 newest entries stay exact. Keeps every entry.',
  paper: {
    short: 'Wang et al., 2024 (CSKV)',
    title: 'CSKV: Training-Efficient Channel Shrinking for KV Cache in Long-Context Scenarios',
    url: 'https://arxiv.org/abs/2409.10593',
    code: 'https://github.com/wln20/CSKV',
  },
  params: [
    { name: 'k_rank', kind: 'float', default: 0.5, min: 0, description: 'key rank: an integer ≤ head_dim, or below 1 a fraction of head_dim' },
    { name: 'v_rank', kind: 'float', default: 0.5, min: 0, description: 'value rank: an integer ≤ head_dim, or below 1 a fraction of head_dim' },
    { name: 'window', kind: 'int', default: 32, min: 0, description: 'newest entries kept exact (a sliding window)' },
    { name: 'bits', kind: 'int', default: 32, min: 1, max: 32, description: 'coefficient storage: 32 = fp32, 16 = fp16, 1–8 = quantized per token' },
    { name: 'keys', kind: 'enum', default: 'pre_rope', choices: ['pre_rope', 'post_rope'], description: 'fit and project keys before RoPE (the reference) or as cached (post-RoPE)' },
    { name: 'loops', kind: 'int', default: 10, min: 1, description: 'power-iteration loops fitting each basis' },
    { name: 'seed', kind: 'int', default: 0, min: 0, description: 'seed of the power iteration’s random start (mixed with layer and head)' },
  ],
  needs: { attention: false, queries: false, calibration: false },
  build(params, context) {
    return { transforms: [cskvTransform(cskvOptions(params, context.dims.headDim))] };
  },
});
