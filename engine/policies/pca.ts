/**
 * PCA low rank — the training-free baseline of MatryoshkaKV (Lin et al., 2024, "MatryoshkaKV:
 * Adaptive KV Compression via Trainable Orthogonal Projection", arXiv:2410.14731). Reference code
 * read to understand: The-kamisato/MatryoshkaKV-cache, `modeling_pcallama_new_ver.py`
 * (PcaLlamaAttention: per layer × head mean and descending eigenvectors of calibration keys /
 * values; keys projected *after* RoPE as (k − μ)U[:, :r], queries by U[:, :r], attention adds
 * q·μ_k; values (v − μ)U[:, :r], the output mapped back by U_rᵀ plus μ_v) and `PcaCache_new_ver.py`
 * (the cache stores only the first r coefficients).
 *
 * Our reading, for a cache the graph reads as full vectors:
 *  - per layer × KV head the basis of the calibration's `projections` section (docs/calibration.md:
 *    post-RoPE keys and values of held-out text, computed with the engine); the cache stores the
 *    r coefficients c = (x − μ)U_r (float32) and the graph sees x̂ = μ + U_r c — the same scores
 *    as the reference's q·U_r c + q·μ, and the same value output;
 *  - ranks per head: `k_rank` / `v_rank` (a count, or a fraction of head_dim), or `variance` > 0:
 *    each head's smallest rank explaining that share of its calibration variance (MatryoshkaKV's
 *    point is heterogeneous ranks per head; the paper trains the bases and searches the ranks —
 *    training is out of scope, the explained-variance rule is our training-free stand-in). A side
 *    at rank head_dim stays exact (fp32, no basis charged): storing d coefficients plus a basis
 *    would only cost more;
 *  - `recent` (default 0: MatryoshkaKV compresses every token): the newest tokens stay fp32 and
 *    are encoded once they leave the window. An entry is encoded once, when it is plain (no codec
 *    — so also not one another member of a composition encoded) and old enough; a decision looks
 *    back from the newest entry to the first one with a codec (pipeline/pca-codec.ts), so a plain
 *    entry another member merges into the middle of a head later stays fp32;
 *  - memory: per entry r_K + r_V float32 coefficients (EntryCodec kElements / vElements = rank);
 *    per layer × KV head one CodecGroup with U_r and μ (d·r + d floats per side), charged once
 *    while any entry uses it (its id names the ranks, so a policy with other ranks has its own);
 *    a decision declares the group unless the entry just before its first new one already names
 *    it (then the store has it: a group lives while a member does), so a step adds no group and
 *    the store has no reason to look for dead ones.
 *
 * headMeasures (after prefill and on attach: they are constant, and the views take the latest
 * event that has them): `k_singular_values` / `v_singular_values` — the calibration spectrum √λ
 * per head (d values) — and `k_rank` / `v_rank` ([r]).
 */
import type { CodecGroup, EntryCodec, Reencode } from '../cache/decision.ts';
import { BYTES_PER_FLOAT32 } from '../cache/memory.ts';
import { basisOf, singularValues, type ProjectionCalibration } from '../calibration/projections.ts';
import { encodableEntries, encodeRow, namesGroup, projectionsFor, rankDescription, resolveRank } from '../pipeline/pca-codec.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import type { Transform } from '../pipeline/stages.ts';
import { rankForVariance, type PcaBasis } from '../quant/pca.ts';
import { relativeL2 } from '../quant/quantize.ts';
import { floatParam, intParam } from './types.ts';

export interface PcaOptions {
  /** [layer][kvHead] ranks; head_dim = that side exact */
  kRanks: number[][];
  vRanks: number[][];
  recent: number;
}

/** Per-head ranks from the parameters: fixed, or by explained variance when `variance` > 0. */
export function pcaRanks(p: ProjectionCalibration, kRank: number, vRank: number, variance: number): { kRanks: number[][]; vRanks: number[][] } {
  const d = p.headDim;
  const ranks = (side: 'keys' | 'values', fixed: number) =>
    p[side].map((row) => row.map((b) => (variance > 0 ? rankForVariance(b.eigenvalues, variance) : resolveRank(fixed, d))));
  return { kRanks: ranks('keys', kRank), vRanks: ranks('values', vRank) };
}

/** The codec group of one layer × KV head at ranks (rK, rV). */
export function pcaGroupId(prefix: string, layer: number, kvHead: number, rK: number, rV: number): string {
  return `${prefix}L${layer}/kv${kvHead}/k${rK}v${rV}`;
}

interface Side {
  basis: PcaBasis;
  rank: number;
}

/** One head's constant parts: the sides it projects (null = exact), its group and entry codec. */
interface HeadPlan {
  k: Side | null;
  v: Side | null;
  group: CodecGroup;
  codec: EntryCodec;
}

