/**
 * D2O — Wan et al., 2025, "D2O: Dynamic Discriminative Operations for Efficient Long-Context
 * Inference of Large Language Models" (ICLR 2025, arXiv:2406.13035). Reference code read before
 * implementing: AIoT-MLSys-Lab/D2O `LLM_merge_new/LMEval_kv_token_merge/modeling_llama3_7b_13b_d2o.py`
 * (D2O_LayerKVCache, the prefill variance) and `modeling_llama3_new.py` (the layer allocation).
 *
 * Stages: H2O's scorer (pipeline/scorers.ts accumulatedAttention, reduced per row) + the density
 * allocator (pipeline/density.ts) + sinks/recent/top-k + recall by merging (pipeline/merge.ts).
 * Layer level (once, after prefill): per-layer budgets from the variance of the prompt's column-
 * summed attention, ratio_l = clamp(softmax(−v)_l · L · ρ, 0.01, 1) (density.ts has the formula).
 * Token level (after prefill and every step), per KV head: H2O — accumulated attention
 * S_j += Σ_rows A[row][j] (prompt rows, then one row per step), keep the top `heavy_l` of
 * [0, n − recent_l) by S with the first `sinks` (4) always among them, plus the last `recent_l`.
 * Evicted entries are not simply dropped: each finds its most similar kept key (cosine); with the
 * layer's EMA threshold τ ← α·τ + (1 − α)·mean(max-sim) (α = ½; the first eviction sets
 * τ = mean(max-sim)), entries with max-sim ≥ τ are merged into that kept entry, the rest dropped.
 *
 * Our readings where the sources differ or are loose:
 *  - merge weights (`merge_weights`): `softmax` (default) — the kept entry c and its recalled
 *    entries e get w_e = exp(u_e) / (Σ exp(u) + e), w_c = e / (Σ exp(u) + e), u = cosine similarity,
 *    i.e. a softmax in which the kept key's similarity to itself is 1 (our reading of the paper's
 *    weighted merge; weights sum to 1); `code` — the reference's scatter_reduce('mean',
 *    include_self) of similarity-scaled members: w_c = 1/(1+m), w_e = u_e/(1+m) (sums below 1);
 *  - τ is per layer (the reference keeps one per layer cache) and is updated with the mean over
 *    every entry that layer evicts in this decision (all its KV heads), then applied per entry
 *    (the reference averages the max-sim of the j-th evicted slot over heads — different tokens —
 *    before comparing);
 *  - merged entries get no attention bias (`merge_bias=none`, count unchanged), as in D2O;
 *    `log_count` gives them count = tokens merged, bias log(count); a merged entry keeps its kept
 *    entry's score (the scorer's column reduces by anchor);
 *  - the reference leaves layers 0, 1 and L−1 uncompressed; the method card in our design notes does not, neither do we;
 *  - scores are reduced from query heads to the KV head per row with `gqa` (mean default);
 *  - absolute budgets (≥ 1 entries) are scaled per layer by w_l = clamp(softmax(−v)_l·L, 0.01, L)
 *    (mean 1) instead of being tied to the prompt length; ratios follow the reference;
 *  - onAttach (no prompt attention): uniform budgets, scores start at 0.
 * P1: positions unchanged.
 */
import type { PolicyCache } from '../cache/view.ts';
import { halvedBudgetRule } from '../pipeline/allocators.ts';
import { densityAllocator, type DensityBudgets } from '../pipeline/density.ts';
import { gqaParam, type GqaReduce } from '../pipeline/gqa.ts';
import { mergeRecall, type MergeWeights } from '../pipeline/merge.ts';
import { defineMethod, type MethodSpec, type MethodStages } from '../pipeline/pipeline.ts';
import { accumulatedAttention } from '../pipeline/scorers.ts';
import { sinksRecentTopKSelector } from '../pipeline/selectors.ts';
import type { StageEnv } from '../pipeline/stages.ts';
import type { JsonValue } from '../types.ts';
import { budgetParam, budgetValue } from './common.ts';
import {
  enumParam,
  floatParam,
  intParam,
  NO_CHANGE,
  type Decision,
  type Policy,
  type PolicyContext,
  type PolicyDefinition,
  type PolicyNeeds,
  type PolicyParams,
  type PrefillObservation,
  type StateScope,
  type StepObservation,
} from './types.ts';

