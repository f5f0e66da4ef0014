/**
 * H2O — Heavy-Hitter Oracle: keep the `recent` newest entries plus the `heavy` older entries with
 * the largest accumulated attention.
 *
 * Paper: Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large
 * Language Models", NeurIPS 2023, https://arxiv.org/abs/2306.14048.
 * Reference read: FMInference/H2O `h2o_hf/utils_real_drop/modify_llama.py` (H2OKVCache_LayerWise:
 * hh_score = attention summed over batch and query rows per head, new columns appended, old scores
 * added; when seq_len > hh + recent keep top-hh of [0, seq_len − recent) + the last `recent`, the
 * survivors' scores gathered, the evicted ones dropped; eviction runs after the step's attention).
 * Also kvpress's observed-attention scoring for `accumulate=mean`.
 *
 * Reading implemented (stages: pipeline/scorers.ts accumulatedAttention + sinks/recent/top-k):
 * - S_j += Σ_i A[i][j] over every query row of every forward, kept per *query head* (as the
 *   reference's hh_score) and reduced to the KV head at selection time with `gqa` (default sum:
 *   the KV head's total attention mass; mean ranks identically, max differs).
 * - `accumulate=mean` divides S_j by the number of query rows that could see entry j (kvpress).
 * - Budgets: `heavy` and `recent` are entries (≥ 1) or ratios of the prompt length (paper: 10% +
 *   10%). The heavy set is chosen from [0, n − recent); ties keep the older entry.
 * - Attached mid-run there is no attention history: scores start at 0 and the heavy set is the
 *   oldest entries (ties → older) until attention accumulates.
 * P1: positions unchanged.
 */
import { halvedBudgetRule, promptBudget, promptLength, uniformAllocator } from '../pipeline/allocators.ts';
import { gqaParam, type GqaReduce } from '../pipeline/gqa.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import { accumulatedAttention, type Accumulate } from '../pipeline/scorers.ts';
import { sinksRecentTopKSelector } from '../pipeline/selectors.ts';
import { budgetParam, budgetValue } from './common.ts';
import { enumParam } from './types.ts';

export const h2oPolicy = defineMethod({
  id: 'h2o',
  label: 'H2O (heavy hitters + recent)',
  description: 'Keeps the recent entries plus the older entries that have received the most attention so far (accumulated over every query).',
  paper: {
    short: 'Zhang et al., 2023 (NeurIPS)',
    title: 'H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models',
    url: 'https://arxiv.org/abs/2306.14048',
    code: 'https://github.com/FMInference/H2O',
  },
  params: [
    budgetParam('heavy', 0.1, 'heavy-hitter entries kept'),
    budgetParam('recent', 0.1, 'most recent entries kept'),
    {
      name: 'accumulate',
      kind: 'enum',
      default: 'sum',
      choices: ['sum', 'mean'],
      description: 'sum: total attention received (paper); mean: divided by the number of queries that could see the entry (kvpress)',
    },
    gqaParam('sum', "how the query heads' scores of a KV head combine (sum and mean rank alike)"),
  ],
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: halvedBudgetRule('heavy', 'recent'),
  needs: { attention: true, queries: false, calibration: false },
  reportScores: 'always',
  build(params, context) {
    const heavyValue = budgetValue(params, 'heavy');
    const recentValue = budgetValue(params, 'recent');
    let heavy = 0;
    let recent = 0;
    return {
      scorer: accumulatedAttention({ group: context.dims.groupSize, gqa: enumParam(params, 'gqa') as GqaReduce, accumulate: enumParam(params, 'accumulate') as Accumulate }),
      allocator: uniformAllocator((env) => {
        heavy = promptBudget(promptLength(env), heavyValue);
        recent = promptBudget(promptLength(env), recentValue);
        return { total: heavy + recent, recent };
      }),
      selector: sinksRecentTopKSelector(0),
      note: (summary) => (summary.evicted > 0 ? `heavy ${heavy} + recent ${recent}: evicted ${summary.evicted} entries` : undefined),
    };
  },
});
