/**
 * Merging sets (KVMerger, Wang et al., 2024, https://arxiv.org/abs/2407.08454; policies/kvmerger.ts
 * has the reading): runs of adjacent entries of one head whose consecutive key cosine similarity
 * exceeds ε, each merged into its pivot — the member with the highest score — with Gaussian-kernel
 * weights w_i ∝ exp(−‖k_p − k_i‖² / 2σ²), keys and values alike (the store computes Σ w·member).
 *
 * Consecutive similarities (the links between adjacent entries) are kept incrementally in a store
 * column: merging-links.ts (HeadLinks, refreshLinks, the `link` column).
 *
 * Stages: `pivotMerge` (after a keep set was selected, e.g. H2O's heavy + recent: dropped entries
 * merge into the pivot of their merging set when that pivot is kept) and `setMerge` (with
 * `keepAllSelector`: every merging set collapses into its pivot and the best-scoring sets fill the
 * budget).
 */
import type { MergeGroup } from '../cache/decision.ts';
import type { PolicyCache } from '../cache/view.ts';
import { topK } from '../policies/common.ts';
import { HeadLinks, type SimilarityReader } from './merging-links.ts';
import { originSizes, rowDistanceSquared } from './similarity.ts';
import type { HeadDraft, Transform } from './stages.ts';

export interface Run {
  /** first member */
  start: number;
  /** one past the last member */
  end: number;
}

/**
 * The merging set around entry `i` within [lo, hi): extends left while cos(k_{j−1}, k_j) > ε and
 * right likewise. `sim(j)` is the similarity of entry j to entry j − 1.
 */
export function mergingSetAround(sim: SimilarityReader, i: number, lo: number, hi: number, epsilon: number): Run {
  let start = i;
  while (start > lo && sim(start) > epsilon) start--;
  let end = i + 1;
  while (end < hi && sim(end) > epsilon) end++;
  return { start, end };
}

/**
 * The merging sets of [lo, hi) written as boundaries: set u = [starts[u], starts[u + 1]); returns
 * the number of sets (`starts` needs room for it + 1, at most hi − lo + 1).
 */
export function mergingSetStarts(sim: SimilarityReader, lo: number, hi: number, epsilon: number, starts: Int32Array): number {
  let sets = 0;
  for (let j = lo; j < hi; j++) if (j === lo || !(sim(j) > epsilon)) starts[sets++] = j;
  starts[sets] = Math.max(lo, hi);
  return sets;
}

/** Every merging set of [lo, hi) in order (singletons included): the partition at links ≤ ε. */
export function mergingSets(sim: SimilarityReader, lo: number, hi: number, epsilon: number): Run[] {
  const starts = new Int32Array(Math.max(0, hi - lo) + 1);
  const sets = mergingSetStarts(sim, lo, hi, epsilon, starts);
  return Array.from({ length: sets }, (_, u) => ({ start: starts[u], end: starts[u + 1] }));
}

/** The member of [start, end) with the highest score (ties → the older entry; NaN ranks lowest). */
export function pivotOf(scores: ArrayLike<number>, start: number, end: number): number {
  let best = start;
  let value = Number.isNaN(scores[start]) ? -Infinity : scores[start];
  for (let j = start + 1; j < end; j++) {
    const v = scores[j];
    if (v > value) {
      best = j;
      value = v;
    }
  }
  return best;
}

/** How the members' weights are formed: the kernel alone (the paper) or times the tokens each stands for. */
export type KernelWeights = 'kernel' | 'kernel_count';

/**
 * Gaussian-kernel weights of `members` (entry indices, the pivot among them) around `pivot`:
 * w_i ∝ g_i = exp(−‖k_p − k_i‖² / 2σ²) [× tokens_i], normalised to sum 1. σ = `sigma` when > 0,
 * else the mean Euclidean distance of the other members to the pivot; when that is 0 (all keys
 * equal) every g_i is 1. `tokens` (aligned with `members`): the tokens each member stands for.
 */
