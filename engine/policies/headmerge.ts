/**
 * KV-head compression — Yu et al., 2024, "Effectively Compress KV Heads for LLM"
 * (arXiv:2406.07056). No reference code was read (none public that we found); the paper's text
 * could not be retrieved here either, so what follows is our reading of its abstract and of
 * secondary summaries (ambiguous choices are parameters):
 *
 *  - a group of KV heads is compressed jointly through a low-rank projection found by SVD of the
 *    group's caches on calibration data ("SVD-a"): the heads' vectors of one token concatenated,
 *    x = [x_0; x_1] (2·head_dim here: our layers have 2 KV heads, one group per layer), projected
 *    to r coefficients. r = head_dim is the paper's "2 heads → 1" (half the KV heads); r = head_dim/2
 *    three-quarters. We use the PCA of x (the calibration's joint bases, docs/calibration.md), so
 *    the cache stores c = (x − μ)U_r and every head reconstructs its slice of μ + U_r c;
 *  - RoPE: the paper fuses the projection into W_k, i.e. it acts on keys before the rotation,
 *    and adds "specialized strategies for key caches with RoPE". Our cache holds post-RoPE keys
 *    with their positions, so `rope=pre` (default) rotates each head's key back from its
 *    position (model/rope.ts), projects with the basis of pre-RoPE keys, reconstructs and rotates
 *    the reconstruction to its position again — the exact counterpart of a projection fused
 *    before RoPE, at any rank (at full rank the key comes back unchanged). `rope=post` projects
 *    the cached keys as they are with the basis of post-RoPE keys (as MatryoshkaKV does per head),
 *    the ablation. On the shipped model the pre-RoPE joint keys are much lower-rank (90 % of the
 *    variance in 15–30 of 64 components against 26–42 post-RoPE; `kvscope calibrate` prints it);
 *  - no LoRA fine-tuning (the paper recovers accuracy by training; kvscope runs the frozen model);
 *  - a token is compressed jointly only when every KV head of the layer holds it as a plain,
 *    single-token entry (count 1) older than the `recent` window; tokens some head evicted or
 *    merged (ragged heads after eviction in a composition) stay fp32 in the heads that hold them;
 *  - memory: the r_K + r_V float32 coefficients of a token are split evenly over its entries
 *    (head h's entry counts ⌊r/H⌋, the first r mod H heads one more), so the layer's entries sum
 *    to r; the projection U_r and μ (H·d·r + H·d floats per side) are one CodecGroup per layer.
 *    If a later member of a composition evicts one head's entry of a jointly encoded token, its
 *    share leaves with it although the survivor still needs all r coefficients (an undercount we
 *    accept: within one method the heads always hold the same encoded tokens).
 *
 * headMeasures (after prefill and on attach: they are constant, and the views take the latest
 * event that has them): `k_singular_values` / `v_singular_values` — the joint basis' calibration
 * spectrum √λ (H·d values), on every KV head of the layer — and `k_rank` / `v_rank` ([r]).
 */
import type { CodecGroup, EntryCodec, Reencode } from '../cache/decision.ts';
import { BYTES_PER_FLOAT32 } from '../cache/memory.ts';
import type { PolicyCache } from '../cache/view.ts';
import { basisOf, singularValues, type ProjectionCalibration } from '../calibration/projections.ts';
import type { Rope } from '../model/rope.ts';
import type { ReadonlyFloat32Array } from '../types.ts';
import { encodableEntries, encodeRow, namesGroup, projectionsFor, rankDescription, resolveRank } from '../pipeline/pca-codec.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import type { Transform } from '../pipeline/stages.ts';
import type { PcaBasis } from '../quant/pca.ts';
import { relativeL2 } from '../quant/quantize.ts';
import { enumParam, floatParam, intParam } from './types.ts';

export type RopeMode = 'pre' | 'post';

export interface HeadMergeOptions {
  kRank: number;
  vRank: number;
  rope: RopeMode;
  recent: number;
}

/** The codec group of one layer's projection. */
export function headmergeGroupId(prefix: string, layer: number, rK: number, rV: number, rope: RopeMode): string {
  return `${prefix}L${layer}/k${rK}v${rV}/${rope}`;
}

/** Coefficients head `h` of `heads` is charged for out of `r` (even split, the remainder to the first heads). */
export function shareOf(r: number, h: number, heads: number): number {
  return Math.floor(r / heads) + (h < r % heads ? 1 : 0);
}

/**
 * Tokens every head of `layer` holds as an encodable single-token entry: per token the entry
 * index in each head ([token][kvHead]), in head 0's order.
 */
