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
import type { CacheView } from '../cache/store.ts';
import { requireCalibration } from '../calibration/format.ts';
import { budgetParam, budgetValue, pool1d, resolveBudget, topK, type PoolMode } from './common.ts';
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

/**
 * Error-aware layer budgets: B_l = clip(m + round(e_l·(L·B − m·L)), m, maxFactor·B), then adjusted
 * one entry at a time until they sum to L·B (adding to the largest e_l first among layers below the
 * cap, removing from the smallest e_l first among layers above m; ties by layer index).
 * m is capped at B. Returns integers.
 */
export function errorAwareBudgets(errors: readonly number[], perLayer: number, minTokens = 32, maxFactor = 3): number[] {
  const L = errors.length;
  const B = Math.max(1, Math.floor(perLayer));
  const min = Math.max(1, Math.min(Math.floor(minTokens), B));
  const max = Math.max(min, Math.floor(maxFactor * B));
  const total = L * B;
  const budgets = errors.map((e) => Math.min(max, Math.max(min, min + Math.round(e * (total - min * L)))));
  let diff = total - budgets.reduce((a, b) => a + b, 0);
  const byError = (ascending: boolean) =>
    Array.from({ length: L }, (_, i) => i).sort((a, b) => (ascending ? errors[a] - errors[b] : errors[b] - errors[a]) || a - b);
  while (diff !== 0) {
    const order = diff > 0 ? byError(false).filter((i) => budgets[i] < max) : byError(true).filter((i) => budgets[i] > min);
    if (order.length === 0) break;
    for (const i of order) {
      if (diff === 0) break;
      budgets[i] += diff > 0 ? 1 : -1;
      diff += diff > 0 ? -1 : 1;
    }
  }
  return budgets;
}

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
  const sums = new Float32Array(candidates);
  for (const qh of heads) {
    const block = windowAttention[qh];
    const entries = block.length / rows;
    for (let r = 0; r < rows; r++) {
      const base = r * entries;
      for (let j = 0; j < candidates; j++) sums[j] += block[base + j];
    }
  }
  for (let j = 0; j < candidates; j++) sums[j] /= heads.length;
  return pool1d(sums, kernel, pooling);
}

/** Keep set of `entries` entries: top (budget − window) of the candidates by `scores`, plus the last `window`. */
export function snapKeep(scores: ArrayLike<number>, entries: number, budget: number, window: number): Int32Array {
  if (entries <= budget) return Int32Array.from({ length: entries }, (_, i) => i);
  const w = Math.min(window, entries);
  const picked = topK(scores, Math.max(0, budget - w), 'older', 0, entries - w);
  const out = new Int32Array(picked.length + w);
  out.set(picked);
  for (let i = 0; i < w; i++) out[picked.length + i] = entries - w + i;
  return out;
}

const STATIC_NEEDS: PolicyNeeds = { attention: false, queries: false, calibration: true, prefillWindow: 8 };

export const compressKvPolicy: PolicyDefinition = {
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
  needs: STATIC_NEEDS,
  create(params, context) {
    const layerMode = enumParam(params, 'layer_budgets');
    const calibration = requireCalibration(
      context.calibration,
      'compresskv',
      layerMode === 'error' ? ['retrieval', 'layerError'] : ['retrieval'],
      context.calibrationError,
    );
    const budget = budgetValue(params, 'budget');
    const window = intParam(params, 'window');
    const k = intParam(params, 'top_heads');
    const kernel = intParam(params, 'kernel');
    const pooling = enumParam(params, 'pooling') as PoolMode;
    const minLayer = intParam(params, 'min_layer');
    const maxFactor = floatParam(params, 'max_factor');
    const { nLayers, nHeads, nKvHeads } = context.dims;
    const group = nHeads / nKvHeads;
    const heads = calibration.retrieval!.semantic.map((row) => topHeads(row, k));
    const needs: PolicyNeeds = { ...STATIC_NEEDS, prefillWindow: window };

    const layerBudgets = (promptLength: number): number[] => {
      const B = resolveBudget(budget, promptLength);
      return layerMode === 'error' ? errorAwareBudgets(calibration.layerError!.normalized, B, minLayer, maxFactor) : new Array<number>(nLayers).fill(B);
    };

    const decide = (cache: CacheView, obs: PrefillObservation): Decision => {
      if (!obs.windowAttention || obs.windowRows === 0) return NO_CHANGE;
      const rows = obs.windowRows;
      const budgets = layerBudgets(obs.tokenCount);
      let evicted = 0;
      const layers: (HeadDecision | null)[][] = [];
      for (let l = 0; l < nLayers; l++) {
        const lengths = Array.from({ length: nKvHeads }, (_, h) => cache.length(l, h));
        const aligned = lengths.every((n, h) => n === lengths[0] && sameTokens(cache, l, 0, h));
        const decisions: (HeadDecision | null)[] = [];
        let shared: { keep: Int32Array; scores: Float32Array } | null = null;
        for (let h = 0; h < nKvHeads; h++) {
          const n = lengths[h];
          if (n <= budgets[l]) {
            decisions.push(null);
            continue;
          }
          let chosen = heads[l];
          if (!aligned) {
            const own = chosen.filter((qh) => Math.floor(qh / group) === h);
            chosen = own.length > 0 ? own : Array.from({ length: group }, (_, g) => h * group + g);
          }
          if (!aligned || !shared) {
            const candidates = n - Math.min(window, rows, n);
            const pooled = windowScores(obs.windowAttention[l], chosen, rows, candidates, kernel, pooling);
            const keep = snapKeep(pooled, n, budgets[l], Math.min(window, rows));
            const scores = new Float32Array(n).fill(Number.NaN);
            scores.set(pooled);
            shared = { keep, scores };
          }
          evicted += n - shared.keep.length;
          decisions.push({ keep: shared.keep, scores: shared.scores });
        }
        layers.push(decisions);
      }
      return evicted > 0 ? { layers, note: `compresskv: budgets ${budgets.join('/')}, evicted ${evicted} entries` } : NO_CHANGE;
    };

    return {
      id: 'compresskv',
      params,
      needs,
      protects: {
        description: `the ${k} semantic retrieval heads of each layer whose attention alone selects the layer's entries`,
        kvHeads: null,
        queryHeads: heads.map((chosen) => Array.from({ length: nHeads }, (_, qh) => chosen.includes(qh))),
      },
      afterPrefill: decide,
      afterStep: () => NO_CHANGE,
      reset() {},
      getState: () => null,
      setState() {},
    };
  },
};

function sameTokens(cache: CacheView, layer: number, a: number, b: number): boolean {
  if (a === b) return true;
  const x = cache.tokens(layer, a);
  const y = cache.tokens(layer, b);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
