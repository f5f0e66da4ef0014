/**
 * EMS — Li et al., 2024, "EMS: Adaptive Evict-then-Merge Strategy for Head-wise KV Cache
 * Compression Based on Global-Local Importance", https://arxiv.org/abs/2412.08521.
 * No public reference code: implemented from the paper's text as far as we could read it (a
 * Global-Local score fusing accumulated attention from all queries with that of a local window;
 * per head an evict-then-merge around class centres that follows the head's sparsity and
 * redundancy; a "zero class" taking the evicted so that heads compress in parallel). Every detail
 * that text leaves open is one of our readings below, and each is a parameter.
 *
 * Stages: the Global-Local scorer (pipeline/global-local.ts), uniform budgets, top-k + recent
 * window (pipeline/selectors.ts) and the evict-then-merge transform below. Per KV head holding
 * more than `centres + recent` entries, after prefill and after every step:
 *  1. score: GL_j = max(Ḡ_j, L̄_j), Ḡ the attention per query from every query that could see
 *     entry j, L̄ the same over the last `local_window` queries (resolved in blocks of
 *     `local_stride`: the window spans W … W + stride − 1 queries); `fusion=mix` takes
 *     λ·Ḡ + (1 − λ)·L̄, λ = `mix` (formulas in global-local.ts);
 *  2. the last `recent` entries stay as they are (the local window of keys; never merge targets);
 *     of the older ones the `centres` best by GL (ties → older) are the class centres;
 *  3. the rest — the entries past the budget — split into merged and evicted (the zero class) by
 *     the head's sparsity (`split`, below): the higher-scoring part merges, the lowest is evicted;
 *  4. an entry to merge joins its most similar centre: cosine of post-RoPE keys (pipeline/merge.ts
 *     nearestKept; ties → the older centre). Only entries that leave are matched, so a decode step
 *     that pushes one entry out costs one pass over the centres; the centres' own assignment never
 *     changes. Redundancy gate: if even the best similarity is below `min_similarity` (the head
 *     holds nothing like it) the entry goes to the zero class, i.e. is evicted;
 *  5. a centre and the entries it absorbs become one entry at the centre's place and RoPE
 *     position (P1: positions unchanged), K, V = Σ w_i·(K_i, V_i) computed by the store, with
 *     attention weights (`weights`): w_i ∝ G_i, the attention the member has received so far
 *     (`attention`, default; a merged entry's G is its members' sum, so it weighs what it stands
 *     for), ∝ GL_i (`score`), or ∝ the tokens it stands for (`uniform`); all-zero weights (no
 *     history yet) fall back to tokens. Attention bias (`merge_bias`): `log_count` (default) gives
 *     it count = Σ the members' counts, bias log count, as if its tokens were all there; `none`
 *     keeps the centre's count.
 *
 * Sparsity and the split (`split`), our reading of "how much is evicted vs merged depends on the
 * head": the measure is an entry's GL against θ × the head's mean GL. In a sparse head attention
 * sits on a few entries, so the mean is far above the rest and most of it falls below (evicted);
 * in a flat head the rest is near the mean (merged). The head's threshold t_h = θ·mean(GL) is
 * measured when the head is compressed with its whole context in view — after prefill, on attach
 * (none while every score is 0) or, for a head first over budget while decoding, at that step —
 * and kept (JSON state): a decode step judges the one entry it pushes out by the same t_h, as
 * that entry would have been judged among the prompt's.
 *   score  merge iff GL_j ≥ t_h = θ·mean_head(GL), θ = `theta` (default 0.5)
 *   mass   merge the best-scoring rest entries until they hold θ of the rest's GL mass; t_h is the
 *          lowest GL merged
 *   merge  merge all the rest (ablation: nothing goes to the zero class but by the gate)
 *   evict  evict all the rest (ablation: eviction by GL, no merging)
 * Each decision reports the share merged per layer as the measure `merged_share`.
 *
 * Budgets: `centres` and `recent` are entries (≥ 1) or ratios of the prompt length; a head holds
 * at most centres + recent entries (a merged group is one entry). GQA: attention is reduced over
 * a KV head's query heads with `gqa` as each row arrives. Attached mid-run there is no attention
 * history: scores are 0, the oldest entries are the centres and the rest merge into their most
 * similar centre with weights by tokens, until attention accumulates.
 */
