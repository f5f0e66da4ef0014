/**
 * Shared arithmetic for policy stages (engine/pipeline/). Every helper here is pure and
 * deterministic; policies compose them and return explicit Decisions (types.ts).
 *
 * - Budgets (`resolveBudget`, `budgetParam`): a budget parameter value v ≥ 1 is an absolute number of
 *   entries (rounded down); 0 < v < 1 is a ratio of a reference length (the current head length,
 *   or the prompt length — the caller decides which). The result is always ≥ 1 (a head must keep one
 *   entry); it is not clamped to the head length (callers compare with the length themselves).
 *   Convention of the policies in this folder: ratios resolve against the prompt length (tokens fed
 *   when afterPrefill last ran; `cache.tokenCount` when attached mid-session), so a budget stays
 *   fixed while decoding — memory is bounded, as in the papers' "x% of the prompt" settings.
 * - Per-layer / per-head budget arrays (`uniformBudgets`, `pyramidBudgets`): PyramidKV's linear
 *   schedule (Cai et al., 2024): min = (C−W)/β, max = 2(C−W) − min, linear from the bottom layer
 *   (max) to the top layer (min), plus the window W on every layer. Ratios are resolved first.
 * - GQA reductions (query heads → KV head) live in engine/pipeline/gqa.ts.
 * - Top-k (`topK`): the k largest scores, returned as ascending indices. Ties are broken by index:
 *   `tie: 'older'` (default) prefers the smaller index (older entry), `'newer'` the larger one.
 *   NaN scores rank below every number. k ≥ n returns all indices.
 * - Pooling (`pool1d`): 1-D avg or max pooling, kernel k, stride 1, "same" padding (output length =
 *   input length; the window is centred — k odd: (k−1)/2 each side; k even: one more on the left).
 *   `padding: 'ignore'` (default) clips the window at the ends, so avg divides by the number of
 *   in-range elements; `'zero'` treats out-of-range elements as 0 and always divides by k — what
 *   SnapKV's reference gets from `F.avg_pool1d(..., padding=k//2)` (count_include_pad=True), which
 *   damps the first and last k/2 scores. Max pooling ignores padding either way (torch pads max
 *   pooling with −∞).
 * - `columnSums`: Σ over rows of a row-major [rows × entries] attention block (PrefillObservation
 *   windowAttention), for an entry range — the "scores from the last W queries" of SnapKV/WindowKV.
 * - Keep sets (`sinksRecentTopK`): the common "first `sinks` + last `recent` + top-k of the middle
 *   by score" structure (StreamingLLM, H2O, SnapKV windows). Returns ascending unique indices.
 */
import { indexRange, type FloatParamSpec, type PolicyParams } from './types.ts';

// ---------------------------------------------------------------------------------------------
// Budgets

/**
 * Resolves a budget value against a reference length: v ≥ 1 → ⌊v⌋ entries; 0 < v < 1 → ⌊v·ref⌋
 * entries (a ratio of the current or prompt length). Always ≥ 1. Non-finite or ≤ 0 throw.
 */
export function resolveBudget(value: number, reference: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`budget must be > 0, got ${value}`);
  const entries = value >= 1 ? Math.floor(value) : Math.floor(value * Math.max(0, reference));
  return Math.max(1, entries);
}

/** True when a budget value is a ratio (0 < v < 1) rather than a number of entries. */
export function isRatio(value: number): boolean {
  return value > 0 && value < 1;
}

/** Schema entry for a budget parameter (a float so ratios parse; ≥ 1 = entries, < 1 = ratio). */
export function budgetParam(name: string, defaultValue: number, what: string): FloatParamSpec {
  return {
    name,
    kind: 'float',
    default: defaultValue,
    min: 1e-6,
    budget: true,
    description: `${what}: entries if ≥ 1, or a ratio of the length if between 0 and 1`,
  };
}

