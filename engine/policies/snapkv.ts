/**
 * SnapKV — compress the prompt once, at prefill: the last `window` prompt queries (the observation
 * window) vote for prefix entries; the votes are pooled along the sequence so neighbours of an
 * important token survive with it; keep the top budget − window prefix entries plus the window.
 * Decoding appends (no eviction after prefill). Optional PyramidKV per-layer budgets.
 *
 * Papers: Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation", NeurIPS 2024,
 * https://arxiv.org/abs/2404.14469. Cai et al., "PyramidKV: Dynamic KV Cache Compression based on
 * Pyramidal Information Funneling", 2024, https://arxiv.org/abs/2406.02069.
 * References read: FasterDecoding/SnapKV `snapkv/monkeypatch/snapkv_utils.py` (SnapKVCluster.update_kv)
 * and Zefan-Cai/KVCache-Factory `pyramidkv/pyramidkv_utils.py` (PyramidKVCluster), plus kvpress's
 * SnapKV press for GQA.
 *
 * Reading implemented:
 * - Compress a head when it holds more than C entries (the reference skips q_len < C; at q_len = C
 *   it keeps everything anyway). W' = min(W, prompt rows). Prefix = entries [0, n − W').
 * - s_j = Σ over the W' window rows of A[row][j] (softmax over all keys, causal inside the window —
 *   exactly what the engine's windowAttention holds), per query head; pooled per query head
 *   (kernel k, stride 1, same length; avg divides by k including zero padding, as the reference's
 *   `F.avg_pool1d(padding=k//2)`; max ignores padding), then reduced to the KV head with `gqa`
 *   (default mean, kvpress; the SnapKV reference repeats KV heads and selects per query head,
 *   which under GQA stores a 4× larger cache — KVCache-Factory #49).
 * - Keep top-(C − W') prefix entries by pooled score (ties: older) + the W' window entries. If
 *   C ≤ W' only the last C entries are kept (the reference asserts C > W).
 * - `pyramid=true`: per-layer totals from common.pyramidBudgets (β, bottom layer largest), applied
 *   only when the prompt is at least 2(C − W) long — below that the reference uses the uniform C.
 * - C (budget) may be a ratio of the prompt length. P1.
 */
import type { CacheView } from '../cache/store.ts';
import {
  budgetParam,
  budgetValue,
  columnSums,
  GQA_CHOICES,
  POOL_CHOICES,
  pool1d,
  pyramidBudgets,
  reduceGqaHead,
  resolveBudget,
  topK,
  uniformBudgets,
  type GqaReduce,
  type PoolMode,
} from './common.ts';
import {
  boolParam,
  enumParam,
  floatParam,
  intParam,
  NO_CHANGE,
  type Decision,
  type HeadDecision,
  type PolicyDefinition,
  type PolicyNeeds,
  type PolicyParams,
  type PrefillObservation,
} from './types.ts';

export interface SnapKVOptions {
  /** total entries per head after compression (window included), per layer */
  budgets: readonly number[];
  kernel: number;
  pool: PoolMode;
  gqa: GqaReduce;
}

/** Per-layer totals for a prompt of `promptLength` tokens (uniform, or PyramidKV when asked and long enough). */
export function snapkvBudgets(nLayers: number, budget: number, window: number, pyramid: boolean, beta: number, promptLength: number): number[] {
  if (pyramid && promptLength >= 2 * (budget - window)) return pyramidBudgets(nLayers, budget, window, beta, promptLength);
  return uniformBudgets(nLayers, budget);
}

