/**
 * CompressKV — Lin et al., 2025, "CompressKV: Semantic Retrieval Heads Know What Tokens are Not
 * Important Before Generation" (arXiv:2508.02401). Reference code read before implementing:
 * TUDa-HWAI/CompressKV (`methods/compresskv/snapkv_utils.py` compresskvCluster.update_kv,
 * `longbench/pred_compresskv.py` error_aware_layer_budget_allocation,
 * `longbench/model/modeling_llama_new.py` layer_error_fnorm,
 * `Retrieval_Head_Identification/semantic_retrieval_head_detection.py`).
 *
 * Once, after prefill (when the prompt reaches the layer's budget), per layer:
 *  1. take the layer's `top_heads` (k = 4) query heads with the highest *semantic retrieval* score
 *     (calibration.retrieval.semantic, engine/calibration/retrieval.ts);
 *  2. SnapKV scores from those heads only: attention of the last `window` (W = 8) prompt queries
 *     summed over the window rows, for every entry before the window, averaged over the k heads,
 *     1-D pooled (avg, kernel 5);
 *  3. keep the top B_l − W entries plus the window — one index set for every KV head of the layer
 *     (the reference gathers the same indices for all KV heads). Decode tokens are appended.
 * Stages: pipeline/window-votes.ts windowVotes (the semantic heads as `heads` voters, one score
 * per layer) and windowAllocator over pipeline/layer-budgets.ts errorAwareBudgets; the selector is
 * snapKeep below — with B_l ≤ W it keeps the whole window, W entries (more than B_l).
 * Layer budgets from the offline per-layer output error e_l (calibration.layerError.normalized):
 *   B_l = clip(m + round(e_l·(L·B − m·L)), m, 3B), m = 32, then ±1 per layer (largest e_l first
 *   when adding, smallest first when removing) until Σ B_l = L·B — the reference's allocation.
 *
 * Our readings where the paper or code is loose (each a parameter where it matters):
 *  - `min_layer` (32) is capped at B: with B < 32 the reference's floor would exceed the total;
 *  - `layer_budgets=uniform` gives every layer B (SnapKV with semantic heads only), for comparison;
 *  - pooling uses common.ts `pool1d`, which ignores padding at the ends (the reference's
 *    avg_pool1d counts the zero padding — boundary entries score slightly lower there);
 *  - if the KV heads of a layer do not hold the same tokens (a cache handed over mid-session), each
 *    KV head is selected separately from the chosen heads of its own group (all of its group's
 *    heads when none was chosen there);
 *  - `budget` < 1 is a ratio of the prompt length; positions are unchanged (P1).
 * The layer error e_l is our reading of CompressKV's offline measurement (see
 * engine/calibration/layer-error.ts): relative L2 error of the layer's attention output before
 * o_proj when that layer alone is compressed, summed over teacher-forced decode steps.
 */
import { requireCalibration } from '../calibration/format.ts';
import { promptBudget, prefillBudgetRule } from '../pipeline/allocators.ts';
import { errorAwareBudgets } from '../pipeline/layer-budgets.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import { meanVotes, windowAllocator, windowVotes } from '../pipeline/window-votes.ts';
import { budgetParam, budgetValue, pool1d, topK, type PoolMode } from './common.ts';
import { PolicySpecError } from '../errors.ts';
import { enumParam, floatParam, indexRange, intParam } from './types.ts';

export { errorAwareBudgets };

/** The k query heads of a layer with the highest score (ties → lower head index), ascending. */
export function topHeads(scores: readonly number[], k: number): number[] {
  const order = scores.map((s, h) => ({ s, h })).sort((a, b) => b.s - a.s || a.h - b.h);
  return order
    .slice(0, Math.max(1, Math.min(k, scores.length)))
    .map((x) => x.h)
    .sort((a, b) => a - b);
}

/**
 * SnapKV scores of the entries before the window from the chosen query heads: for each head,
 * Σ over the window rows of its attention (`rows` × `entries`, row-major), averaged over the heads,
 * pooled. Returns `candidates` scores (entries [0, candidates)).
 */
export function windowScores(
  windowAttention: readonly Float32Array[],
  heads: readonly number[],
  rows: number,
  candidates: number,
  kernel: number,
  pooling: PoolMode,
): Float32Array {
  return pool1d(meanVotes(windowAttention, heads, rows, candidates), kernel, pooling);
}

/** Keep set of `entries` entries: top (budget − window) of the candidates by `scores`, plus the last `window`. */
export function snapKeep(scores: ArrayLike<number>, entries: number, budget: number, window: number): Int32Array {
  if (entries <= budget) return indexRange(0, entries);
  const w = Math.min(window, entries);
  const picked = topK(scores, Math.max(0, budget - w), 'older', 0, entries - w);
  const out = new Int32Array(picked.length + w);
  out.set(picked);
  for (let i = 0; i < w; i++) out[picked.length + i] = entries - w + i;
  return out;
}

