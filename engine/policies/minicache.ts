/**
 * MiniCache — Liu et al., 2024, "MiniCache: KV Cache Compression in Depth Dimension for Large
 * Language Models" (NeurIPS 2024, https://arxiv.org/abs/2405.14490). No public reference code was
 * read (policy card ⚠, paper only); what follows is our reading, ambiguous choices as parameters.
 *
 * Cross-layer merging. From layer s = `start` up (default ⌊L/2⌋: `start` < 1 is a fraction of
 * the depth, ≥ 1 a layer index), adjacent layers are paired (s, s+1), (s+2, s+3), … (a last layer
 * without a partner stays as it is). For each pair (l, l+1), KV head and token that both layers
 * hold as a plain single-token entry (count 1, one origin token, no codec yet — so only tokens an
 * earlier eviction left in both layers are paired), K and V are merged separately, each by its own
 * SLERP (pipeline/slerp.ts), u = x/‖x‖, Ω = arccos(u^l·u^{l+1}):
 *
 *   e = [sin((1−t)Ω)·u^l + sin(tΩ)·u^{l+1}] / sin Ω        (t = `t`, 0.6: nearer the deeper layer)
 *
 * The cache stores e once for the pair (a CodecGroup per pair × KV head × token: d fp32 values for
 * K and d for V, charged once while either layer's entry lives, gone with the last) plus each
 * layer's own norms (its entry's codec metadata: 4 bytes for ‖k‖, 4 for ‖v‖). The graph sees
 * ‖x‖·e in each layer: each of the two entries is re-encoded (Reencode) with its restored key and
 * value, the restoration computed from the stored float32 norm and direction.
 *
 * Token retention: per pair × KV head and decision, the paired states with the largest angular
 * distance Ω/π stay unmerged in both layers (exact fp32). `retain` = γ (0.05);
 * `retain_rule=share` (default): the round(γ·m) most distant of the m paired states (ties → the
 * older token); `range`: those with distance ≥ d_max − γ·(d_max − d_min), our reading of the
 * paper's threshold between the pair's smallest and largest distance (γ = 0: none).
 * `retain_by=separate` (default): K and V each retain their own most distant states (a token's
 * key may stay exact while its value is merged); `joint`: a token stays whole, ranked by the
 * larger of its K and V distances.
 *
 * When it acts: after prefill (and when attached mid-run), every paired token fed so far; during
 * decoding, tokens are merged in blocks once they are `recent` (16) tokens old: when at least
 * `block` (16) tokens have left the recent window since the last merge, those tokens are merged
 * (a step that does not merge costs O(1); a merging step touches only the block's tokens). A
 * token is considered once: merged or retained, it is not looked at again.
 *
 * No entry budget: MiniCache saves bytes, not entries (every head keeps all its entries), so the
 * method has no BudgetRule and `kvscope eval` runs it once, as given.
 *
 * Measures per layer on every decision that merges (Decision.measures, NaN where none), over the
 * tokens the decision considered (the whole prompt at prefill, the block while decoding — keys
 * already merged would only compare a direction with itself):
 *   layer_similarity   mean cosine between layer l's and layer l−1's keys over the tokens both
 *                      hold as plain entries, averaged over KV heads (NaN at layer 0)
 *   pair_partner       the layer each layer shares directions with (NaN if none)
 *   retained_fraction  share of paired K/V states kept unmerged (NaN for unpaired layers)
 * P1: keys are post-RoPE at the same position in both layers; positions unchanged.
 */
import type { CodecGroup, EntryCodec, Reencode } from '../cache/decision.ts';
import { BYTES_PER_FLOAT32 } from '../cache/memory.ts';
import { matchTokens, meanCosine, minicachePairs, retainedSet, side, startLayerOf, type RetainRule, type Side, type TokenMatch } from '../pipeline/layer-pairs.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import { angleOf, relativeError, restoreRow, slerpRows } from '../pipeline/slerp.ts';
import type { DecisionDraft, StageEnv, Transform } from '../pipeline/stages.ts';
import type { JsonValue } from '../types.ts';
import { enumParam, floatParam, intParam } from './types.ts';

