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
 * Reading implemented (stages: pipeline/window-votes.ts windowVotes with `group` voters and
 * windowAllocator, pipeline/layer-budgets.ts pyramidKvBudgets, selectors.ts topKPlusWindowSelector):
 * - Compress a head when it holds more than C entries (the reference skips q_len < C; at q_len = C
 *   it keeps everything anyway). W' = min(W, prompt rows). Prefix = entries [0, n − W').
 * - s_j = Σ over the W' window rows of A[row][j] (softmax over all keys, causal inside the window —
 *   exactly what the engine's windowAttention holds), per query head; pooled per query head
 *   (kernel k, stride 1, same length; avg divides by k including zero padding, as the reference's
 *   `F.avg_pool1d(padding=k//2)`; max ignores padding), then reduced to the KV head with `gqa`
 *   (default mean, kvpress; the SnapKV reference repeats KV heads and selects per query head,
 *   which under GQA stores a 4× larger cache — KVCache-Factory #49).
 * - Keep top-(C − W') prefix entries by pooled score (ties: older) + the W' window entries; the
 *   trace shows the prefix's pooled votes and the largest of them on the window entries. If C ≤ W'
 *   only the last C entries are kept, with no scores (the reference asserts C > W).
 * - `pyramid=true`: per-layer totals from common.pyramidBudgets (β, bottom layer largest), applied
 *   only when the prompt is at least 2(C − W) long — below that the reference uses the uniform C.
 * - C (budget) may be a ratio of the prompt length. P1.
 */
import type { PolicyCache } from '../cache/view.ts';
import { promptBudget, promptLength, prefillBudgetRule } from '../pipeline/allocators.ts';
import { gqaParam, type GqaReduce } from '../pipeline/gqa.ts';
import { pyramidKvBudgets } from '../pipeline/layer-budgets.ts';
import { decideWithStages, defineMethod, standaloneEnv, type MethodStages } from '../pipeline/pipeline.ts';
import { topKPlusWindowSelector } from '../pipeline/selectors.ts';
import type { StageEnv } from '../pipeline/stages.ts';
import { windowAllocator, windowVotes } from '../pipeline/window-votes.ts';
import { budgetParam, budgetValue, POOL_CHOICES, uniformBudgets, type PoolMode } from './common.ts';
import { boolParam, enumParam, floatParam, intParam, type Decision, type PrefillObservation } from './types.ts';

export interface SnapKVOptions {
  /** total entries per head after compression (window included), per layer */
  budgets: readonly number[];
  kernel: number;
  pool: PoolMode;
  gqa: GqaReduce;
}

/** Per-layer totals for a prompt of `promptLength` tokens (uniform, or PyramidKV when asked and long enough). */
export function snapkvBudgets(nLayers: number, budget: number, window: number, pyramid: boolean, beta: number, promptLength: number): number[] {
  return pyramid ? pyramidKvBudgets(nLayers, budget, window, beta, promptLength) : uniformBudgets(nLayers, budget);
}

function snapkvStages(window: number, totals: (env: StageEnv, rows: number) => readonly number[], votes: Omit<SnapKVOptions, 'budgets'>): MethodStages {
  return {
    scorer: windowVotes({ window, voters: { kind: 'group', gqa: votes.gqa }, kernel: votes.kernel, pool: votes.pool, padding: 'zero', windowScore: 'max' }),
    allocator: windowAllocator(window, totals),
    selector: topKPlusWindowSelector('older'),
    transforms: [
      {
        // C ≤ W keeps the last C without ranking anything: report no scores for those heads
        layer(_env, _layer, heads) {
          for (const head of heads) if (head.budget.total <= head.budget.recent) head.scores = null;
        },
      },
    ],
    note: (summary, _env, budgets) =>
      summary.evicted > 0 ? `SnapKV: kept ${budgets!.map((row) => row[0].total).join('/')} per head, evicted ${summary.evicted} entries` : undefined,
  };
}

/** The SnapKV selection over a prefill observation with `windowRows` window rows. */
export function snapkvDecision(cache: PolicyCache, observation: PrefillObservation, options: SnapKVOptions): Decision {
  const stages = snapkvStages(observation.windowRows, () => options.budgets, options);
  return decideWithStages(stages, standaloneEnv(cache, 'prefill', { prefill: observation }), { id: 'snapkv', reportScores: 'selected' });
}

export const snapkvPolicy = defineMethod({
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
    { name: 'window', kind: 'int', default: 32, min: 1, description: 'observation window: last prompt queries that vote (W)' },
    { name: 'kernel', kind: 'int', default: 5, min: 1, description: 'pooling kernel along the sequence (stride 1, same padding)' },
    { name: 'pool', kind: 'enum', default: 'avg', choices: POOL_CHOICES, description: 'pooling: avg (paper default) or max (LongBench configs)' },
    gqaParam('mean', 'how the query heads of a KV head combine their votes'),
    { name: 'pyramid', kind: 'bool', default: false, description: 'PyramidKV: larger budgets in lower layers, smaller in upper ones (same mean)' },
    { name: 'beta', kind: 'float', default: 20, min: 1, description: 'PyramidKV: top-layer budget is (C−W)/β' },
  ],
  // the window rows it needs (prefillWindow = W) come from the instance's stages
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: prefillBudgetRule('its 32-query observation window counts in B'),
  needs: { attention: false, queries: false, calibration: false },
  acts: { prefill: true, step: false, attach: false },
  build(params) {
    const value = budgetValue(params, 'budget');
    const pyramid = boolParam(params, 'pyramid');
    const beta = floatParam(params, 'beta');
    const totals = (env: StageEnv, rows: number) =>
      snapkvBudgets(env.dims.nLayers, promptBudget(promptLength(env), value), rows, pyramid, beta, promptLength(env));
    const votes = { kernel: intParam(params, 'kernel'), pool: enumParam(params, 'pool') as PoolMode, gqa: enumParam(params, 'gqa') as GqaReduce };
    return snapkvStages(intParam(params, 'window'), totals, votes);
  },
});
