/**
 * WindowKV — task-adaptive, window-level selection at prefill: the observation suffix scores the
 * older ("review") tokens, which are grouped into consecutive windows of `windowSize`; whole windows
 * with the lowest scores are dropped until the review part fits; the suffix is kept. Layers in a
 * group share the first layer's selection. Decoding appends.
 *
 * Paper: Zuo et al., "WindowKV: Task-Adaptive Group-Wise KV Cache Window Selection for Efficient
 * LLM Inference", 2025, https://arxiv.org/abs/2503.17922.
 * Reference read: optim996/WindowKV `models/compress_utils.py` (WindowKVCluster.update_kv and
 * get_window_score; group budgets for layer_decay_strategy="arithmetic").
 *
 * Reading implemented:
 * - s_j = Σ over the last W prompt queries (windowAttention) of A[row][j], per query head, for the
 *   review entries [0, n − W). Windows of w consecutive entries from the start (the last one may be
 *   shorter). Window score: `mean` = mean over all query heads of the layer and the window's
 *   tokens (the reference's "average"); `topmean` = per query head the mean of the top ⌊w/2⌋ values,
 *   then mean over heads (the reference's "max" with win_max_attn_scores = w/2).
 * - The selection is per layer (all KV heads keep the same indices, like the reference, whose scores
 *   span every query head). A layer whose KV heads hold different lengths (a ragged cache) selects
 *   per KV head from its own query heads instead.
 * - Budget parameterisation: `budget` = C is the total per head *including* the suffix, so the review
 *   part gets C − W (the reference's max_capacity_prompt counts the review part only: to reproduce
 *   it set budget = max_capacity_prompt + W). Windows are dropped lowest score first (ties: the
 *   later window goes first, as the reference's stable sort) until the kept review part is ≤ C − W —
 *   "until within budget" taken literally; the reference drops ⌈excess / w⌉ windows, which can
 *   leave it over budget when the short last window is among them. If C ≤ W only the last C
 *   entries stay.
 * - Layer groups of `groupSize` consecutive layers: the group's first layer selects; the others
 *   reuse its window indices when they hold the same number of entries (else they select themselves).
 * - `decay=arithmetic`: the reference's group budgets for the review part (last group C_r·G/β,
 *   first 2C_r − last, linear in between, integer steps); with one group (8 layers, G=8) it is
 *   uniform, which is also the default (`decay=uniform`).
 * - C may be a ratio of the prompt length. P1.
 */
import type { CacheView } from '../cache/store.ts';
import { budgetParam, budgetValue, columnSums, resolveBudget } from './common.ts';
import {
  enumParam,
  floatParam,
  intParam,
  NO_CHANGE,
  type Decision,
  type HeadDecision,
  type PolicyDefinition,
  type PolicyNeeds,
  type PrefillObservation,
} from './types.ts';

export type WindowScore = 'mean' | 'topmean';
export type LayerDecay = 'uniform' | 'arithmetic';

export interface WindowKVOptions {
  /** review-part budget per layer (entries kept besides the suffix) */
  reviewBudgets: readonly number[];
  /** total budget (for the C ≤ W corner) */
  budget: number;
  windowSize: number;
  score: WindowScore;
  groupSize: number;
}

/** Review-part budgets per layer (the reference's `layers_budget`). */
export function windowkvReviewBudgets(nLayers: number, review: number, groupSize: number, decay: LayerDecay, beta: number): number[] {
  const groups = Math.ceil(nLayers / groupSize);
  if (decay === 'uniform' || groups <= 1) return Array.from({ length: nLayers }, () => review);
  const last = Math.floor((review * groupSize) / beta);
  const first = review * 2 - last;
  const steps = Math.floor((first - last) / (groups - 1));
  const groupBudget = (g: number) => (g === groups - 1 ? last : first - g * steps);
  return Array.from({ length: nLayers }, (_, l) => Math.max(0, groupBudget(Math.floor(l / groupSize))));
}

/** Score of each window of the review part [0, review) from per-query-head vote arrays. */
export function windowScores(votes: readonly Float64Array[], review: number, windowSize: number, score: WindowScore): Float64Array {
  const count = Math.ceil(review / windowSize);
  const out = new Float64Array(count);
  const top = Math.max(1, Math.floor(windowSize / 2));
  for (let w = 0; w < count; w++) {
    const a = w * windowSize;
    const b = Math.min(review, a + windowSize);
    let total = 0;
    for (const v of votes) {
      if (score === 'mean') {
        for (let j = a; j < b; j++) total += v[j];
      } else {
        const values = Array.from(v.subarray(a, b)).sort((x, y) => y - x);
        const k = Math.min(top, values.length);
        let s = 0;
        for (let i = 0; i < k; i++) s += values[i];
        total += s / k;
      }
    }
    out[w] = score === 'mean' ? total / (votes.length * (b - a)) : total / votes.length;
  }
  return out;
}