export type RetainBy = 'separate' | 'joint';

export interface MiniCacheOptions {
  /** SLERP interpolation t ∈ [0, 1] (0: the lower layer's direction, 1: the upper's) */
  t: number;
  /** first merged layer (already resolved against the depth) */
  startLayer: number;
  /** retention γ ∈ [0, 1] */
  retain: number;
  retainRule: RetainRule;
  retainBy: RetainBy;
  /** decoding: the newest tokens not merged yet */
  recent: number;
  /** decoding: merge once this many tokens have left the recent window */
  block: number;
}

/** What one decision merged, per layer pair (for the note and tests). */
export interface PairOutcome {
  layers: [number, number];
  /** paired tokens, summed over KV heads */
  paired: number;
  /** K states and V states kept unmerged, summed over KV heads */
  retainedK: number;
  retainedV: number;
}

/** Per (pair, KV head, token): the shared direction's codec group. */
export function minicacheGroupId(prefix: string, lower: number, upper: number, kvHead: number, token: number): string {
  return `${prefix}L${lower}-${upper}/kv${kvHead}/t${token}`;
}

function entryCodec(mergeK: boolean, mergeV: boolean, d: number, group: string): EntryCodec {
  return {
    name: mergeK && mergeV ? 'minicache' : mergeK ? 'minicache-k' : 'minicache-v',
    kBits: 32,
    vBits: 32,
    // a merged state stores no elements of its own (the direction is the group's) but its norm
    kElements: mergeK ? 0 : d,
    vElements: mergeV ? 0 : d,
    kMetaBytes: mergeK ? BYTES_PER_FLOAT32 : 0,
    vMetaBytes: mergeV ? BYTES_PER_FLOAT32 : 0,
    group,
  };
}

/**
 * Merges one pair × KV head: the retained sets, then per merged token the group, the two
 * re-encodes (restored K and/or V) pushed to the drafts of both layers.
 */
function mergeHead(
  env: StageEnv,
  draft: DecisionDraft,
  options: MiniCacheOptions,
  lower: number,
  upper: number,
  kvHead: number,
  match: TokenMatch,
  keys: Side,
  outcome: PairOutcome,
): void {
  const { cache } = env;
  const d = cache.headDim;
  const m = match.a.length;
  const kA = cache.keys(lower, kvHead);
  const kB = cache.keys(upper, kvHead);
  const vA = cache.values(lower, kvHead);
  const vB = cache.values(upper, kvHead);
  const values = side(vA, vB, match, d);
  let retainK: Uint8Array;
  let retainV: Uint8Array;
  if (options.retainBy === 'joint') {
    const joint = keys.distance.map((x, k) => Math.max(x, values.distance[k]));
    retainK = retainV = retainedSet(joint, options.retain, options.retainRule);
  } else {
    retainK = retainedSet(keys.distance, options.retain, options.retainRule);
    retainV = retainedSet(values.distance, options.retain, options.retainRule);
  }
  outcome.paired += m;
  const headA = draft.layers[lower][kvHead];
  const headB = draft.layers[upper][kvHead];
  const direction = new Float32Array(d);
  for (let k = 0; k < m; k++) {
    const mergeK = retainK[k] === 0;
    const mergeV = retainV[k] === 0;
    if (!mergeK) outcome.retainedK++;
    if (!mergeV) outcome.retainedV++;
    if (!mergeK && !mergeV) continue;
    const ia = match.a[k];
    const ib = match.b[k];
    const id = minicacheGroupId(env.column(''), lower, upper, kvHead, match.token[k]);
    const group: CodecGroup = {
      id,
      kBytes: mergeK ? d * BYTES_PER_FLOAT32 : 0,
      vBytes: mergeV ? d * BYTES_PER_FLOAT32 : 0,
      label: `SLERP direction (${mergeK && mergeV ? 'K, V' : mergeK ? 'K' : 'V'}) of token ${match.token[k]}, layers ${lower}–${upper}, KV head ${kvHead}`,
    };
    draft.groups.push(group);
    const codec = entryCodec(mergeK, mergeV, d, id);
    const reA: Reencode = { index: ia, codec };
    const reB: Reencode = { index: ib, codec };
    const pieces: [boolean, ArrayLike<number>, ArrayLike<number>, Side, 'keys' | 'values', 'kError' | 'vError'][] = [
      [mergeK, kA, kB, keys, 'keys', 'kError'],
      [mergeV, vA, vB, values, 'values', 'vError'],
    ];
    for (const [merge, rowsA, rowsB, s, field, error] of pieces) {
      if (!merge) continue;
      slerpRows(rowsA, ia, s.normA[k], rowsB, ib, s.normB[k], angleOf(s.cos[k]), d, options.t, direction);
      const restoredA = new Float32Array(d);
      const restoredB = new Float32Array(d);
      restoreRow(direction, 0, s.normA[k], d, restoredA);
      restoreRow(direction, 0, s.normB[k], d, restoredB);
      reA[field] = restoredA;
      reB[field] = restoredB;
      reA[error] = relativeError(rowsA, ia * d, restoredA, 0, d);
      reB[error] = relativeError(rowsB, ib * d, restoredB, 0, d);
    }
    headA.reencode.push(reA);
    headB.reencode.push(reB);
  }
}

