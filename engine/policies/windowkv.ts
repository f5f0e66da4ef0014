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
 * Reading implemented (stages: pipeline/window-votes.ts windowAllocator, pipeline/window-selector.ts
 * windowSelector, which shares a layer group's selection through env.shared):
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
import type { PolicyCache } from '../cache/view.ts';
import { promptBudget, promptLength, prefillBudgetRule } from '../pipeline/allocators.ts';
import { decideWithStages, defineMethod, standaloneEnv, type MethodStages } from '../pipeline/pipeline.ts';
import type { StageEnv } from '../pipeline/stages.ts';
import { windowSelector, type WindowScore } from '../pipeline/window-selector.ts';
import { windowAllocator } from '../pipeline/window-votes.ts';
import { budgetParam, budgetValue } from './common.ts';
import { enumParam, floatParam, intParam, type Decision, type PrefillObservation } from './types.ts';

export { selectWindows, windowScores, type WindowScore } from '../pipeline/window-selector.ts';

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

function windowkvStages(suffix: number, budgets: (env: StageEnv, rows: number) => Pick<WindowKVOptions, 'budget' | 'reviewBudgets'>, options: Pick<WindowKVOptions, 'windowSize' | 'score' | 'groupSize'>): MethodStages {
  return {
    allocator: windowAllocator(suffix, (env, rows) => {
      const { budget, reviewBudgets } = budgets(env, rows);
      // C ≤ W: the newest C entries; else the layer's review part plus the suffix
      return reviewBudgets.map((review) => (budget <= rows ? budget : review + rows));
    }),
    selector: windowSelector(options.windowSize, options.score, options.groupSize),
    note: (summary) => (summary.evicted > 0 ? `WindowKV: evicted ${summary.evicted} entries in windows of ${options.windowSize}` : undefined),
  };
}

/** The WindowKV selection over a prefill observation. */
export function windowkvDecision(cache: PolicyCache, observation: PrefillObservation, options: WindowKVOptions): Decision {
  const stages = windowkvStages(observation.windowRows, () => options, options);
  return decideWithStages(stages, standaloneEnv(cache, 'prefill', { prefill: observation }), { id: 'windowkv', reportScores: 'selected' });
}

export const windowkvPolicy = defineMethod({
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
    { name: 'suffix', kind: 'int', default: 32, min: 1, description: 'observation suffix: last prompt queries that score the windows (always kept)' },
    { name: 'windowSize', kind: 'int', default: 8, min: 1, description: 'tokens per window (w)' },
    { name: 'score', kind: 'enum', default: 'mean', choices: ['mean', 'topmean'], description: 'window score: mean of all votes, or per head mean of the top w/2' },
    { name: 'groupSize', kind: 'int', default: 8, min: 1, description: 'consecutive layers sharing the first layer’s selection' },
    { name: 'decay', kind: 'enum', default: 'uniform', choices: ['uniform', 'arithmetic'], description: 'budget per layer group: uniform, or the reference’s arithmetic decay' },
    { name: 'beta', kind: 'float', default: 20, min: 1, description: 'arithmetic decay: last group gets review·groupSize/β' },
  ],
  // the suffix rows it needs (prefillWindow) come from the instance's allocator
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: prefillBudgetRule('its 32-token suffix counts in B'),
  needs: { attention: false, queries: false, calibration: false },
  acts: { prefill: true, step: false, attach: false },
  build(params) {
    const value = budgetValue(params, 'budget');
    const groupSize = intParam(params, 'groupSize');
    const decay = enumParam(params, 'decay') as LayerDecay;
    const beta = floatParam(params, 'beta');
    const budgets = (env: StageEnv, rows: number) => {
      const budget = promptBudget(promptLength(env), value);
      return { budget, reviewBudgets: windowkvReviewBudgets(env.dims.nLayers, Math.max(0, budget - rows), groupSize, decay, beta) };
    };
    return windowkvStages(intParam(params, 'suffix'), budgets, { windowSize: intParam(params, 'windowSize'), score: enumParam(params, 'score') as WindowScore, groupSize });
  },
});