export function gaussianWeights(keys: ArrayLike<number>, d: number, pivot: number, members: readonly number[], sigma: number, tokens: ArrayLike<number> | null = null): number[] {
  const squared = members.map((m) => (m === pivot ? 0 : rowDistanceSquared(keys, pivot, m, d)));
  let s = sigma;
  if (!(s > 0)) {
    let total = 0;
    let others = 0;
    members.forEach((m, i) => {
      if (m === pivot) return;
      total += Math.sqrt(squared[i]);
      others++;
    });
    s = others > 0 ? total / others : 0;
  }
  const g = squared.map((q, i) => (s > 0 ? Math.exp(-q / (2 * s * s)) : 1) * (tokens ? tokens[i] : 1));
  const z = g.reduce((a, b) => a + b, 0);
  return g.map((x) => x / z);
}

export interface MergingSetOptions {
  /** ε: adjacent entries with key cosine similarity above it share a merging set */
  epsilon: number;
  /** σ of the Gaussian kernel; ≤ 0 = the mean distance of the merged keys to the pivot */
  sigma: number;
  weights: KernelWeights;
  /** the merged entry's count (attention bias log count): its pivot's (no new bias) or the members' total */
  count: 'pivot' | 'members';
  /** stale links per head before they are written back (default LINK_FLUSH; the result is the same) */
  linkFlush?: number;
}

/** One merge group: `others` folded into `pivot` (pivot first), weights per the options. */
export function pivotGroup(cache: PolicyCache, layer: number, kvHead: number, pivot: number, others: readonly number[], options: MergingSetOptions): MergeGroup {
  const members = [pivot, ...others];
  const counts = cache.counts(layer, kvHead);
  // kernel_count: × the tokens a member stands for — its origin, not its count (1 after a merge with merge_bias=none)
  const tokens = options.weights === 'kernel_count' ? originSizes(cache, layer, kvHead, members) : null;
  const weights = gaussianWeights(cache.keys(layer, kvHead), cache.headDim, pivot, members, options.sigma, tokens);
  let count = counts[pivot];
  if (options.count === 'members') for (const m of others) count += counts[m];
  return { members, weights, anchor: pivot, count };
}

/** Whether `value` is in the ascending array `sorted`. */
function contains(sorted: ArrayLike<number>, value: number): boolean {
  let a = 0;
  let b = sorted.length - 1;
  while (a <= b) {
    const m = (a + b) >> 1;
    const x = sorted[m];
    if (x === value) return true;
    if (x < value) a = m + 1;
    else b = m - 1;
  }
  return false;
}

/** The part of a head merging sets may span: [0, n − recent) — the recent window stays as it is. */
function mergeable(head: HeadDraft): number {
  return head.length - Math.min(head.length, Math.max(0, Math.floor(head.budget.recent)));
}

/** The values of [0, hi) missing from the ascending `keep`, ascending: O(m log n) for m of them. */
export function droppedBelow(keep: ArrayLike<number>, hi: number): number[] {
  const out: number[] = [];
  // keep entries below hi
  let a = 0;
  let b = keep.length;
  while (a < b) {
    const m = (a + b) >> 1;
    if (keep[m] < hi) a = m + 1;
    else b = m;
  }
  const end = a;
  if (end === 0) {
    for (let v = 0; v < hi; v++) out.push(v);
    return out;
  }
  for (let v = 0; v < keep[0]; v++) out.push(v);
  const walk = (x: number, y: number): void => {
    // keep[x] < keep[y]: the values strictly between them that keep lacks
    if (keep[y] - keep[x] === y - x) return;
    if (y - x === 1) {
      for (let v = keep[x] + 1; v < keep[y]; v++) out.push(v);
      return;
    }
    const mid = (x + y) >> 1;
    walk(x, mid);
    walk(mid, y);
  };
  if (end > 1) walk(0, end - 1);
  for (let v = keep[end - 1] + 1; v < hi; v++) out.push(v);
  return out;
}