export function jointTokens(cache: PolicyCache, layer: number, before: number): number[][] {
  const H = cache.nKvHeads;
  const heads = Array.from({ length: H }, (_, h) => ({ tokens: cache.tokens(layer, h), counts: cache.counts(layer, h), entries: encodableEntries(cache, layer, h, before) }));
  const single = (h: number, i: number) => heads[h].counts[i] === 1;
  // the common case (every head holds the same tokens): candidates line up one to one
  const first = heads[0];
  const aligned = heads.every(({ tokens, entries }) => entries.length === first.entries.length && entries.every((i, k) => tokens[i] === first.tokens[first.entries[k]]));
  if (aligned) {
    return first.entries.flatMap((_, k) => (heads.every((head, h) => single(h, head.entries[k])) ? [heads.map((head) => head.entries[k])] : []));
  }
  const lookup = heads.map(({ tokens, entries }, h) => new Map(entries.filter((i) => single(h, i)).map((i) => [tokens[i], i])));
  const out: number[][] = [];
  for (const [token, i0] of lookup[0]) {
    const row = [i0];
    for (let h = 1; h < H && row.length === h; h++) {
      const i = lookup[h].get(token);
      if (i !== undefined) row.push(i);
    }
    if (row.length === H) out.push(row);
  }
  return out;
}

interface Side {
  basis: PcaBasis;
  rank: number;
}

/** encodeJoint's buffers (single-threaded), sized to the last joint width. */
let joined = { x: new Float32Array(0), out: new Float32Array(0), c: new Float64Array(0) };

/**
 * One token of a layer through the joint codec: its H keys or values `rows[h]` (head_dim floats
 * each) concatenated — keys first rotated back from `positions[h]` when `rope` is given —, the
 * r coefficients rounded to float32, the reconstruction split into H rows and, for keys, rotated
 * to their positions again. At rank H·head_dim it returns the rows (to float rounding).
 */
export function encodeJoint(basis: PcaBasis, rank: number, rows: readonly ArrayLike<number>[], rope: Rope | null, positions: readonly number[]): Float32Array[] {
  const H = rows.length;
  const d = basis.dim / H;
  if (joined.x.length !== basis.dim) joined = { x: new Float32Array(basis.dim), out: new Float32Array(basis.dim), c: new Float64Array(basis.dim) };
  const { x, out, c } = joined;
  rows.forEach((row, h) => {
    for (let k = 0; k < d; k++) x[h * d + k] = row[k];
    rope?.rotate(x, -positions[h], h * d);
  });
  encodeRow(basis, rank, x, 0, c, out);
  return rows.map((_, h) => {
    const row = out.slice(h * d, (h + 1) * d);
    rope?.rotate(row, positions[h]);
    return row;
  });
}

/** One layer's constant parts: the projected sides (null = exact), its group, each head's entry codec. */
interface LayerPlan {
  k: Side | null;
  v: Side | null;
  group: CodecGroup;
  codecs: EntryCodec[];
}

/**
 * The transform: per layer, encodes the tokens all heads hold jointly. The per-head measures
 * (constant) go on the decisions after prefill and on attach, where the views find them.
 */