/** Reads a budget parameter (validated by the schema as a positive number). */
export function budgetValue(params: PolicyParams, name: string): number {
  const value = params[name];
  if (typeof value !== 'number' || !(value > 0)) throw new TypeError(`parameter ${name} must be a positive number`);
  return value;
}

/** One budget per layer, all equal. */
export function uniformBudgets(nLayers: number, budget: number): number[] {
  return Array.from({ length: nLayers }, () => budget);
}

/** [layer][kvHead] budget grid from a per-layer array (every head of a layer gets the layer's budget). */
export function perHeadBudgets(layerBudgets: readonly number[], nKvHeads: number): number[][] {
  return layerBudgets.map((b) => Array.from({ length: nKvHeads }, () => b));
}

/**
 * PyramidKV per-layer budgets (Cai et al., 2024, "PyramidKV", §3.3; KVCache-Factory
 * `PyramidKVCluster`), each including the window W: with average total C and window W,
 * min = (C−W)/β, max = 2(C−W) − min; layer l gets W + max − l·(max−min)/(L−1) (bottom layer = max,
 * top = min), floored, at least W+1 (one selected entry). The mean over layers is ≈ C.
 *
 * `promptLength` (optional) applies the reference's clamp: when max ≥ promptLength − W the bottom
 * layer cannot use it, so max = promptLength − W and min = 2(C−W) − max (the mean is kept).
 * Reading: the paper's formula with real-valued steps; the reference floors min and the step
 * (`//`), which leaves the top layer slightly above min. With one layer, returns [C].
 */
export function pyramidBudgets(nLayers: number, total: number, window: number, beta = 20, promptLength?: number): number[] {
  if (nLayers <= 1) return [Math.max(1, Math.floor(total))];
  const middle = Math.max(0, total - window);
  let min = middle / beta;
  let max = 2 * middle - min;
  if (promptLength !== undefined && max >= promptLength - window) {
    max = Math.max(0, promptLength - window);
    min = 2 * middle - max;
  }
  const steps = (max - min) / (nLayers - 1);
  return Array.from({ length: nLayers }, (_, l) => Math.max(window + 1, Math.floor(window + max - l * steps)));
}

// ---------------------------------------------------------------------------------------------
// Top-k

export type TieBreak = 'older' | 'newer';

/**
 * Indices of the k largest `scores[from..to)` (default: the whole array), returned ascending.
 * Ties: `older` prefers smaller indices, `newer` larger ones. NaN counts as −∞ (then by index).
 */
