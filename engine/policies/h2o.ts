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
 * Reading implemented:
 * - S_j += Σ_i A[i][j] over every query row of every forward: prefill rows via
 *   PrefillObservation.attentionSums, then one row per decode step. New entries enter with their
 *   column sums. Scores are kept per *query head* (as the reference's hh_score) and reduced to the
 *   KV head at selection time with `gqa` (default sum: the KV head's total attention mass; mean
 *   ranks identically, max differs — an entry any query head of the group accumulated much survives).
 * - `accumulate=mean` divides S_j by the number of query rows that could see entry j (kvpress):
 *   prompt entry k of an n-token prefill was seen by n − k prompt rows, then by every later step.
 * - Budgets: `heavy` and `recent` are entries (≥ 1) or ratios of the prompt length (paper: 10% +
 *   10%). The heavy set is chosen from [0, n − recent); ties keep the older entry.
 * - State (per-entry scores and counts, aligned with the cache order after every decision, plus
 *   the prompt length) is JSON-serialisable in doubles, so restore() reproduces later decisions.
 * - onAttach (taking over a cache mid-session): no attention history, so all scores start at 0
 *   and the heavy set is the oldest entries (ties → older) until attention accumulates.
 * P1: positions unchanged.
 */
import type { CacheView } from '../cache/store.ts';
import { budgetParam, budgetValue, GQA_CHOICES, resolveBudget, sinksRecentTopK, type GqaReduce } from './common.ts';
import {
  enumParam,
  type Decision,
  type HeadDecision,
  type PolicyContext,
  type PolicyDefinition,
  type PolicyNeeds,
  type PolicyParams,
  type PrefillObservation,
  type StepObservation,
} from './types.ts';
import type { JsonValue } from '../types.ts';

export type Accumulate = 'sum' | 'mean';

interface H2OState {
  promptTokens: number;
  /** [layer][queryHead] accumulated attention per entry of the query head's KV head */
  scores: Float64Array[][];
  /** [layer][kvHead] query rows that could see each entry */
  counts: Float64Array[][];
}

function grow(previous: Float64Array | undefined, held: number, length: number): Float64Array {
  const out = new Float64Array(length);
  if (previous && previous.length === held) out.set(previous);
  return out;
}

function gatherF64(values: Float64Array, keep: ArrayLike<number>): Float64Array {
  const out = new Float64Array(keep.length);
  for (let i = 0; i < keep.length; i++) out[i] = values[keep[i]];
  return out;
}

/** The H2O policy object; exported for tests that drive it by hand. */
export class H2OPolicy {
  readonly id = 'h2o';
  readonly needs: PolicyNeeds = NEEDS;
  private state: H2OState;

  constructor(
    readonly params: PolicyParams,
    private readonly context: PolicyContext,
  ) {
    this.state = this.empty();
  }

  private get heavyValue(): number {
    return budgetValue(this.params, 'heavy');
  }
  private get recentValue(): number {
    return budgetValue(this.params, 'recent');
  }
  private get accumulate(): Accumulate {
    return enumParam(this.params, 'accumulate') as Accumulate;
  }
  private get gqa(): GqaReduce {
    return enumParam(this.params, 'gqa') as GqaReduce;
  }

  private empty(): H2OState {
    const { nLayers, nHeads, nKvHeads } = this.context.dims;
    return {
      promptTokens: 0,
      scores: Array.from({ length: nLayers }, () => Array.from({ length: nHeads }, () => new Float64Array(0))),
      counts: Array.from({ length: nLayers }, () => Array.from({ length: nKvHeads }, () => new Float64Array(0))),
    };
  }

  /** Budgets in entries for the current prompt length. */
  budgets(): { heavy: number; recent: number } {
    const reference = this.state.promptTokens;
    return { heavy: resolveBudget(this.heavyValue, reference), recent: resolveBudget(this.recentValue, reference) };
  }

  /** Reduced (GQA) and, for accumulate=mean, normalised score of every entry of one KV head. */
  headScores(layer: number, kvHead: number): Float64Array {
    const group = this.context.dims.groupSize;
    const rows = this.state.scores[layer].slice(kvHead * group, kvHead * group + group);
    const n = rows[0].length;
    const out = new Float64Array(n);
    const mode = this.gqa;
    if (mode === 'max') out.fill(-Infinity);
    for (const row of rows) {
      if (mode === 'max') for (let j = 0; j < n; j++) out[j] = Math.max(out[j], row[j]);
      else for (let j = 0; j < n; j++) out[j] += row[j];
    }
    if (mode === 'mean') for (let j = 0; j < n; j++) out[j] /= group;
    if (this.accumulate === 'mean') {
      const counts = this.state.counts[layer][kvHead];
      for (let j = 0; j < n; j++) out[j] /= Math.max(1, counts[j]);
    }
    return out;
  }

  /** Makes the state match the cache lengths (zeros for entries it has no history of). */
  private align(cache: CacheView): void {
    const { groupSize } = this.context.dims;
    for (let l = 0; l < cache.nLayers; l++) {
      for (let qh = 0; qh < this.state.scores[l].length; qh++) {
        const n = cache.length(l, Math.floor(qh / groupSize));
        if (this.state.scores[l][qh].length !== n) this.state.scores[l][qh] = grow(this.state.scores[l][qh], n, n);
      }
      for (let h = 0; h < cache.nKvHeads; h++) {
        const n = cache.length(l, h);
        if (this.state.counts[l][h].length !== n) this.state.counts[l][h] = grow(this.state.counts[l][h], n, n);
      }
    }
  }

  /** Keep-set decision over the current state; the state follows the decision. */
  private evict(cache: CacheView): Decision {
    const { heavy, recent } = this.budgets();
    const { groupSize } = this.context.dims;
    let evicted = 0;
    const layers: (HeadDecision | null)[][] = [];
    for (let l = 0; l < cache.nLayers; l++) {
      const heads: (HeadDecision | null)[] = [];
      for (let h = 0; h < cache.nKvHeads; h++) {
        const n = cache.length(l, h);
        const scores = this.headScores(l, h);
        const keep = n > heavy + recent ? sinksRecentTopK(n, 0, recent, heavy, scores, 'older') : null;
        if (keep) {
          evicted += n - keep.length;
          for (let g = 0; g < groupSize; g++) {
            const qh = h * groupSize + g;
            this.state.scores[l][qh] = gatherF64(this.state.scores[l][qh], keep);
          }
          this.state.counts[l][h] = gatherF64(this.state.counts[l][h], keep);
        }
        heads.push({ keep: keep ?? Int32Array.from({ length: n }, (_, i) => i), scores: Float32Array.from(scores) });
      }
      layers.push(heads);
    }
    return { layers, note: evicted > 0 ? `heavy ${heavy} + recent ${recent}: evicted ${evicted} entries` : undefined };
  }

  onAttach(cache: CacheView): Decision {
    this.state = this.empty();
    this.state.promptTokens = cache.tokenCount;
    this.align(cache);
    return this.evict(cache);
  }

  afterPrefill(cache: CacheView, observation: PrefillObservation): Decision {
    const { groupSize } = this.context.dims;
    const sums = observation.attentionSums;
    const n = observation.tokenCount;
    for (let l = 0; l < cache.nLayers; l++) {
      for (let h = 0; h < cache.nKvHeads; h++) {
        const length = cache.length(l, h);
        const held = length - n;
        const counts = grow(this.state.counts[l][h], held, length);
        for (let j = 0; j < held; j++) counts[j] += n;
        for (let k = 0; k < n; k++) counts[held + k] = n - k;
        this.state.counts[l][h] = counts;
        for (let g = 0; g < groupSize; g++) {
          const qh = h * groupSize + g;
          const scores = grow(this.state.scores[l][qh], held, length);
          const add = sums?.[l][qh];
          if (add) for (let j = 0; j < length; j++) scores[j] += add[j];
          this.state.scores[l][qh] = scores;
        }
      }
    }
    this.state.promptTokens = cache.tokenCount;
    return this.evict(cache);
  }

  afterStep(cache: CacheView, observation: StepObservation): Decision {
    const { groupSize } = this.context.dims;
    const attention = observation.attention;
    if (this.state.promptTokens === 0) this.state.promptTokens = cache.tokenCount;
    for (let l = 0; l < cache.nLayers; l++) {
      for (let h = 0; h < cache.nKvHeads; h++) {
        const length = cache.length(l, h);
        const counts = grow(this.state.counts[l][h], length - 1, length);
        for (let j = 0; j < length; j++) counts[j] += 1;
        this.state.counts[l][h] = counts;
        for (let g = 0; g < groupSize; g++) {
          const qh = h * groupSize + g;
          const scores = grow(this.state.scores[l][qh], length - 1, length);
          const row = attention?.[l][qh];
          if (row) for (let j = 0; j < length; j++) scores[j] += row[j];
          this.state.scores[l][qh] = scores;
        }
      }
    }
    return this.evict(cache);
  }

  reset(): void {
    this.state = this.empty();
  }

  getState(): JsonValue {
    return {
      promptTokens: this.state.promptTokens,
      scores: this.state.scores.map((layer) => layer.map((s) => Array.from(s))),
      counts: this.state.counts.map((layer) => layer.map((c) => Array.from(c))),
    };
  }

  setState(state: JsonValue): void {
    if (state === null) {
      this.state = this.empty();
      return;
    }
    const s = state as { promptTokens: number; scores: number[][][]; counts: number[][][] };
    this.state = {
      promptTokens: s.promptTokens,
      scores: s.scores.map((layer) => layer.map((values) => Float64Array.from(values))),
      counts: s.counts.map((layer) => layer.map((values) => Float64Array.from(values))),
    };
  }
}

const NEEDS: PolicyNeeds = { attention: true, queries: false, calibration: false };

export const h2oPolicy: PolicyDefinition = {
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
    {
      name: 'gqa',
      kind: 'enum',
      default: 'sum',
      choices: GQA_CHOICES,
      description: "how the query heads' scores of a KV head combine (sum and mean rank alike)",
    },
  ],
  needs: NEEDS,
  create: (params, context) => new H2OPolicy(params, context),
};
