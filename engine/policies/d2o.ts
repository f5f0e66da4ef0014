/**
 * D2O — Wan et al., 2025, "D2O: Dynamic Discriminative Operations for Efficient Long-Context
 * Inference of Large Language Models" (ICLR 2025, arXiv:2406.13035). Reference code read before
 * implementing: AIoT-MLSys-Lab/D2O `LLM_merge_new/LMEval_kv_token_merge/modeling_llama3_7b_13b_d2o.py`
 * (D2O_LayerKVCache, the prefill variance) and `modeling_llama3_new.py` (the layer allocation).
 *
 * Layer level (once, after prefill): per layer, per query head, the column sums of the prompt's
 * attention (PrefillObservation.attentionSums); v_h = their variance over key positions (unbiased,
 * as torch.var); min-max normalised across the layer's heads, averaged → v_l. Then
 *   ratio_l = clamp(softmax(−v)_l · L · ρ, 0.01, 1),  ρ = heavy ratio + recent ratio,
 * split between heavy and recent in the proportion heavy : recent, as entries of the prompt length
 * (⌊n·ratio_l·share⌋). Layers whose attention is dense (low variance) keep more.
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
 *    `log_count` gives them count = tokens merged, bias log(count);
 *  - the reference leaves layers 0, 1 and L−1 uncompressed; the card does not, neither do we;
 *  - scores are reduced from query heads to the KV head per row with `gqa` (mean default);
 *  - absolute budgets (≥ 1 entries) are scaled per layer by w_l = clamp(softmax(−v)_l·L, 0.01, L)
 *    (mean 1) instead of being tied to the prompt length; ratios follow the reference;
 *  - onAttach (no prompt attention): uniform budgets, scores start at 0.
 * P1: positions unchanged.
 */
import type { CacheView } from '../cache/store.ts';
import type { JsonValue } from '../types.ts';
import { budgetParam, budgetValue, GQA_CHOICES, isRatio, resolveBudget, sinksRecentTopK, type GqaReduce } from './common.ts';
import {
  enumParam,
  floatParam,
  intParam,
  type Decision,
  type HeadDecision,
  type MergeGroup,
  type PolicyContext,
  type PolicyDefinition,
  type PolicyNeeds,
  type PolicyParams,
  type PrefillObservation,
  type StepObservation,
} from './types.ts';

/** v_l of one layer: per query head the unbiased variance of its column sums, min-max normalised across heads, averaged. */
export function layerDensity(columnSums: readonly ArrayLike<number>[]): number {
  const variances = columnSums.map((sums) => {
    const n = sums.length;
    if (n < 2) return 0;
    let mean = 0;
    for (let j = 0; j < n; j++) mean += sums[j];
    mean /= n;
    let v = 0;
    for (let j = 0; j < n; j++) v += (sums[j] - mean) ** 2;
    return v / (n - 1);
  });
  const min = Math.min(...variances);
  const max = Math.max(...variances);
  return variances.reduce((acc, v) => acc + (v - min) / (max - min + 1e-6), 0) / variances.length;
}