import type { MergeGroup } from '../cache/decision.ts';
import { halvedBudgetRule, promptBudget, promptLength, uniformAllocator } from '../pipeline/allocators.ts';
import { globalLocalScorer, type Fusion, type GlobalLocalScorer } from '../pipeline/global-local.ts';
import { gqaParam, type GqaReduce } from '../pipeline/gqa.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import { topKPlusWindowSelector } from '../pipeline/selectors.ts';
import { originSizes } from '../pipeline/similarity.ts';
import { nearestKept } from '../pipeline/merge.ts';
import type { HeadDraft, StageState, Transform } from '../pipeline/stages.ts';
import type { JsonValue } from '../types.ts';
import { budgetParam, budgetValue } from './common.ts';
import { enumParam, floatParam, intParam } from './types.ts';

export type Split = 'score' | 'mass' | 'merge' | 'evict';
export type MergeWeighting = 'attention' | 'score' | 'uniform';
export type MergeBias = 'log_count' | 'none';

export interface SplitResult {
  /** per rest entry: merge (true) or evict */
  merge: boolean[];
  /** the head's merge threshold in GL (measured, or the one given); null when there is none */
  threshold: number | null;
}

/**
 * Which of the `rest` entries (indices into the head) merge rather than are evicted; `scores` are
 * the GL scores of the head's every entry. With a `threshold` (the head's, measured earlier) an
 * entry merges iff its GL reaches it; without one the split rule measures it on this head:
 * `score` θ·mean(GL), `mass` the lowest GL of the best-first prefix of the rest holding θ of its
 * GL mass. A head without any attention yet (all GL 0) measures none (null) and merges per rule.
 */
export function splitRest(rest: readonly number[], scores: ArrayLike<number>, split: Split, theta: number, threshold: number | null = null): SplitResult {
  if (split === 'merge') return { merge: rest.map(() => true), threshold: null };
  if (split === 'evict') return { merge: rest.map(() => false), threshold: null };
  if (threshold !== null) {
    const merge = new Array<boolean>(rest.length);
    for (let i = 0; i < rest.length; i++) merge[i] = scores[rest[i]] >= threshold;
    return { merge, threshold };
  }
  if (split === 'score') {
    let sum = 0;
    for (let j = 0; j < scores.length; j++) sum += scores[j];
    const t = (theta * sum) / Math.max(1, scores.length);
    return { merge: rest.map((j) => scores[j] >= t), threshold: sum > 0 ? t : null };
  }
  // mass: the smallest best-first prefix of the rest holding θ of its score mass
  const order = rest.map((_, i) => i).sort((a, b) => scores[rest[b]] - scores[rest[a]] || rest[a] - rest[b]);
  let mass = 0;
  for (const j of rest) mass += scores[j];
  const merge = rest.map(() => false);
  let covered = 0;
  let lowest: number | null = null;
  for (const i of order) {
    if (covered >= theta * mass) break;
    merge[i] = true;
    covered += scores[rest[i]];
    lowest = scores[rest[i]];
  }
  return { merge, threshold: mass > 0 ? lowest : null };
}

/**
 * Merge weights of `members` (summing to 1): ∝ attention, GL score or tokens; all-zero → tokens.
 * `attention` and `scores` are per entry; `tokens` (aligned with `members`) the tokens each member
 * stands for (its origin's length, not its count: see originSizes).
 */