export function headmergeTransform(p: ProjectionCalibration, options: HeadMergeOptions, rope: Rope | null): Transform {
  const joint = p.joint!;
  const d = p.headDim;
  const keyBases = options.rope === 'pre' ? joint.keys : joint.keysPost;
  if (options.rope === 'pre' && !rope) throw new RangeError('headmerge: rope=pre needs the model’s RoPE');
  const keyRope = options.rope === 'pre' ? rope : null;
  const W = keyBases[0].mean.length;
  const H = W / d;
  const perHead = <T>(f: (h: number) => T) => Array.from({ length: H }, (_, h) => f(h));
  const measures = {
    k_singular_values: keyBases.map((b) => perHead(() => singularValues(b))),
    v_singular_values: joint.values.map((b) => perHead(() => singularValues(b))),
    k_rank: keyBases.map(() => perHead(() => [options.kRank])),
    v_rank: joint.values.map(() => perHead(() => [options.vRank])),
  };
  const { kRank, vRank } = options;
  const layerPlan = (prefix: string, l: number): LayerPlan | null => {
    const k = kRank < W ? { basis: basisOf(keyBases[l]), rank: kRank } : null;
    const v = vRank < W ? { basis: basisOf(joint.values[l]), rank: vRank } : null;
    if (!k && !v) return null;
    const id = headmergeGroupId(prefix, l, kRank, vRank, options.rope);
    const group: CodecGroup = {
      id,
      kBytes: k ? (W * kRank + W) * BYTES_PER_FLOAT32 : 0,
      vBytes: v ? (W * vRank + W) * BYTES_PER_FLOAT32 : 0,
      label: `joint projection of layer ${l}'s ${H} KV heads (K rank ${kRank}, V rank ${vRank} of ${W}, keys ${options.rope}-RoPE)`,
    };
    const codecs = perHead((h): EntryCodec => ({
      name: 'headmerge',
      kBits: 32,
      vBits: 32,
      kElements: k ? shareOf(kRank, h, H) : d,
      vElements: v ? shareOf(vRank, h, H) : d,
      kMetaBytes: 0,
      vMetaBytes: 0,
      group: id,
      rank: kRank,
    }));
    return { k, v, group, codecs };
  };
  let plans: { prefix: string; layers: (LayerPlan | null)[] } | null = null;
  return {
    finish(env, draft) {
      const { cache } = env;
      const prefix = env.column('');
      if (plans?.prefix !== prefix) plans = { prefix, layers: keyBases.map((_, l) => layerPlan(prefix, l)) };
      const before = cache.tokenCount - options.recent;
      let encoded = 0;
      for (let l = 0; l < cache.nLayers; l++) {
        const plan = plans.layers[l];
        if (!plan) continue;
        const tokens = jointTokens(cache, l, before);
        if (tokens.length === 0) continue;
        if (!namesGroup(cache, l, 0, tokens[0][0] - 1, plan.group.id)) draft.groups.push(plan.group);
        const keys = perHead((h) => cache.keys(l, h));
        const values = perHead((h) => cache.values(l, h));
        const positions = perHead((h) => cache.positions(l, h));
        const rowsOf = (block: readonly ReadonlyFloat32Array[], row: number[]) => row.map((i, h) => block[h].subarray(i * d, (i + 1) * d));
        for (const row of tokens) {
          const res = row.map((i, h): Reencode => ({ index: i, codec: plan.codecs[h] }));
          if (plan.k) {
            const exact = rowsOf(keys, row);
            encodeJoint(plan.k.basis, kRank, exact, keyRope, row.map((i, h) => positions[h][i])).forEach((key, h) => {
              res[h].keys = key;
              res[h].kError = relativeL2(exact[h], key, 0, d, 0);
            });
          }
          if (plan.v) {
            const exact = rowsOf(values, row);
            encodeJoint(plan.v.basis, vRank, exact, null, []).forEach((value, h) => {
              res[h].values = value;
              res[h].vError = relativeL2(exact[h], value, 0, d, 0);
            });
          }
          res.forEach((re, h) => draft.layers[l][h].reencode.push(re));
          encoded++;
        }
      }
      if (env.phase === 'step') return;
      Object.assign(draft.headMeasures, measures);
      if (encoded > 0) draft.notes.push(`headmerge: ${encoded} token × layer pairs of KV heads encoded jointly`);
    },
  };
}

export const headmergePolicy = defineMethod({
  id: 'headmerge',
  holdsEveryEntry: "keeps every entry; saves bytes by compressing a layer's KV heads jointly",
  label: 'KV-head compression (joint low rank)',
  description:
    "Stores a layer's KV heads of one token jointly as the coefficients of a calibrated low-rank projection of their concatenation (keys un-rotated first, re-rotated after); every head reconstructs its part. Default: 2 heads → 1. Keeps every entry (needs calibration).",
  paper: {
    short: 'Yu et al., 2024 (compress KV heads)',
    title: 'Effectively Compress KV Heads for LLM',
    url: 'https://arxiv.org/abs/2406.07056',
  },
  params: [
    { name: 'k_rank', kind: 'float', default: 0.5, min: 1e-6, description: rankDescription('key coefficients per token and layer', 'the joint width (KV heads × head_dim)') },
    { name: 'v_rank', kind: 'float', default: 0.5, min: 1e-6, description: rankDescription('value coefficients per token and layer', 'the joint width (KV heads × head_dim)') },
    {
      name: 'rope',
      kind: 'enum',
      default: 'pre',
      choices: ['pre', 'post'],
      description: 'pre: keys rotated back from their position, projected, re-rotated (a projection before RoPE, as fused into W_k); post: cached post-RoPE keys projected as they are',
    },
    { name: 'recent', kind: 'int', default: 0, min: 0, description: 'newest tokens kept fp32, encoded once they leave the window' },
  ],
  needs: { attention: false, queries: false, calibration: true },
  build(params, context) {
    const p = projectionsFor(context, 'headmerge', true);
    const width = context.dims.nKvHeads * context.dims.headDim;
    const options: HeadMergeOptions = {
      kRank: resolveRank(floatParam(params, 'k_rank'), width),
      vRank: resolveRank(floatParam(params, 'v_rank'), width),
      rope: enumParam(params, 'rope') as RopeMode,
      recent: intParam(params, 'recent'),
    };
    return { transforms: [headmergeTransform(p, options, context.rope)] };
  },
});