/** ratio_l = clamp(softmax(−v)_l · L · ρ, 0.01, max) (max 1: a layer never keeps more than the prompt). */
export function densityRatios(v: readonly number[], rho: number, max = 1): number[] {
  const L = v.length;
  const top = Math.max(...v.map((x) => -x));
  const exps = v.map((x) => Math.exp(-x - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => Math.min(max, Math.max(0.01, (e / sum) * L * rho)));
}

/** For each evicted entry, its most similar kept entry (cosine of keys; ties → earlier kept entry). */
export function nearestKept(keys: ArrayLike<number>, d: number, kept: readonly number[], evicted: readonly number[]): { target: number; similarity: number }[] {
  // cosine similarity = dot / (‖e‖·‖k‖), every key's norm computed once instead of per pair
  const norm = (i: number) => {
    let n = 0;
    for (let c = 0; c < d; c++) n += keys[i * d + c] ** 2;
    return Math.sqrt(n);
  };
  const keptNorms = kept.map(norm);
  return evicted.map((e) => {
    const ne = norm(e);
    let target = kept[0];
    let similarity = -Infinity;
    for (let k = 0; k < kept.length; k++) {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += keys[e * d + c] * keys[kept[k] * d + c];
      const product = ne * keptNorms[k];
      const u = product > 0 ? dot / product : 0;
      if (u > similarity) {
        similarity = u;
        target = kept[k];
      }
    }
    return { target, similarity };
  });
}

export type MergeWeights = 'softmax' | 'code';

/** Weights of [kept, ...recalled] for recalled similarities `u`. */
export function mergeWeights(u: readonly number[], mode: MergeWeights): number[] {
  if (mode === 'code') {
    const m = u.length;
    return [1 / (1 + m), ...u.map((x) => x / (1 + m))];
  }
  const exps = u.map((x) => Math.exp(x));
  const z = exps.reduce((a, b) => a + b, 0) + Math.E;
  return [Math.E / z, ...exps.map((x) => x / z)];
}

/** τ ← α·τ + (1 − α)·mean (the first observation sets τ = mean); null when nothing was evicted. */
export function updateThreshold(tau: number | null, similarities: readonly number[], alpha: number): number | null {
  if (similarities.length === 0) return tau;
  const mean = similarities.reduce((a, b) => a + b, 0) / similarities.length;
  return tau === null ? mean : alpha * tau + (1 - alpha) * mean;
}

interface D2OState {
  promptTokens: number;
  /** [layer] heavy / recent entries */
  heavy: number[];
  recent: number[];
  /** [layer] v_l (null before a prefill observation) */
  density: number[] | null;
  /** [layer] EMA threshold (null before the layer's first eviction) */
  tau: (number | null)[];
  /** [layer][kvHead] accumulated score per entry, aligned with the cache order */
  scores: Float64Array[][];
}

function grow(previous: Float64Array | undefined, length: number): Float64Array {
  const out = new Float64Array(length);
  if (previous) out.set(previous.subarray(0, Math.min(previous.length, length)));
  return out;
}

function reduceRows(rows: readonly ArrayLike<number>[], j: number, mode: GqaReduce): number {
  let acc = mode === 'max' ? -Infinity : 0;
  for (const row of rows) acc = mode === 'max' ? Math.max(acc, row[j]) : acc + row[j];
  return mode === 'mean' ? acc / rows.length : acc;
}

/** The D2O policy object; exported for tests that drive it by hand. */
export class D2OPolicy {
  readonly id = 'd2o';
  readonly needs: PolicyNeeds = NEEDS;
  private state: D2OState;

  constructor(
    readonly params: PolicyParams,
    private readonly context: PolicyContext,
  ) {
    this.state = this.empty();
  }

  private empty(): D2OState {
    const { nLayers, nKvHeads } = this.context.dims;
    return {
      promptTokens: 0,
      heavy: new Array<number>(nLayers).fill(0),
      recent: new Array<number>(nLayers).fill(0),
      density: null,
      tau: new Array<number | null>(nLayers).fill(null),
      scores: Array.from({ length: nLayers }, () => Array.from({ length: nKvHeads }, () => new Float64Array(0))),
    };
  }

  /** Current per-layer budgets, thresholds and densities (for tests and the trace). */
  get info(): { heavy: number[]; recent: number[]; tau: (number | null)[]; density: number[] | null } {
    return { heavy: [...this.state.heavy], recent: [...this.state.recent], tau: [...this.state.tau], density: this.state.density ? [...this.state.density] : null };
  }

  /** Per-layer heavy / recent entries for a prompt of n tokens (density: v_l, or null for uniform). */
  budgetsFor(n: number, density: readonly number[] | null): { heavy: number[]; recent: number[] } {
    const { nLayers } = this.context.dims;
    const heavyValue = budgetValue(this.params, 'heavy');
    const recentValue = budgetValue(this.params, 'recent');
    if (!density || enumParam(this.params, 'layer_budgets') === 'uniform') {
      const heavy = resolveBudget(heavyValue, n);
      const recent = resolveBudget(recentValue, n);
      return { heavy: new Array<number>(nLayers).fill(heavy), recent: new Array<number>(nLayers).fill(recent) };
    }
    if (!isRatio(heavyValue) || !isRatio(recentValue)) {
      // absolute budgets: the same softmax(−v)·L weights scale them (mean 1), within [0.01, L]
      const scale = densityRatios(density, 1, nLayers);
      return {
        heavy: scale.map((w) => Math.floor(resolveBudget(heavyValue, n) * w)),
        recent: scale.map((w) => Math.max(1, Math.floor(resolveBudget(recentValue, n) * w))),
      };
    }
    const rho = heavyValue + recentValue;
    const ratios = densityRatios(density, rho);
    return {
      heavy: ratios.map((r) => Math.floor(n * r * (heavyValue / rho))),
      recent: ratios.map((r) => Math.max(1, Math.floor(n * r * (recentValue / rho)))),
    };
  }

  private align(cache: CacheView): void {
    for (let l = 0; l < cache.nLayers; l++) {
      for (let h = 0; h < cache.nKvHeads; h++) {
        const n = cache.length(l, h);
        if (this.state.scores[l][h].length !== n) this.state.scores[l][h] = grow(this.state.scores[l][h], n);
      }
    }
  }

  /** Adds one set of per-query-head rows (entries of each KV head) to the scores. */
  private accumulate(rows: readonly ArrayLike<number>[][]): void {
    const { groupSize } = this.context.dims;
    const mode = enumParam(this.params, 'gqa') as GqaReduce;
    rows.forEach((layer, l) => {
      for (let h = 0; h < this.state.scores[l].length; h++) {
        const group = layer.slice(h * groupSize, (h + 1) * groupSize);
        const scores = this.state.scores[l][h];
        for (let j = 0; j < scores.length && j < group[0].length; j++) scores[j] += reduceRows(group, j, mode);
      }
    });
  }

  /** Eviction + recall-by-merging over the current state; the state follows the decision. */
  private evict(cache: CacheView): Decision {
    const sinks = intParam(this.params, 'sinks');
    const alpha = floatParam(this.params, 'ema');
    const weightsMode = enumParam(this.params, 'merge_weights') as MergeWeights;
    const logCount = enumParam(this.params, 'merge_bias') === 'log_count';
    const d = cache.headDim;
    let evicted = 0;
    let merged = 0;
    let changed = false;
    const layers: (HeadDecision | null)[][] = [];
    for (let l = 0; l < cache.nLayers; l++) {
      const heavy = this.state.heavy[l];
      const recent = this.state.recent[l];
      const plans: { n: number; keep: Int32Array; dropped: number[]; nearest: { target: number; similarity: number }[] }[] = [];
      const similarities: number[] = [];
      for (let h = 0; h < cache.nKvHeads; h++) {
        const n = cache.length(l, h);
        const scores = this.state.scores[l][h];
        if (n <= heavy + recent) {
          plans.push({ n, keep: Int32Array.from({ length: n }, (_, i) => i), dropped: [], nearest: [] });
          continue;
        }
        const forced = Math.min(sinks, heavy);
        const keep = sinksRecentTopK(n, forced, recent, heavy - forced, scores, 'older');
        const inKeep = new Uint8Array(n);
        for (const i of keep) inKeep[i] = 1;
        const dropped: number[] = [];
        for (let i = 0; i < n; i++) if (!inKeep[i]) dropped.push(i);
        const nearest = nearestKept(cache.keys(l, h), d, Array.from(keep), dropped);
        for (const x of nearest) similarities.push(x.similarity);
        plans.push({ n, keep, dropped, nearest });
      }
      const tau = updateThreshold(this.state.tau[l], similarities, alpha);
      this.state.tau[l] = tau;
      const heads: (HeadDecision | null)[] = [];
      plans.forEach((plan, h) => {
        const scores = this.state.scores[l][h];
        if (plan.dropped.length === 0) {
          heads.push({ keep: plan.keep, scores: Float32Array.from(scores) });
          return;
        }
        changed = true;
        const recalled = new Map<number, { members: number[]; u: number[] }>();
        plan.dropped.forEach((e, i) => {
          const { target, similarity } = plan.nearest[i];
          if (tau === null || similarity < tau) {
            evicted++;
            return;
          }
          const group = recalled.get(target) ?? { members: [], u: [] };
          group.members.push(e);
          group.u.push(similarity);
          recalled.set(target, group);
        });
        const counts = cache.counts(l, h);
        const merge: MergeGroup[] = [];
        for (const [target, group] of [...recalled.entries()].sort((a, b) => a[0] - b[0])) {
          merged += group.members.length;
          const members = [target, ...group.members];
          const count = logCount ? members.reduce((s, m) => s + counts[m], 0) : counts[target];
          merge.push({ members, weights: mergeWeights(group.u, weightsMode), anchor: target, count });
        }
        const keep = Array.from(plan.keep).filter((i) => !recalled.has(i));
        const decisionScores = Float32Array.from(scores);
        this.state.scores[l][h] = Float64Array.from(plan.keep, (i) => scores[i]);
        heads.push(merge.length > 0 ? { keep, merge, scores: decisionScores } : { keep, scores: decisionScores });
      });
      layers.push(heads);
    }
    return {
      layers,
      note: changed ? `d2o: evicted ${evicted}, merged ${merged} entries (τ ${this.state.tau.map((t) => (t === null ? '–' : t.toFixed(3))).join('/')})` : undefined,
    };
  }

  onAttach(cache: CacheView): Decision {
    this.state = this.empty();
    this.state.promptTokens = cache.tokenCount;
    const budgets = this.budgetsFor(cache.tokenCount, null);
    this.state.heavy = budgets.heavy;
    this.state.recent = budgets.recent;
    this.align(cache);
    return this.evict(cache);
  }

  afterPrefill(cache: CacheView, observation: PrefillObservation): Decision {
    this.align(cache);
    const sums = observation.attentionSums;
    if (sums) {
      this.accumulate(sums);
      this.state.density = sums.map((layer) => layerDensity(layer));
    }
    this.state.promptTokens = cache.tokenCount;
    const budgets = this.budgetsFor(cache.tokenCount, this.state.density);
    this.state.heavy = budgets.heavy;
    this.state.recent = budgets.recent;
    return this.evict(cache);
  }

  afterStep(cache: CacheView, observation: StepObservation): Decision {
    if (this.state.promptTokens === 0) {
      const budgets = this.budgetsFor(cache.tokenCount, null);
      this.state.heavy = budgets.heavy;
      this.state.recent = budgets.recent;
      this.state.promptTokens = cache.tokenCount;
    }
    this.align(cache);
    if (observation.attention) this.accumulate(observation.attention);
    return this.evict(cache);
  }

  reset(): void {
    this.state = this.empty();
  }

  getState(): JsonValue {
    const s = this.state;
    return {
      promptTokens: s.promptTokens,
      heavy: [...s.heavy],
      recent: [...s.recent],
      density: s.density ? [...s.density] : null,
      tau: [...s.tau],
      scores: s.scores.map((layer) => layer.map((row) => Array.from(row))),
    };
  }

  setState(value: JsonValue): void {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      this.state = this.empty();
      return;
    }
    const v = value as {
      promptTokens: number;
      heavy: number[];
      recent: number[];
      density: number[] | null;
      tau: (number | null)[];
      scores: number[][][];
    };
    this.state = {
      promptTokens: v.promptTokens,
      heavy: [...v.heavy],
      recent: [...v.recent],
      density: v.density ? [...v.density] : null,
      tau: [...v.tau],
      scores: v.scores.map((layer) => layer.map((row) => Float64Array.from(row))),
    };
  }
}

const NEEDS: PolicyNeeds = { attention: true, queries: false, calibration: false };

export const d2oPolicy: PolicyDefinition = {
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
    { name: 'gqa', kind: 'enum', default: 'mean', choices: GQA_CHOICES, description: 'query-head attention → KV head score, per row' },
  ],
  needs: NEEDS,
  create(params, context) {
    return new D2OPolicy(params, context);
  },
};