/** The token range a decision considers, or null when it does nothing (and then moves the frontier). */
function decisionRange(env: StageEnv, frontier: number, options: MiniCacheOptions): [number, number] | null {
  const n = env.cache.tokenCount;
  const hi = env.phase === 'step' ? n - options.recent : n;
  if (env.phase === 'step' && hi - frontier < options.block) return null;
  return hi > frontier ? [frontier, hi] : null;
}

/** MiniCache's transform: pairs, merges and measures in `finish` (it needs every layer's draft). */
export function minicacheTransform(options: MiniCacheOptions): Transform & { readonly frontier: number; readonly lastOutcome: PairOutcome[] } {
  /** tokens below this index have been considered (merged or retained) */
  let frontier = 0;
  let lastOutcome: PairOutcome[] = [];
  return {
    get frontier() {
      return frontier;
    },
    get lastOutcome() {
      return lastOutcome;
    },
    finish(env, draft) {
      const range = decisionRange(env, frontier, options);
      if (!range) return;
      const [lo, hi] = range;
      frontier = hi;
      const { cache } = env;
      const L = cache.nLayers;
      const H = cache.nKvHeads;
      const d = cache.headDim;
      const pairs = minicachePairs(L, options.startLayer);
      const partner = new Array<number>(L).fill(NaN);
      for (const [a, b] of pairs) {
        partner[a] = b;
        partner[b] = a;
      }
      const similarity = new Array<number>(L).fill(NaN);
      const retained = new Array<number>(L).fill(NaN);
      const outcomes: PairOutcome[] = [];
      for (let l = 1; l < L; l++) {
        const merges = partner[l - 1] === l;
        const outcome: PairOutcome = { layers: [l - 1, l], paired: 0, retainedK: 0, retainedV: 0 };
        let sum = 0;
        let heads = 0;
        for (let h = 0; h < H; h++) {
          const match = matchTokens(cache, l - 1, l, h, lo, hi);
          const keys = side(cache.keys(l - 1, h), cache.keys(l, h), match, d);
          const mean = meanCosine(keys);
          if (!Number.isNaN(mean)) {
            sum += mean;
            heads++;
          }
          if (merges) mergeHead(env, draft, options, l - 1, l, h, match, keys, outcome);
        }
        similarity[l] = heads > 0 ? sum / heads : NaN;
        if (merges) {
          outcomes.push(outcome);
          const share = outcome.paired > 0 ? (outcome.retainedK + outcome.retainedV) / (2 * outcome.paired) : NaN;
          retained[l - 1] = share;
          retained[l] = share;
        }
      }
      lastOutcome = outcomes;
      draft.measures.layer_similarity = similarity;
      draft.measures.pair_partner = partner;
      draft.measures.retained_fraction = retained;
      const paired = outcomes.reduce((s, o) => s + o.paired, 0);
      if (paired > 0) {
        const kept = outcomes.reduce((s, o) => s + o.retainedK + o.retainedV, 0);
        draft.notes.push(
          `minicache: tokens ${lo}–${hi - 1}: ${paired} token pairs across layers ${outcomes.map((o) => o.layers.join('–')).join(', ')}, ${2 * paired - kept} K/V states share a direction, ${kept} retained`,
        );
      }
    },
    state: {
      get: (): JsonValue => ({ frontier }),
      set(value) {
        const object = value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
        frontier = typeof object.frontier === 'number' ? object.frontier : 0;
        lastOutcome = [];
      },
      reset() {
        frontier = 0;
        lastOutcome = [];
      },
    },
  };
}

