/**
 * TOVA — Token Omission Via Attention: when a head holds more than `budget` entries, keep the
 * `budget` entries the *current* query attends to most (no accumulation, no recency window).
 *
 * Paper: Oren, Hassid, Yarden, Adi, Schwartz, "Transformers are Multi-State RNNs", EMNLP 2024,
 * https://arxiv.org/abs/2401.06104.
 * Reference read: schwartz-lab-NLP/TOVA `src/tova_cache.py` (TOVACache.reduce: mean over all
 * heads of the last query row's attention, top-cache_size per layer, the same indices for every KV
 * head) and kvpress `tova_press.py`.
 *
 * Reading implemented (stages: pipeline/scorers.ts currentAttention + top-k):
 * - `reduce=head-mean` (default, the reference): one score per entry = mean over every query head
 *   of the layer; all KV heads of the layer keep the same indices. A layer whose KV heads hold
 *   different numbers of entries (a ragged cache handed over by another policy) ranks per head.
 * - `reduce=per-head`: each KV head ranks its entries by its own query heads' attention (`gqa`).
 * - After prefill the "current query" is the last prompt token (needs.prefillWindow = 1), as the
 *   reference. The new token is not forced to stay (kvpress forces it; the reference does not);
 *   ties keep the older entry.
 * - `budget` is entries (≥ 1) or a ratio of the prompt length. Without a current query (attached
 *   mid-run, or a step without attention) it keeps the newest `budget` entries.
 * P1: positions unchanged.
 */
import type { PolicyCache } from '../cache/view.ts';
import { promptBudget, promptLength, uniformAllocator } from '../pipeline/allocators.ts';
import { gqaParam, type GqaReduce } from '../pipeline/gqa.ts';
import { decideWithStages, defineMethod, standaloneEnv, type MethodStages } from '../pipeline/pipeline.ts';
import { currentAttention, type CurrentReduce } from '../pipeline/scorers.ts';
import { topKSelector } from '../pipeline/selectors.ts';
import { budgetParam, budgetValue } from './common.ts';
import { enumParam, type Decision } from './types.ts';

export type TovaReduce = CurrentReduce;

function tovaStages(budget: (promptTokens: number) => number, reduce: TovaReduce, gqa: GqaReduce): MethodStages {
  let resolved = 0;
  return {
    scorer: currentAttention(reduce, gqa),
    allocator: uniformAllocator((env) => {
      resolved = budget(promptLength(env));
      return { total: resolved, recent: 0 };
    }),
    selector: topKSelector('older'),
    note: (summary) => (summary.evicted > 0 ? `TOVA budget ${resolved}: evicted ${summary.evicted} entries` : undefined),
  };
}

/**
 * TOVA decision from the current query's attention `attention[layer][queryHead]` (each over its KV
 * head's entries, in cache order).
 */
export function tovaDecision(cache: PolicyCache, attention: Float32Array[][], budget: number, reduce: TovaReduce, gqa: GqaReduce): Decision {
  const stages = tovaStages(() => budget, reduce, gqa);
  const env = standaloneEnv(cache, 'step', { step: { step: 0, tokenIndex: 0, position: 0, attention, queries: null } });
  stages.scorer!.observe?.(env);
  return decideWithStages(stages, env, { id: 'tova', reportScores: 'selected' });
}

export const tovaPolicy = defineMethod({
  id: 'tova',
  label: 'TOVA (current-query attention)',
  description: 'When over budget, keeps the entries the current token attends to most (averaged over the heads of a layer by default).',
  paper: {
    short: 'Oren et al., 2024 (EMNLP)',
    title: 'Transformers are Multi-State RNNs',
    url: 'https://arxiv.org/abs/2401.06104',
    code: 'https://github.com/schwartz-lab-NLP/TOVA',
  },
  params: [
    budgetParam('budget', 256, 'entries kept per head'),
    {
      name: 'reduce',
      kind: 'enum',
      default: 'head-mean',
      choices: ['head-mean', 'per-head'],
      description: 'head-mean: one ranking per layer from all query heads (paper); per-head: each KV head ranks by its own group',
    },
    gqaParam('mean', 'per-head only: how a KV head’s query heads combine'),
  ],
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: { params: ['budget'], map: (b) => ({ budget: b }), text: 'budget = B', scope: 'every head', min: 1 },
  needs: { attention: true, queries: false, calibration: false, prefillWindow: 1 },
  build(params) {
    const value = budgetValue(params, 'budget');
    return tovaStages((prompt) => promptBudget(prompt, value), enumParam(params, 'reduce') as TovaReduce, enumParam(params, 'gqa') as GqaReduce);
  },
});