export { densityRatios, layerDensity } from '../pipeline/density.ts';
export { mergeWeights, nearestKept, updateThreshold, type MergeWeights } from '../pipeline/merge.ts';

/** Per-layer budgets, thresholds and densities (for tests and views). */
export type D2OInfo = Omit<DensityBudgets, 'promptTokens'> & { tau: (number | null)[] };

/** The D2O policy: the pipeline running D2O's stages, plus what its layers decided (`info`). */
export class D2OPolicy implements Policy {
  readonly id: string;
  readonly params: PolicyParams;
  readonly needs: PolicyNeeds;
  readonly withoutHistory?: string;

  constructor(
    private readonly pipeline: Policy,
    readonly info: D2OInfo,
    private readonly state: (scope: StateScope) => JsonValue,
  ) {
    this.id = pipeline.id;
    this.params = pipeline.params;
    this.needs = pipeline.needs;
    this.withoutHistory = pipeline.withoutHistory;
  }

  onAttach(cache: PolicyCache): Decision {
    return this.pipeline.onAttach?.(cache) ?? NO_CHANGE;
  }
  afterPrefill(cache: PolicyCache, observation: PrefillObservation): Decision {
    return this.pipeline.afterPrefill(cache, observation);
  }
  afterStep(cache: PolicyCache, observation: StepObservation): Decision {
    return this.pipeline.afterStep(cache, observation);
  }
  reset(): void {
    this.pipeline.reset();
  }
  /** `session` leaves out the scores: the cache's snapshot holds them (sessions save this before every step) */
  getState(scope: StateScope = 'portable'): JsonValue {
    return this.state(scope);
  }
  setState(state: JsonValue): void {
    this.pipeline.setState(state);
  }
}

function d2oStages(params: PolicyParams, context: PolicyContext): { stages: MethodStages; info: D2OInfo; state: (scope: StateScope) => JsonValue } {
  const { nLayers, nKvHeads, groupSize } = context.dims;
  const allocator = densityAllocator({
    nLayers,
    heavy: budgetValue(params, 'heavy'),
    recent: budgetValue(params, 'recent'),
    mode: enumParam(params, 'layer_budgets') as 'density' | 'uniform',
  });
  const recall = mergeRecall({
    nLayers,
    alpha: floatParam(params, 'ema'),
    weights: enumParam(params, 'merge_weights') as MergeWeights,
    count: enumParam(params, 'merge_bias') === 'log_count' ? 'members' : 'kept',
  });
  const scorer = accumulatedAttention({ group: groupSize, gqa: enumParam(params, 'gqa') as GqaReduce, accumulate: 'sum', gqaAt: 'row', merge: 'anchor' });

  // D2O's state format predates the pipeline (links and notebooks store it): the layer budgets, τ
  // and the accumulated scores [layer][kvHead], read from the store column and restored into it
  // before the scorer next adds to it
  let env: StageEnv | null = null;
  let pending: number[][][] | null = null;
  const restorePending = (e: StageEnv) => {
    env = e;
    if (!pending) return;
    for (let l = 0; l < nLayers; l++) {
      for (let h = 0; h < nKvHeads; h++) {
        // as the hand-written D2O aligned its state: what fits is kept, the rest starts at 0
        const target = e.cache.writeColumn(l, h, e.column('attention'));
        target.fill(0);
        target.set((pending[l]?.[h] ?? []).slice(0, target.length));
      }
    }
    pending = null;
  };
  const scores = (): number[][][] => {
    if (pending) return pending;
    const e = env;
    const name = e?.column('attention') ?? '';
    return Array.from({ length: nLayers }, (_, l) => Array.from({ length: nKvHeads }, (_, h) => (e?.cache.hasColumn(name) ? Array.from(e.cache.column(l, h, name)) : [])));
  };

  const state = (scope: StateScope): JsonValue => {
    const layers = { ...allocator.state.get(), tau: recall.state.get() };
    // restored scores not yet written to a cache are in no cache snapshot: keep them in every scope
    return scope === 'portable' || pending ? { ...layers, scores: scores() } : layers;
  };
  const stages: MethodStages = {
    scorer: {
      ...scorer,
      withoutHistory: 'no prompt attention: every layer gets the same budgets, accumulated scores start at 0 (the oldest entries count as heavy) and τ is set by the first eviction',
      observe: (e) => (restorePending(e), scorer.observe?.(e)),
    },
    // the allocator sees every hook (onAttach has no scorer pass), so it records the environment
    allocator: { ...allocator, observe: (e) => ((env = e), allocator.observe(e)) },
    selector: sinksRecentTopKSelector(intParam(params, 'sinks')),
    transforms: [recall],
    note: (summary) =>
      summary.evicted + summary.merged > 0
        ? `d2o: evicted ${summary.evicted}, merged ${summary.merged} entries (τ ${recall.tau.map((t) => (t === null ? '–' : t.toFixed(3))).join('/')})`
        : undefined,
    state: {
      get: () => state('portable'),
      set(value) {
        allocator.state.set(value);
        const object = value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
        recall.state.set(object.tau ?? null);
        pending = Array.isArray(object.scores) ? (object.scores as number[][][]) : null;
      },
      reset() {
        allocator.state.reset();
        recall.state.reset();
        pending = null;
      },
    },
  };
  const info: D2OInfo = {
    get heavy() {
      return [...allocator.budgets.heavy];
    },
    get recent() {
      return [...allocator.budgets.recent];
    },
    get density() {
      return allocator.budgets.density ? [...allocator.budgets.density] : null;
    },
    get tau() {
      return [...recall.tau];
    },
  };
  return { stages, info, state };
}