/** Windows kept (ascending window indices) so that the kept review entries are ≤ budget. */
export function selectWindows(scores: Float64Array, review: number, windowSize: number, budget: number): number[] {
  const count = scores.length;
  // rank best first; stable → among equal scores the earlier window ranks higher (later dropped first)
  const order = Array.from({ length: count }, (_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
  const kept = new Set(order);
  let size = review;
  for (let r = count - 1; r >= 0 && size > budget; r--) {
    const w = order[r];
    kept.delete(w);
    size -= Math.min(review, (w + 1) * windowSize) - w * windowSize;
  }
  return [...kept].sort((a, b) => a - b);
}

function keepFromWindows(windows: readonly number[], review: number, windowSize: number, n: number): Int32Array {
  const out: number[] = [];
  for (const w of windows) for (let j = w * windowSize; j < Math.min(review, (w + 1) * windowSize); j++) out.push(j);
  for (let j = review; j < n; j++) out.push(j);
  return Int32Array.from(out);
}

/** The WindowKV selection over a prefill observation. */
export function windowkvDecision(cache: CacheView, observation: PrefillObservation, options: WindowKVOptions): Decision {
  const window = observation.windowAttention;
  const rows = observation.windowRows;
  if (!window || rows < 1) return NO_CHANGE;
  const nHeads = window[0].length;
  const group = nHeads / cache.nKvHeads;
  const { windowSize, score, groupSize } = options;
  const layers: (HeadDecision | null)[][] = [];
  let changed = false;
  let evicted = 0;
  let shared: { windows: number[]; n: number } | null = null;

  const votesOf = (l: number, queryHeads: number[], review: number) =>
    queryHeads.map((qh) => {
      const block = window[l][qh];
      return columnSums(block, rows, block.length / rows, 0, review);
    });

  for (let l = 0; l < cache.nLayers; l++) {
    const heads: (HeadDecision | null)[] = [];
    const lengths = Array.from({ length: cache.nKvHeads }, (_, h) => cache.length(l, h));
    const uniform = lengths.every((n) => n === lengths[0]);
    const budget = options.reviewBudgets[l];
    const firstOfGroup = l % groupSize === 0;
    if (firstOfGroup) shared = null;
    let layerWindows: number[] | null = null;
    if (uniform && lengths[0] - rows > budget && options.budget > rows) {
      const n = lengths[0];
      const review = n - rows;
      if (!firstOfGroup && shared && shared.n === n) {
        layerWindows = shared.windows;
      } else {
        const votes = votesOf(l, Array.from({ length: nHeads }, (_, i) => i), review);
        layerWindows = selectWindows(windowScores(votes, review, windowSize, score), review, windowSize, budget);
        if (firstOfGroup) shared = { windows: layerWindows, n };
      }
    }
    for (let h = 0; h < cache.nKvHeads; h++) {
      const n = lengths[h];
      const review = n - rows;
      if (options.budget <= rows && n > options.budget) {
        heads.push({ keep: Int32Array.from({ length: options.budget }, (_, i) => n - options.budget + i) });
        evicted += n - options.budget;
        changed = true;
        continue;
      }
      if (review <= budget) {
        heads.push(null);
        continue;
      }
      let windows = layerWindows;
      if (!windows) {
        const queryHeads = Array.from({ length: group }, (_, g) => h * group + g);
        windows = selectWindows(windowScores(votesOf(l, queryHeads, review), review, windowSize, score), review, windowSize, budget);
      }
      const keep = keepFromWindows(windows, review, windowSize, n);
      evicted += n - keep.length;
      changed = true;
      heads.push({ keep });
    }
    layers.push(heads);
  }
  return changed ? { layers, note: `WindowKV: evicted ${evicted} entries in windows of ${windowSize}` } : NO_CHANGE;
}

const DEFAULT_SUFFIX = 32;

function needsFor(suffix: number): PolicyNeeds {
  return { attention: false, queries: false, calibration: false, prefillWindow: suffix };
}

export const windowkvPolicy: PolicyDefinition = {
  id: 'windowkv',
  label: 'WindowKV (window-level selection, prefill)',
  description:
    'Once after prefill, scores consecutive windows of older tokens by the attention of the prompt suffix and drops the weakest windows; layer groups share the selection.',
  paper: {
    short: 'Zuo et al., 2025',
    title: 'WindowKV: Task-Adaptive Group-Wise KV Cache Window Selection for Efficient LLM Inference',
    url: 'https://arxiv.org/abs/2503.17922',
    code: 'https://github.com/optim996/WindowKV',
  },
  params: [
    budgetParam('budget', 256, 'entries kept per head after prefill, suffix included'),
    { name: 'suffix', kind: 'int', default: DEFAULT_SUFFIX, min: 1, description: 'observation suffix: last prompt queries that score the windows (always kept)' },
    { name: 'windowSize', kind: 'int', default: 8, min: 1, description: 'tokens per window (w)' },
    { name: 'score', kind: 'enum', default: 'mean', choices: ['mean', 'topmean'], description: 'window score: mean of all votes, or per head mean of the top w/2' },
    { name: 'groupSize', kind: 'int', default: 8, min: 1, description: 'consecutive layers sharing the first layer’s selection' },
    { name: 'decay', kind: 'enum', default: 'uniform', choices: ['uniform', 'arithmetic'], description: 'budget per layer group: uniform, or the reference’s arithmetic decay' },
    { name: 'beta', kind: 'float', default: 20, min: 1, description: 'arithmetic decay: last group gets review·groupSize/β' },
  ],
  needs: needsFor(DEFAULT_SUFFIX),
  create(params, context) {
    const budgetParamValue = budgetValue(params, 'budget');
    const suffix = intParam(params, 'suffix');
    const windowSize = intParam(params, 'windowSize');
    const score = enumParam(params, 'score') as WindowScore;
    const groupSize = intParam(params, 'groupSize');
    const decay = enumParam(params, 'decay') as LayerDecay;
    const beta = floatParam(params, 'beta');
    const needs = needsFor(suffix);
    return {
      id: 'windowkv',
      params,
      needs,
      afterPrefill(cache, observation) {
        const budget = resolveBudget(budgetParamValue, cache.tokenCount);
        const rows = Math.min(suffix, observation.windowRows);
        const reviewBudgets = windowkvReviewBudgets(context.dims.nLayers, Math.max(0, budget - rows), groupSize, decay, beta);
        return windowkvDecision(cache, observation, { reviewBudgets, budget, windowSize, score, groupSize });
      },
      afterStep: () => NO_CHANGE,
      reset() {},
      getState: () => null,
      setState() {},
    };
  },
};
