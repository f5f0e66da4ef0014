/**
 * KVMerger — Wang, Jin, Yu, Zhang, 2024, "Model Tells You Where to Merge: Adaptive KV Cache
 * Merging for LLMs on Long-Context Tasks", https://arxiv.org/abs/2407.08454. No public reference
 * code: implemented from the paper's text (merging set identification, Gaussian kernel weighted
 * merging) and our design notes' method card.
 *
 * Reading implemented (stages: H2O's accumulated attention + the link columns of
 * pipeline/merging-sets.ts; H2O's heavy + recent selection; merging into pivots):
 * - Merging sets, per layer × KV head: maximal runs of adjacent entries (in cache order) whose
 *   consecutive key cosine similarity cos(k_{j−1}, k_j) exceeds ε (`epsilon`) — a chain: each
 *   member is compared with its neighbour, not with the set's first member. Sets lie within
 *   [0, n − recent): the recent window is never merged. Default ε = 0.9: on the shipped model
 *   the median consecutive key cosine is 0.83–0.89 in layers 2–6 (0.6–0.7 in 0, 1, 7), so 0.8
 *   chains most of those heads into a few long sets; in held-out perplexity 0.9 did better than
 *   0.8 at budgets 64, 128 and 256.
 * - Pivot of a set: its member with the highest accumulated attention (H2O's score:
 *   S_j += Σ_rows A[row][j]; the paper's models have no GQA: each row is reduced over the KV
 *   head's query heads with `gqa` as it arrives (default sum — for sum and mean the same ranking
 *   as H2O's per-query-head scores); ties → older).
 * - Gaussian kernel weighted merging: w_i = g_i / Σ g, g_i = exp(−‖k_p − k_i‖² / 2σ²) over the
 *   merged members (the pivot's own g is 1, the largest), K and V merged with the same weights
 *   (k' = Σ w_i k_i, v' = Σ w_i v_i). σ is not given numerically in the paper as we read it:
 *   `sigma` > 0 fixes it, the default 0 sets it per merge to the mean distance ‖k_p − k_i‖ of the
 *   merged members to the pivot (a member at that distance gets e^{−1/2} of the pivot's weight).
 * - Position: the merged entry takes the pivot's place and RoPE position (MergeGroup anchor; keys
 *   are post-RoPE, merged as cached, P1 — positions are never changed).
 * - Budget (the paper compresses to 50% / 35% of the prompt; how a fixed budget is met is our
 *   reading, `select`):
 *     `h2o` (default) — H2O decides what stays: the last `recent` entries plus the `heavy` best
 *       scorers of the rest. A dropped entry whose merging set has a kept pivot is merged into
 *       that pivot (all of a set's dropped members into one group), otherwise evicted; kept
 *       non-pivot members of a set stay as they are. The head holds exactly heavy + recent.
 *     `sets` — every merging set collapses into its pivot ("merge all states within each merging
 *       set"); the `heavy` sets (singletons included) with the best pivot scores stay, the others
 *       are evicted. The head holds at most heavy + recent, fewer when the sets are fewer.
 * - When: after prefill and after every decode step while a head is over its budget (the paper
 *   compresses the prompt; acting at each step keeps decoding within the same budget). A merged
 *   entry can be merged again: its key and its neighbours' similarities are recomputed.
 * - Our choices the paper does not make (decoding re-merges): `weights=kernel` (default, the
 *   paper) or `kernel_count` (g_i × the tokens entry i already stands for, so re-merging keeps a
 *   token-weighted mean); `merge_bias=none` (default: the merged entry counts as its pivot did,
 *   no attention bias) or `log_count` (bias log of the tokens merged); `merged_score=pivot`
 *   (default: a merged entry keeps its pivot's accumulated score, as D2O) or `sum` (the members').
 * - Attached mid-run: no attention history (scores 0, ties keep the older entries: pivots are the
 *   sets' first members); similarities are computed from the cache as it is.
 * Consecutive similarities are kept incrementally in journaled store columns (merging-links.ts).
 */