export function emsWeights(
  members: readonly number[],
  mode: MergeWeighting,
  sources: { attention: ArrayLike<number>; scores: ArrayLike<number> },
  tokens: ArrayLike<number>,
): number[] {
  const out = new Array<number>(members.length);
  let total = 0;
  if (mode !== 'uniform') {
    const source = mode === 'attention' ? sources.attention : sources.scores;
    for (let k = 0; k < members.length; k++) total += out[k] = Math.max(0, source[members[k]]);
  }
  if (!(total > 0) || !Number.isFinite(total)) {
    total = 0;
    for (let k = 0; k < members.length; k++) total += out[k] = Math.max(0, tokens[k]);
  }
  for (let k = 0; k < members.length; k++) out[k] /= total;
  return out;
}

/** One head as the evict-then-merge step sees it. */
export interface EmsHead {
  n: number;
  /** ascending: the centres, then the recent window (the selector's keep set) */
  keep: Int32Array;
  /** entries of the recent window (the last min(recent, n)) */
  recent: number;
  scores: ArrayLike<number>;
  /** accumulated attention G per entry */
  attention: ArrayLike<number>;
  counts: ArrayLike<number>;
  /** the tokens each of `members` stands for (aligned with them: origin lengths, not counts) */
  tokens(members: readonly number[]): ArrayLike<number>;
  /** [n, d] post-RoPE keys */
  keys: ArrayLike<number>;
  d: number;
  /** the head's merge threshold measured earlier (decode steps), or null to measure it now */
  threshold?: number | null;
}

export interface EmsOptions {
  split: Split;
  theta: number;
  minSimilarity: number;
  weights: MergeWeighting;
  bias: MergeBias;
}

export interface EmsPlan {
  /** what stays as it is: centres that absorbed nothing, and the recent window */
  keep: Int32Array;
  /** one group per centre that absorbed entries: [centre, ...absorbed], anchored at the centre */
  merge: MergeGroup[];
  centres: Int32Array;
  merged: number[];
  evicted: number[];
  /** the threshold the split used (measured now or given) */
  threshold: number | null;
}

/** The evict-then-merge step of one head (see the header). */
export function planHead(head: EmsHead, options: EmsOptions): EmsPlan {
  const { n, keep, d } = head;
  const boundary = n - Math.min(head.recent, n);
  // keep is ascending: its entries before the recent window are the centres
  let c = 0;
  while (c < keep.length && keep[c] < boundary) c++;
  const centres = keep.subarray(0, c);
  // the rest: the gaps between kept entries
  const rest: number[] = [];
  for (let k = 0, i = 0; i < n; k++) {
    const next = k < keep.length ? keep[k] : n;
    while (i < next) rest.push(i++);
    i = next + 1;
  }
  const split = splitRest(rest, head.scores, options.split, options.theta, head.threshold ?? null);
  const candidates: number[] = [];
  if (centres.length > 0) for (let i = 0; i < rest.length; i++) if (split.merge[i]) candidates.push(rest[i]);
  // only the entries that leave are matched to a centre: the centres' own assignment never changes
  const nearest = candidates.length > 0 ? nearestKept(head.keys, d, centres, candidates) : [];
  // absorbed entries and their centres, in entry order
  const merged: number[] = [];
  const targets: number[] = [];
  for (let i = 0; i < candidates.length; i++) {
    if (!(nearest[i].similarity >= options.minSimilarity)) continue;
    merged.push(candidates[i]);
    targets.push(nearest[i].target);
  }
  if (merged.length === 0) return { keep, merge: [], centres, merged, evicted: rest, threshold: split.threshold };
  const evicted: number[] = [];
  for (let i = 0, k = 0; i < rest.length; i++) {
    if (k < merged.length && merged[k] === rest[i]) k++;
    else evicted.push(rest[i]);
  }
  // one group per absorbing centre, in centre order: [centre, ...its absorbed entries in order]
  const absorbed = new Map<number, number[]>();
  for (let i = 0; i < merged.length; i++) {
    const members = absorbed.get(targets[i]);
    if (members) members.push(merged[i]);
    else absorbed.set(targets[i], [targets[i], merged[i]]);
  }
  const order = [...absorbed.keys()].sort((x, y) => x - y);
  const merge: MergeGroup[] = [];
  for (const target of order) {
    const members = absorbed.get(target)!;
    let count = head.counts[target];
    if (options.bias === 'log_count') {
      count = 0;
      for (const m of members) count += head.counts[m];
    }
    merge.push({ members, weights: emsWeights(members, options.weights, head, head.tokens(members)), anchor: target, count });
  }
  const out = new Int32Array(keep.length - order.length);
  for (let i = 0, k = 0, o = 0; i < keep.length; i++) {
    if (k < order.length && order[k] === keep[i]) k++;
    else out[o++] = keep[i];
  }
  return { keep: out, merge, centres, merged, evicted, threshold: split.threshold };
}