function headPlan(p: ProjectionCalibration, prefix: string, l: number, h: number, rK: number, rV: number): HeadPlan | null {
  const d = p.headDim;
  const k = rK < d ? { basis: basisOf(p.keys[l][h]), rank: rK } : null;
  const v = rV < d ? { basis: basisOf(p.values[l][h]), rank: rV } : null;
  if (!k && !v) return null;
  const id = pcaGroupId(prefix, l, h, rK, rV);
  return {
    k,
    v,
    group: {
      id,
      kBytes: k ? (d * rK + d) * BYTES_PER_FLOAT32 : 0,
      vBytes: v ? (d * rV + d) * BYTES_PER_FLOAT32 : 0,
      label: `PCA basis and mean of layer ${l}, KV head ${h} (K rank ${rK}, V rank ${rV} of ${d})`,
    },
    codec: { name: 'pca', kBits: 32, vBits: 32, kElements: k ? rK : d, vElements: v ? rV : d, kMetaBytes: 0, vMetaBytes: 0, group: id, rank: rK },
  };
}

/** One entry's re-encode: the reconstruction of each projected side and its error. */
function encodeEntry(plan: HeadPlan, keys: ArrayLike<number>, values: ArrayLike<number>, i: number, d: number, scratch: Float64Array): Reencode {
  const re: Reencode = { index: i, codec: plan.codec };
  if (plan.k) {
    re.keys = new Float32Array(d);
    encodeRow(plan.k.basis, plan.k.rank, keys, i * d, scratch, re.keys);
    re.kError = relativeL2(keys, re.keys, i * d, d, 0);
  }
  if (plan.v) {
    re.values = new Float32Array(d);
    encodeRow(plan.v.basis, plan.v.rank, values, i * d, scratch, re.values);
    re.vError = relativeL2(values, re.values, i * d, d, 0);
  }
  return re;
}

/**
 * The transform: encodes every plain entry older than the window, head by head. The per-head
 * measures (constant) go on the decisions after prefill and on attach, where the views find them.
 */
export function pcaTransform(p: ProjectionCalibration, options: PcaOptions): Transform {
  const d = p.headDim;
  const measures = {
    k_singular_values: p.keys.map((row) => row.map(singularValues)),
    v_singular_values: p.values.map((row) => row.map(singularValues)),
    k_rank: options.kRanks.map((row) => row.map((r) => [r])),
    v_rank: options.vRanks.map((row) => row.map((r) => [r])),
  };
  const scratch = new Float64Array(d);
  let plans: { prefix: string; heads: (HeadPlan | null)[][] } | null = null;
  return {
    finish(env, draft) {
      const { cache } = env;
      const prefix = env.column('');
      if (plans?.prefix !== prefix) {
        plans = { prefix, heads: p.keys.map((row, l) => row.map((_, h) => headPlan(p, prefix, l, h, options.kRanks[l][h], options.vRanks[l][h]))) };
      }
      const before = cache.tokenCount - options.recent;
      let encoded = 0;
      for (let l = 0; l < cache.nLayers; l++) {
        for (let h = 0; h < cache.nKvHeads; h++) {
          const plan = plans.heads[l][h];
          if (!plan) continue;
          const entries = encodableEntries(cache, l, h, before);
          if (entries.length === 0) continue;
          if (!namesGroup(cache, l, h, entries[0] - 1, plan.group.id)) draft.groups.push(plan.group);
          const keys = cache.keys(l, h);
          const values = cache.values(l, h);
          const head = draft.layers[l][h];
          for (const i of entries) head.reencode.push(encodeEntry(plan, keys, values, i, d, scratch));
          encoded += entries.length;
        }
      }
      if (env.phase !== 'step') Object.assign(draft.headMeasures, measures);
      if (encoded > 0 && env.phase !== 'step') draft.notes.push(`pca: ${encoded} entries projected onto their head's PCA basis`);
    },
  };
}

export const pcaPolicy = defineMethod({
  id: 'pca',
  holdsEveryEntry: 'keeps every entry; saves bytes by projecting onto calibrated PCA bases',
  label: 'PCA low rank (MatryoshkaKV)',
  description:
    'Stores each key and value as its coefficients on a calibrated PCA basis of its head (keys post-RoPE); the graph sees the reconstruction μ + U_r c. Ranks per head fixed or by explained variance. Keeps every entry (needs calibration).',
  paper: {
    short: 'Lin et al., 2024 (MatryoshkaKV, training-free PCA)',
    title: 'MatryoshkaKV: Adaptive KV Compression via Trainable Orthogonal Projection',
    url: 'https://arxiv.org/abs/2410.14731',
    code: 'https://github.com/The-kamisato/MatryoshkaKV-cache',
  },
  params: [
    { name: 'k_rank', kind: 'float', default: 0.5, min: 1e-6, description: rankDescription('key coefficients per entry', 'head_dim') },
    { name: 'v_rank', kind: 'float', default: 0.5, min: 1e-6, description: rankDescription('value coefficients per entry', 'head_dim') },
    { name: 'variance', kind: 'float', default: 0, min: 0, max: 1, description: 'if > 0: each head’s K and V rank is the smallest explaining this share of its calibration variance (overrides k_rank / v_rank)' },
    { name: 'recent', kind: 'int', default: 0, min: 0, description: 'newest tokens kept fp32, encoded once they leave the window' },
  ],
  needs: { attention: false, queries: false, calibration: true },
  build(params, context) {
    const p = projectionsFor(context, 'pca', false);
    const ranks = pcaRanks(p, floatParam(params, 'k_rank'), floatParam(params, 'v_rank'), floatParam(params, 'variance'));
    return { transforms: [pcaTransform(p, { ...ranks, recent: intParam(params, 'recent') })] };
  },
});