const SPEC: Omit<MethodSpec, 'build'> = {
  id: 'd2o',
  label: 'D2O',
  description:
    'H2O-style heavy + recent eviction with per-layer budgets from attention density; evicted entries similar enough to a kept one are merged into it instead of dropped (EMA threshold).',
  paper: {
    short: 'Wan et al., 2025 (D2O, ICLR)',
    title: 'D2O: Dynamic Discriminative Operations for Efficient Long-Context Inference of Large Language Models',
    url: 'https://arxiv.org/abs/2406.13035',
    code: 'https://github.com/AIoT-MLSys-Lab/D2O',
  },
  params: [
    budgetParam('heavy', 0.1, 'heavy hitters per head (a ratio is of the prompt length)'),
    budgetParam('recent', 0.1, 'recent window per head (a ratio is of the prompt length)'),
    {
      name: 'layer_budgets',
      kind: 'enum',
      default: 'density',
      choices: ['density', 'uniform'],
      description: 'density: per-layer budgets from the prompt’s attention variance; uniform: the same on every layer',
    },
    { name: 'sinks', kind: 'int', default: 4, min: 0, description: 'first entries always kept (counted among the heavy hitters)' },
    { name: 'ema', kind: 'float', default: 0.5, min: 0, max: 1, description: 'α of the threshold update τ ← α·τ + (1−α)·mean max-similarity' },
    {
      name: 'merge_weights',
      kind: 'enum',
      default: 'softmax',
      choices: ['softmax', 'code'],
      description: 'softmax: exp(sim) weights with the kept entry at sim 1 (sum 1); code: the reference’s mean of sim-scaled members',
    },
    { name: 'merge_bias', kind: 'enum', default: 'none', choices: ['none', 'log_count'], description: 'attention bias of merged entries: none (D2O) or log(tokens merged)' },
    gqaParam('mean', 'query-head attention → KV head score, per row'),
  ],
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: halvedBudgetRule('heavy', 'recent', 'every head, scaled per layer by attention density (mean B)'),
  needs: { attention: true, queries: false, calibration: false },
  reportScores: 'always',
};

export const d2oPolicy: PolicyDefinition = {
  ...SPEC,
  create(params, context): D2OPolicy {
    // one pipeline per instance, so the policy can expose its own stages' `info`
    const { stages, info, state } = d2oStages(params, context);
    return new D2OPolicy(defineMethod({ ...SPEC, build: () => stages }).create(params, context), info, state);
  },
};
