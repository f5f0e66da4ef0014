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
 * Reading implemented:
 * - `reduce=head-mean` (default, the reference): one score per entry = mean over every query head
 *   of the layer; all KV heads of the layer keep the same indices. If the layer's KV heads hold
 *   different numbers of entries (a ragged cache handed over by another policy) the shared index
 *   set is meaningless, so that layer falls back to per-head.
 * - `reduce=per-head`: each KV head ranks its entries by its own query heads' attention, reduced
 *   with `gqa` (mean|max|sum).
 * - After prefill the "current query" is the last prompt token (needs.prefillWindow = 1), as the
 *   reference, which reduces with the prompt's last attention row. The new token is not forced to
 *   stay (kvpress forces it; the reference does not); ties keep the older entry.
 * - `budget` is entries (≥ 1) or a ratio of the prompt length. onAttach has no attention to rank
 *   with, so it keeps the newest `budget` entries.
 * P1: positions unchanged.
 */
import type { CacheView } from '../cache/store.ts';
import { windowDecision } from './window.ts';
import { budgetParam, budgetValue, GQA_CHOICES, reduceGqaHead, resolveBudget, topK, type GqaReduce } from './common.ts';
import {
  enumParam,
  NO_CHANGE,
  type Decision,
  type HeadDecision,
  type PolicyDefinition,
  type PolicyNeeds,
} from './types.ts';
import type { JsonValue } from '../types.ts';

export type TovaReduce = 'head-mean' | 'per-head';

/**
 * TOVA decision from the current query's attention `attention[layer][queryHead]` (each over its KV
 * head's entries, in cache order).
 */
export function tovaDecision(
  cache: CacheView,
  attention: readonly (readonly ArrayLike<number>[])[],
  budget: number,
  reduce: TovaReduce,
  gqa: GqaReduce,
): Decision {
  const layers: (HeadDecision | null)[][] = [];
  let changed = false;
  let evicted = 0;
  for (let l = 0; l < cache.nLayers; l++) {
    const heads: (HeadDecision | null)[] = [];
    const rows = attention[l];
    const lengths = Array.from({ length: cache.nKvHeads }, (_, h) => cache.length(l, h));
    const shared = reduce === 'head-mean' && lengths.every((n) => n === lengths[0]);
    let layerScores: Float64Array | null = null;
    if (shared && lengths[0] > budget) {
      layerScores = new Float64Array(lengths[0]);
      for (const row of rows) for (let j = 0; j < lengths[0]; j++) layerScores[j] += row[j];
      for (let j = 0; j < lengths[0]; j++) layerScores[j] /= rows.length;
    }
    for (let h = 0; h < cache.nKvHeads; h++) {
      const n = lengths[h];
      if (n <= budget) {
        heads.push(null);
        continue;
      }
      const scores = layerScores ?? reduceGqaHead(rows, h, cache.nKvHeads, gqa);
      const keep = topK(scores, budget, 'older');
      evicted += n - keep.length;
      changed = true;
      heads.push({ keep, scores: Float32Array.from(scores) });
    }
    layers.push(heads);
  }
  return changed ? { layers, note: `TOVA budget ${budget}: evicted ${evicted} entries` } : NO_CHANGE;
}

const NEEDS: PolicyNeeds = { attention: true, queries: false, calibration: false, prefillWindow: 1 };

export const tovaPolicy: PolicyDefinition = {
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
    { name: 'gqa', kind: 'enum', default: 'mean', choices: GQA_CHOICES, description: 'per-head only: how a KV head’s query heads combine' },
  ],
  needs: NEEDS,
  create(params, context) {
    const budgetValueParam = budgetValue(params, 'budget');
    const reduce = enumParam(params, 'reduce') as TovaReduce;
    const gqa = enumParam(params, 'gqa') as GqaReduce;
    const { nLayers, nHeads } = context.dims;
    let promptTokens = 0;
    const budget = (cache: CacheView) => resolveBudget(budgetValueParam, promptTokens || cache.tokenCount);
    return {
      id: 'tova',
      params,
      needs: NEEDS,
      onAttach(cache) {
        promptTokens = cache.tokenCount;
        return windowDecision(cache, budget(cache));
      },
      afterPrefill(cache, observation) {
        promptTokens = cache.tokenCount;
        const window = observation.windowAttention;
        if (!window || observation.windowRows < 1) return windowDecision(cache, budget(cache));
        // the last window row is the last prompt query
        const rows = observation.windowRows;
        const last = Array.from({ length: nLayers }, (_, l) =>
          Array.from({ length: nHeads }, (_, qh) => {
            const block = window[l][qh];
            const entries = block.length / rows;
            return block.subarray((rows - 1) * entries, rows * entries);
          }),
        );
        return tovaDecision(cache, last, budget(cache), reduce, gqa);
      },
      afterStep(cache, observation) {
        if (!observation.attention) return windowDecision(cache, budget(cache));
        return tovaDecision(cache, observation.attention, budget(cache), reduce, gqa);
      },
      reset() {
        promptTokens = 0;
      },
      getState: (): JsonValue => ({ promptTokens }),
      setState(state) {
        const value = state && typeof state === 'object' && !Array.isArray(state) ? state.promptTokens : 0;
        promptTokens = typeof value === 'number' ? value : 0;
      },
    };
  },
};