export interface EvictThenMerge extends Transform {
  /** [layer][kvHead] merge thresholds in GL (null until measured) */
  readonly thresholds: readonly (readonly (number | null)[])[];
  state: StageState;
}

/**
 * The transform: every selected head's rest is merged into centres or evicted. A head's merge
 * threshold is measured by the split rule at prefill (the whole prompt in view), on attach, and at
 * the first decision after which it still has none; decode steps reuse it, so the one entry a step
 * pushes out is judged as the prompt's were. Reports `merged_share` per layer.
 */
export function evictThenMerge(scorer: GlobalLocalScorer, options: EmsOptions, nLayers: number, nKvHeads: number): EvictThenMerge {
  const empty = () => Array.from({ length: nLayers }, () => new Array<number | null>(nKvHeads).fill(null));
  let thresholds = empty();
  let merged: number[] = [];
  let dropped: number[] = [];
  return {
    get thresholds() {
      return thresholds;
    },
    layer(env, layer, heads: HeadDraft[]) {
      const { cache } = env;
      if (layer === 0) {
        merged = new Array<number>(cache.nLayers).fill(0);
        dropped = new Array<number>(cache.nLayers).fill(0);
      }
      const row = thresholds[layer] ?? [];
      for (const draft of heads) {
        if (!draft.keep || !draft.scores) continue;
        const given = env.phase === 'step' ? (row[draft.kvHead] ?? null) : null;
        const plan = planHead(
          {
            n: draft.length,
            keep: draft.keep,
            recent: draft.budget.recent,
            scores: draft.scores,
            attention: scorer.accumulated(env, layer, draft.kvHead),
            counts: cache.counts(layer, draft.kvHead),
            tokens: (members) => originSizes(cache, layer, draft.kvHead, members),
            keys: cache.keys(layer, draft.kvHead),
            d: cache.headDim,
            threshold: given,
          },
          options,
        );
        if (given === null && plan.threshold !== null && draft.kvHead < row.length) row[draft.kvHead] = plan.threshold;
        draft.keep = plan.keep;
        draft.merge.push(...plan.merge);
        merged[layer] += plan.merged.length;
        dropped[layer] += plan.merged.length + plan.evicted.length;
      }
    },
    finish(_env, decision) {
      if (!dropped.some((x) => x > 0)) return;
      decision.measures.merged_share = dropped.map((x, l) => (x > 0 ? merged[l] / x : NaN));
    },
    state: {
      get: (): JsonValue => thresholds.map((r) => [...r]),
      set(state) {
        thresholds = empty();
        if (!Array.isArray(state)) return;
        state.forEach((r, l) => {
          if (l < nLayers && Array.isArray(r)) r.forEach((t, h) => h < nKvHeads && typeof t === 'number' && (thresholds[l][h] = t));
        });
      },
      reset() {
        thresholds = empty();
      },
    },
  };
}