/**
 * After a selector chose `keep` (H2O's heavy + recent): each dropped entry of [0, n − recent)
 * whose merging set has a kept pivot is merged into it (one group per pivot, the pivot leaves
 * `keep` for its group's anchor); the rest stay evicted. The head keeps as many entries as the
 * selector kept.
 */
export function pivotMerge(options: MergingSetOptions): Transform {
  const links = new HeadLinks(options.linkFlush);
  return {
    layer(env, layer, heads) {
      for (const head of heads) {
        const keep = head.keep;
        if (!keep || !head.scores || keep.length >= head.length) continue;
        const scores = head.scores;
        const hi = mergeable(head);
        const dropped = droppedBelow(keep, hi);
        if (dropped.length === 0) continue;
        const sim = links.open(env.cache, layer, head.kvHead, env.column('link')).sim;
        const recalled = new Map<number, number[]>();
        let runEnd = -1;
        let pivot = -1;
        for (const i of dropped) {
          if (i >= runEnd) {
            const run = mergingSetAround(sim, i, 0, hi, options.epsilon);
            runEnd = run.end;
            pivot = run.end - run.start > 1 ? pivotOf(scores, run.start, run.end) : -1;
            if (pivot >= 0 && !contains(keep, pivot)) pivot = -1;
          }
          if (pivot < 0) continue;
          const group = recalled.get(pivot);
          if (group) group.push(i);
          else recalled.set(pivot, [i]);
        }
        links.close();
        if (recalled.size === 0) continue;
        for (const [p, others] of recalled) head.merge.push(pivotGroup(env.cache, layer, head.kvHead, p, others, options));
        const rest = new Int32Array(keep.length - recalled.size);
        for (let i = 0, o = 0; i < keep.length; i++) if (!recalled.has(keep[i])) rest[o++] = keep[i];
        head.keep = rest;
      }
    },
  };
}

/**
 * With `keepAllSelector`: every merging set of [0, n − recent) collapses into its pivot; the
 * `budget.total − recent` sets with the best pivot scores stay (ties → older), the other sets are
 * evicted, the recent window is kept. A head ends with at most its budget (fewer when the sets
 * are fewer than the places).
 */
export function setMerge(options: MergingSetOptions): Transform {
  const links = new HeadLinks(options.linkFlush);
  // per head, reused: set boundaries, pivots and pivot scores
  let starts = new Int32Array(0);
  let pivots = new Int32Array(0);
  let values = new Float64Array(0);
  return {
    layer(env, layer, heads) {
      for (const head of heads) {
        if (!head.keep || !head.scores) continue;
        const scores = head.scores;
        const n = head.length;
        const hi = mergeable(head);
        const places = Math.max(0, Math.floor(head.budget.total) - (n - hi));
        if (starts.length < n + 1) {
          starts = new Int32Array(2 * n + 1);
          pivots = new Int32Array(2 * n);
          values = new Float64Array(2 * n);
        }
        // the sets of [0, hi): sets u = [starts[u], starts[u + 1])
        const sim = links.open(env.cache, layer, head.kvHead, env.column('link')).sim;
        const sets = mergingSetStarts(sim, 0, hi, options.epsilon, starts);
        links.close();
        for (let u = 0; u < sets; u++) {
          pivots[u] = pivotOf(scores, starts[u], starts[u + 1]);
          values[u] = scores[pivots[u]];
        }
        const chosen = topK(values.subarray(0, sets), places, 'older');
        let singles = 0;
        for (const u of chosen) if (starts[u + 1] - starts[u] === 1) singles++;
        const keep = new Int32Array(singles + n - hi);
        let o = 0;
        for (const u of chosen) {
          const start = starts[u];
          const end = starts[u + 1];
          if (end - start === 1) {
            keep[o++] = start;
            continue;
          }
          const others: number[] = [];
          for (let j = start; j < end; j++) if (j !== pivots[u]) others.push(j);
          head.merge.push(pivotGroup(env.cache, layer, head.kvHead, pivots[u], others, options));
        }
        for (let j = hi; j < n; j++) keep[o++] = j;
        head.keep = keep;
      }
    },
  };
}