export const compressKvPolicy = defineMethod({
  id: 'compresskv',
  label: 'CompressKV',
  description:
    'SnapKV-style selection scored only by each layer’s semantic retrieval heads, with per-layer budgets from each layer’s measured sensitivity to compression (needs calibration).',
  paper: {
    short: 'Lin et al., 2025 (CompressKV)',
    title: 'CompressKV: Semantic Retrieval Heads Know What Tokens are Not Important Before Generation',
    url: 'https://arxiv.org/abs/2508.02401',
    code: 'https://github.com/TUDa-HWAI/CompressKV',
  },
  params: [
    budgetParam('budget', 128, 'average entries per layer B (the total is L·B)'),
    { name: 'window', kind: 'int', default: 8, min: 1, description: 'observation window W: last prompt queries that score, always kept' },
    { name: 'top_heads', kind: 'int', default: 4, min: 1, description: 'k semantic retrieval heads per layer whose attention scores the tokens' },
    { name: 'kernel', kind: 'int', default: 5, min: 1, description: '1-D pooling kernel over the scores' },
    { name: 'pooling', kind: 'enum', default: 'avg', choices: ['avg', 'max'], description: 'pooling of the scores' },
    {
      name: 'layer_budgets',
      kind: 'enum',
      default: 'error',
      choices: ['error', 'uniform'],
      description: 'error: B_l from the calibrated layer output errors; uniform: B on every layer',
    },
    { name: 'min_layer', kind: 'int', default: 32, min: 1, description: 'smallest layer budget m (capped at B)' },
    { name: 'max_factor', kind: 'float', default: 3, min: 1, description: 'largest layer budget as a multiple of B' },
  ],
  // the window rows it needs (prefillWindow = W) come from the instance's stages
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: prefillBudgetRule('mean over layers; its 8-query window counts in B'),
  needs: { attention: false, queries: false, calibration: true },
  acts: { prefill: true, step: false, attach: false },
  build(params, context) {
    const layerMode = enumParam(params, 'layer_budgets');
    const calibration = requireCalibration(context.calibration, 'compresskv', layerMode === 'error' ? ['retrieval', 'layerError'] : ['retrieval'], context.calibrationError);
    const budget = budgetValue(params, 'budget');
    const window = intParam(params, 'window');
    const k = intParam(params, 'top_heads');
    const minLayer = intParam(params, 'min_layer');
    const maxFactor = floatParam(params, 'max_factor');
    if (budget >= 1 && budget < window) {
      throw new PolicySpecError(`compresskv: budget ${budget} is smaller than the observation window ${window}, which is always kept; use budget ≥ ${window} or a smaller window`);
    }
    const { nLayers, nHeads } = context.dims;
    const heads = calibration.retrieval!.semantic.map((row) => topHeads(row, k));
    return {
      scorer: windowVotes({ window, voters: { kind: 'heads', heads }, kernel: intParam(params, 'kernel'), pool: enumParam(params, 'pooling') as PoolMode, padding: 'ignore', windowScore: 'nan' }),
      // B resolves against the prompt this prefill fed (the observation's tokens)
      allocator: windowAllocator(window, (env) => {
        const B = promptBudget(env.prefill!.tokenCount, budget);
        return layerMode === 'error' ? errorAwareBudgets(calibration.layerError!.normalized, B, minLayer, maxFactor) : new Array<number>(nLayers).fill(B);
      }),
      // a ratio budget that resolves below the window keeps the newest B_l entries (the budget is a bound)
      selector: {
        select: (_env, head) =>
          head.budget.total < head.budget.recent
            ? indexRange(head.length - head.budget.total, head.length)
            : head.scores
              ? snapKeep(head.scores, head.length, head.budget.total, head.budget.recent)
              : null,
      },
      transforms: [
        {
          // heads no longer than the window keep everything (snapKeep keeps the window whole); as
          // before the port, a decision in which no head loses an entry changes nothing
          finish(_env, decision) {
            if (decision.layers.some((heads) => heads.some((h) => h.keep !== null && h.keep.length < h.length))) return;
            for (const heads of decision.layers) for (const h of heads) [h.keep, h.scores] = [null, null];
          },
        },
      ],
      protects: {
        description: `the ${k} semantic retrieval heads of each layer whose attention alone selects the layer's entries`,
        kvHeads: null,
        queryHeads: heads.map((chosen) => Array.from({ length: nHeads }, (_, qh) => chosen.includes(qh))),
      },
      note: (summary, _env, budgets) =>
        summary.evicted > 0 ? `compresskv: budgets ${budgets!.map((row) => row[0].total).join('/')}, evicted ${summary.evicted} entries` : undefined,
    };
  },
});