export const emsPolicy = defineMethod({
  id: 'ems',
  label: 'EMS (evict-then-merge, Global-Local score)',
  description:
    'Per head, the entries with the best Global-Local score (attention from all queries fused with that of the recent queries) are class centres; past the budget, the lowest-scoring entries are evicted and the middle ones merged into their most similar centre, in proportions that follow how sparse the head is.',
  paper: {
    short: 'Li et al., 2024 (EMS)',
    title: 'EMS: Adaptive Evict-then-Merge Strategy for Head-wise KV Cache Compression Based on Global-Local Importance',
    url: 'https://arxiv.org/abs/2412.08521',
  },
  params: [
    budgetParam('centres', 0.1, 'class centres per head (a ratio is of the prompt length)'),
    budgetParam('recent', 0.1, 'recent entries kept as they are (a ratio is of the prompt length)'),
    { name: 'local_window', kind: 'int', default: 32, min: 1, max: 1024, description: 'W: the recent queries whose attention makes the local score' },
    { name: 'local_stride', kind: 'int', default: 8, min: 1, max: 1024, description: 'rows between snapshots: the local window spans W to W + stride − 1 queries (exactly W at 1)' },
    { name: 'fusion', kind: 'enum', default: 'max', choices: ['max', 'mix'], description: 'max: GL = max(global, local); mix: λ·global + (1−λ)·local' },
    { name: 'mix', kind: 'float', default: 0.5, min: 0, max: 1, description: 'λ, the global share of fusion=mix' },
    {
      name: 'split',
      kind: 'enum',
      default: 'score',
      choices: ['score', 'mass', 'merge', 'evict'],
      description: 'score: merge entries with GL ≥ θ·head mean, evict the rest; mass: merge the best entries holding θ of the rest’s GL; merge / evict: all',
    },
    { name: 'theta', kind: 'float', default: 0.5, min: 0, description: 'θ of the split (score: share of the head mean; mass: share of the mass)' },
    { name: 'min_similarity', kind: 'float', default: 0, min: -1, max: 1, description: 'an entry whose nearest centre is less similar (cosine) is evicted (zero class)' },
    {
      name: 'weights',
      kind: 'enum',
      default: 'attention',
      choices: ['attention', 'score', 'uniform'],
      description: 'merge weights ∝ accumulated attention, ∝ GL score, or ∝ tokens each entry stands for',
    },
    { name: 'merge_bias', kind: 'enum', default: 'log_count', choices: ['log_count', 'none'], description: 'attention bias of a merged entry: log(tokens merged), or the centre’s' },
    gqaParam('mean', 'query-head attention → KV head, per row'),
  ],
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: halvedBudgetRule('centres', 'recent'),
  needs: { attention: true, queries: false, calibration: false },
  reportScores: 'always',
  build(params, context) {
    const centresValue = budgetValue(params, 'centres');
    const recentValue = budgetValue(params, 'recent');
    const scorer = globalLocalScorer({
      window: intParam(params, 'local_window'),
      stride: intParam(params, 'local_stride'),
      gqa: enumParam(params, 'gqa') as GqaReduce,
      fusion: enumParam(params, 'fusion') as Fusion,
      mix: floatParam(params, 'mix'),
    });
    const transform = evictThenMerge(scorer, {
      split: enumParam(params, 'split') as Split,
      theta: floatParam(params, 'theta'),
      minSimilarity: floatParam(params, 'min_similarity'),
      weights: enumParam(params, 'weights') as MergeWeighting,
      bias: enumParam(params, 'merge_bias') as MergeBias,
    }, context.dims.nLayers, context.dims.nKvHeads);
    let centres = 0;
    let recent = 0;
    return {
      scorer,
      allocator: uniformAllocator((env) => {
        centres = promptBudget(promptLength(env), centresValue);
        recent = promptBudget(promptLength(env), recentValue);
        return { total: centres + recent, recent };
      }),
      selector: topKPlusWindowSelector('older'),
      transforms: [transform],
      note: (summary) =>
        summary.evicted + summary.merged > 0 ? `ems: ${centres} centres + ${recent} recent; evicted ${summary.evicted}, merged ${summary.merged} entries` : undefined,
    };
  },
});