export function topK(scores: ArrayLike<number>, k: number, tie: TieBreak = 'older', from = 0, to = scores.length): Int32Array {
  const n = Math.max(0, to - from);
  const take = Math.max(0, Math.min(Math.floor(k), n));
  if (take === n) return indexRange(from, from + n);
  if (take === 0) return new Int32Array(0);
  const value = (i: number): number => {
    const v = scores[i];
    return Number.isNaN(v) ? -Infinity : v;
  };
  // Decoding evicts one or a few entries per step: drop the n − k lowest by linear scans (O(n) per
  // dropped entry, no allocation of a sort order). The lowest in the sort order below is the
  // smallest value and, among equal values, the entry the tie rule ranks last.
  const drop = n - take;
  if (drop <= 8) {
    const dropped = new Uint8Array(n);
    for (let d = 0; d < drop; d++) {
      let worst = -1;
      let worstValue = 0;
      for (let i = 0; i < n; i++) {
        if (dropped[i]) continue;
        const v = value(from + i);
        if (worst < 0 || v < worstValue || (v === worstValue && (tie === 'older' ? i > worst : i < worst))) {
          worst = i;
          worstValue = v;
        }
      }
      dropped[worst] = 1;
    }
    const out = new Int32Array(take);
    for (let i = 0, o = 0; i < n; i++) if (!dropped[i]) out[o++] = from + i;
    return out;
  }
  const order = Array.from({ length: n }, (_, i) => from + i);
  order.sort((a, b) => {
    const d = value(b) - value(a);
    if (d !== 0 && !Number.isNaN(d)) return d;
    return tie === 'older' ? a - b : b - a;
  });
  const out = Int32Array.from(order.slice(0, take));
  out.sort();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pooling

export type PoolMode = 'avg' | 'max';
export const POOL_CHOICES: readonly PoolMode[] = ['avg', 'max'];

export type PoolPadding = 'ignore' | 'zero';

/**
 * 1-D pooling with stride 1 and "same" padding: out[j] = pool(x[j−left .. j+right]), left = ⌊k/2⌋,
 * right = k−1−left. `padding: 'ignore'` clips the window to the array (avg divides by the elements
 * in range); `'zero'` counts out-of-range elements as zeros for avg (divides by k). k ≤ 1 copies.
 */
export function pool1d(x: ArrayLike<number>, kernel: number, mode: PoolMode = 'avg', padding: PoolPadding = 'ignore'): Float32Array {
  const n = x.length;
  const out = new Float32Array(n);
  const k = Math.max(1, Math.floor(kernel));
  if (k === 1) {
    for (let j = 0; j < n; j++) out[j] = x[j];
    return out;
  }
  const left = Math.floor(k / 2);
  const right = k - 1 - left;
  for (let j = 0; j < n; j++) {
    const a = Math.max(0, j - left);
    const b = Math.min(n - 1, j + right);
    if (mode === 'max') {
      let m = -Infinity;
      for (let i = a; i <= b; i++) if (x[i] > m) m = x[i];
      out[j] = m;
    } else {
      let s = 0;
      for (let i = a; i <= b; i++) s += x[i];
      out[j] = s / (padding === 'zero' ? k : b - a + 1);
    }
  }
  return out;
}

/**
 * Σ over the `rows` rows of a row-major [rows × entries] block, for entries [from, to): the
 * attention an entry received from a window of queries. Returns to−from values (Float64 sums).
 */
export function columnSums(block: ArrayLike<number>, rows: number, entries: number, from = 0, to = entries): Float64Array {
  const out = new Float64Array(Math.max(0, to - from));
  for (let r = 0; r < rows; r++) {
    const base = r * entries;
    for (let j = from; j < to; j++) out[j - from] += block[base + j];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Keep sets

/**
 * Keep set of a head of `length` entries: the first `sinks`, the last `recent`, and the `k`
 * best-scoring entries of the middle [sinks, length−recent) by `scores` (ties per `tie`).
 * Sinks and recent are clipped so they never overlap; the result is ascending and unique.
 * If sinks + recent + k ≥ length every index is kept.
 */
export function sinksRecentTopK(
  length: number,
  sinks: number,
  recent: number,
  k: number,
  scores: ArrayLike<number> | null,
  tie: TieBreak = 'older',
): Int32Array {
  const s = Math.max(0, Math.min(Math.floor(sinks), length));
  const r = Math.max(0, Math.min(Math.floor(recent), length - s));
  const middleEnd = length - r;
  const middle = middleEnd - s;
  const take = Math.max(0, Math.min(Math.floor(k), middle));
  if (take === middle) return indexRange(0, length);
  const out = new Int32Array(s + take + r);
  let o = 0;
  for (let i = 0; i < s; i++) out[o++] = i;
  if (take > 0) {
    if (!scores) throw new RangeError('sinksRecentTopK: scores needed to choose from the middle');
    for (const i of topK(scores, take, tie, s, middleEnd)) out[o++] = i;
  }
  for (let i = middleEnd; i < length; i++) out[o++] = i;
  return out;
}

/** Keeps `keep` (ascending) of a score array: the survivors' scores in order (for per-entry state). */
export function gather(values: ArrayLike<number>, keep: ArrayLike<number>): Float32Array {
  const out = new Float32Array(keep.length);
  for (let i = 0; i < keep.length; i++) out[i] = values[keep[i]];
  return out;
}