import { halvedBudgetRule, promptBudget, promptLength, uniformAllocator } from '../pipeline/allocators.ts';
import { gqaParam, type GqaReduce } from '../pipeline/gqa.ts';
import { withLinkColumns } from '../pipeline/merging-links.ts';
import { pivotMerge, setMerge, type KernelWeights, type MergingSetOptions } from '../pipeline/merging-sets.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import { accumulatedAttention } from '../pipeline/scorers.ts';
import { sinksRecentTopKSelector } from '../pipeline/selectors.ts';
import { keepAllSelector } from '../pipeline/similarity.ts';
import { budgetParam, budgetValue } from './common.ts';
import { enumParam, floatParam } from './types.ts';

export const kvmergerPolicy = defineMethod({
  id: 'kvmerger',
  label: 'KVMerger (merging sets + Gaussian kernel)',
  description:
    'Adjacent entries with similar keys form merging sets; entries leaving a head are merged into their set’s pivot (the member with the most accumulated attention) with Gaussian-kernel weights instead of being dropped.',
  paper: {
    short: 'Wang et al., 2024 (KVMerger)',
    title: 'Model Tells You Where to Merge: Adaptive KV Cache Merging for LLMs on Long-Context Tasks',
    url: 'https://arxiv.org/abs/2407.08454',
  },
  params: [
    budgetParam('heavy', 0.25, 'entries kept by accumulated attention (set pivots with select=sets)'),
    budgetParam('recent', 0.25, 'most recent entries kept, never merged'),
    { name: 'epsilon', kind: 'float', default: 0.9, min: -1, max: 1, description: 'ε: adjacent entries whose key cosine similarity exceeds it share a merging set' },
    {
      name: 'select',
      kind: 'enum',
      default: 'h2o',
      choices: ['h2o', 'sets'],
      description: 'h2o: H2O keeps heavy + recent, dropped entries merge into their set’s kept pivot; sets: every set collapses into its pivot, the best heavy sets stay',
    },
    { name: 'sigma', kind: 'float', default: 0, min: 0, description: 'σ of the Gaussian kernel; 0 = the mean distance of the merged keys to the pivot' },
    { name: 'weights', kind: 'enum', default: 'kernel', choices: ['kernel', 'kernel_count'], description: 'kernel: g_i (paper); kernel_count: g_i × the tokens entry i stands for (re-merging keeps a token-weighted mean)' },
    { name: 'merge_bias', kind: 'enum', default: 'none', choices: ['none', 'log_count'], description: 'attention bias of a merged entry: none (counts as its pivot) or log(tokens merged)' },
    { name: 'merged_score', kind: 'enum', default: 'pivot', choices: ['pivot', 'sum'], description: 'accumulated score of a merged entry: its pivot’s or the members’ sum' },
    gqaParam('sum', "how the query heads' scores of a KV head combine"),
  ],
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: halvedBudgetRule('heavy', 'recent'),
  needs: { attention: true, queries: false, calibration: false },
  reportScores: 'always',
  build(params, context) {
    const heavyValue = budgetValue(params, 'heavy');
    const recentValue = budgetValue(params, 'recent');
    const options: MergingSetOptions = {
      epsilon: floatParam(params, 'epsilon'),
      sigma: floatParam(params, 'sigma'),
      weights: enumParam(params, 'weights') as KernelWeights,
      count: enumParam(params, 'merge_bias') === 'log_count' ? 'members' : 'pivot',
    };
    const sets = enumParam(params, 'select') === 'sets';
    const attention = accumulatedAttention({
      group: context.dims.groupSize,
      gqa: enumParam(params, 'gqa') as GqaReduce,
      accumulate: 'sum',
      gqaAt: 'row',
      merge: enumParam(params, 'merged_score') === 'sum' ? 'sum' : 'anchor',
    });
    let heavy = 0;
    let recent = 0;
    return {
      scorer: {
        ...withLinkColumns(attention),
        withoutHistory: `${attention.withoutHistory}; merging sets (key similarities) are computed from the cache as it is, pivots are the sets’ oldest members until then`,
      },
      allocator: uniformAllocator((env) => {
        heavy = promptBudget(promptLength(env), heavyValue);
        recent = promptBudget(promptLength(env), recentValue);
        return { total: heavy + recent, recent };
      }),
      selector: sets ? keepAllSelector : sinksRecentTopKSelector(0),
      transforms: [sets ? setMerge(options) : pivotMerge(options)],
      note: (summary) =>
        summary.evicted + summary.merged > 0 ? `kvmerger (heavy ${heavy} + recent ${recent}, ε ${options.epsilon}): merged ${summary.merged}, evicted ${summary.evicted} entries` : undefined,
    };
  },
});