/** The SnapKV selection over a prefill observation with `windowRows` window rows. */
export function snapkvDecision(cache: CacheView, observation: PrefillObservation, options: SnapKVOptions): Decision {
  const window = observation.windowAttention;
  const rows = observation.windowRows;
  if (!window || rows < 1) return NO_CHANGE;
  const nHeads = window[0].length;
  const group = nHeads / cache.nKvHeads;
  const layers: (HeadDecision | null)[][] = [];
  let changed = false;
  let evicted = 0;
  for (let l = 0; l < cache.nLayers; l++) {
    const heads: (HeadDecision | null)[] = [];
    const budget = options.budgets[l];
    for (let h = 0; h < cache.nKvHeads; h++) {
      const n = cache.length(l, h);
      if (n <= budget) {
        heads.push(null);
        continue;
      }
      const prefix = n - rows;
      const selected = budget - rows;
      let keep: Int32Array;
      let scores: Float32Array | undefined;
      if (selected <= 0 || prefix <= 0) {
        keep = Int32Array.from({ length: budget }, (_, i) => n - budget + i);
      } else {
        const pooled: Float32Array[] = [];
        for (let g = 0; g < group; g++) {
          const block = window[l][h * group + g];
          const sums = columnSums(block, rows, block.length / rows, 0, prefix);
          pooled.push(pool1d(sums, options.kernel, options.pool, 'zero'));
        }
        const score = reduceGqaHead(pooled, 0, 1, options.gqa);
        const top = topK(score, selected, 'older');
        keep = new Int32Array(top.length + rows);
        keep.set(top);
        for (let i = 0; i < rows; i++) keep[top.length + i] = prefix + i;
        // scores for the trace: pooled votes of the prefix, +∞-free: window entries get the max vote
        let max = 0;
        for (let j = 0; j < prefix; j++) max = Math.max(max, score[j]);
        scores = new Float32Array(n);
        scores.set(score.subarray(0, prefix));
        scores.fill(max, prefix);
      }
      evicted += n - keep.length;
      changed = true;
      heads.push(scores ? { keep, scores } : { keep });
    }
    layers.push(heads);
  }
  return changed ? { layers, note: `SnapKV: kept ${options.budgets.join('/')} per head, evicted ${evicted} entries` } : NO_CHANGE;
}

const DEFAULT_WINDOW = 32;

function needsFor(window: number): PolicyNeeds {
  return { attention: false, queries: false, calibration: false, prefillWindow: window };
}

export const snapkvPolicy: PolicyDefinition = {
  id: 'snapkv',
  label: 'SnapKV (observation window, prefill)',
  description:
    'Once after prefill, the last prompt tokens vote (pooled attention) for the prefix entries worth keeping; decoding then appends. Optional PyramidKV layer budgets.',
  paper: {
    short: 'Li et al., 2024 (NeurIPS); PyramidKV: Cai et al., 2024',
    title: 'SnapKV: LLM Knows What You are Looking for Before Generation',
    url: 'https://arxiv.org/abs/2404.14469',
    code: 'https://github.com/FasterDecoding/SnapKV',
  },
  params: [
    budgetParam('budget', 256, 'entries kept per head after prefill, window included (C)'),
    { name: 'window', kind: 'int', default: DEFAULT_WINDOW, min: 1, description: 'observation window: last prompt queries that vote (W)' },
    { name: 'kernel', kind: 'int', default: 5, min: 1, description: 'pooling kernel along the sequence (stride 1, same padding)' },
    { name: 'pool', kind: 'enum', default: 'avg', choices: POOL_CHOICES, description: 'pooling: avg (paper default) or max (LongBench configs)' },
    { name: 'gqa', kind: 'enum', default: 'mean', choices: GQA_CHOICES, description: 'how the query heads of a KV head combine their votes' },
    { name: 'pyramid', kind: 'bool', default: false, description: 'PyramidKV: larger budgets in lower layers, smaller in upper ones (same mean)' },
    { name: 'beta', kind: 'float', default: 20, min: 1, description: 'PyramidKV: top-layer budget is (C−W)/β' },
  ],
  needs: needsFor(DEFAULT_WINDOW),
  create(params: PolicyParams, context) {
    const budgetParamValue = budgetValue(params, 'budget');
    const windowSize = intParam(params, 'window');
    const kernel = intParam(params, 'kernel');
    const pool = enumParam(params, 'pool') as PoolMode;
    const gqa = enumParam(params, 'gqa') as GqaReduce;
    const pyramid = boolParam(params, 'pyramid');
    const beta = floatParam(params, 'beta');
    const needs = needsFor(windowSize);
    return {
      id: 'snapkv',
      params,
      needs,
      afterPrefill(cache, observation) {
        const promptLength = cache.tokenCount;
        const budget = resolveBudget(budgetParamValue, promptLength);
        const rows = Math.min(windowSize, observation.windowRows);
        const budgets = snapkvBudgets(context.dims.nLayers, budget, rows, pyramid, beta, promptLength);
        return snapkvDecision(cache, observation, { budgets, kernel, pool, gqa });
      },
      afterStep: () => NO_CHANGE,
      reset() {},
      getState: () => null,
      setState() {},
    };
  },
};