export const minicachePolicy = defineMethod({
  id: 'minicache',
  holdsEveryEntry: 'keeps every entry; saves bytes by sharing directions across layer pairs',
  label: 'MiniCache (cross-layer SLERP)',
  description:
    'From the middle layer up, pairs adjacent layers and stores one SLERP-interpolated direction per token for both, plus each layer’s norms; the most distinct tokens stay unmerged. Saves bytes, keeps every entry.',
  paper: {
    short: 'Liu et al., 2024 (MiniCache, NeurIPS)',
    title: 'MiniCache: KV Cache Compression in Depth Dimension for Large Language Models',
    url: 'https://arxiv.org/abs/2405.14490',
  },
  params: [
    { name: 't', kind: 'float', default: 0.6, min: 0, max: 1, description: 'SLERP interpolation: 0 = the lower layer’s direction, 1 = the upper’s' },
    { name: 'start', kind: 'float', default: 0.5, min: 0, description: 'first merged layer: a fraction of the depth if < 1 (⌊start·L⌋), else the layer index' },
    { name: 'retain', kind: 'float', default: 0.05, min: 0, max: 1, description: 'retention γ: share (or distance range) of the most distinct paired states kept unmerged' },
    {
      name: 'retain_rule',
      kind: 'enum',
      default: 'share',
      choices: ['share', 'range'],
      description: 'share: the round(γ·m) most distant of m paired states; range: distance ≥ d_max − γ·(d_max − d_min)',
    },
    {
      name: 'retain_by',
      kind: 'enum',
      default: 'separate',
      choices: ['separate', 'joint'],
      description: 'separate: K and V each keep their own most distant states; joint: a token stays whole, by the larger distance',
    },
    { name: 'recent', kind: 'int', default: 16, min: 0, description: 'decoding: the newest tokens not merged yet' },
    { name: 'block', kind: 'int', default: 16, min: 1, description: 'decoding: merge once this many tokens have left the recent window' },
  ],
  needs: { attention: false, queries: false, calibration: false },
  build(params, context) {
    const options: MiniCacheOptions = {
      t: floatParam(params, 't'),
      startLayer: startLayerOf(floatParam(params, 'start'), context.dims.nLayers),
      retain: floatParam(params, 'retain'),
      retainRule: enumParam(params, 'retain_rule') as RetainRule,
      retainBy: enumParam(params, 'retain_by') as RetainBy,
      recent: intParam(params, 'recent'),
      block: intParam(params, 'block'),
    };
    return { transforms: [minicacheTransform(options)] };
  },
});
