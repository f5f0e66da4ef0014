/**
 * Merging sets (KVMerger, Wang et al., 2024, https://arxiv.org/abs/2407.08454; policies/kvmerger.ts
 * has the reading): runs of adjacent entries of one head whose consecutive key cosine similarity
 * exceeds ε, each merged into its pivot — the member with the highest score — with Gaussian-kernel
 * weights w_i ∝ exp(−‖k_p − k_i‖² / 2σ²), keys and values alike (the store computes Σ w·member).
 *
 * Consecutive similarities are kept incrementally in a store column (declared by the scorer,
 * `withLinkColumns`), so they are journaled with everything else and follow the entries through
 * eviction, merges, snapshots and forks: `link` = [sim, stamp, predecessor token] per entry,
 * reduce `sum`, initial 2, with sim = cos(k_{j−1}, k_j) (0 for the first entry) and stamp 1 once
 * computed. An entry's row is stale when its stamp is not 1 — new entries start at 2 and a merged
 * entry sums its members' stamps (≥ 2). A stored link is valid when its row and its predecessor's
 * row are current and its predecessor is the entry it was computed with (not after an eviction in
 * between); otherwise it is recomputed, O(d). Links are read on demand (`HeadLinks`): a decode
 * step reads those around the entries it drops, and writes back a head's stale links (one full
 * pass, `refreshLinks`) only once `LINK_FLUSH` reads had to recompute — a write copies the column
 * into the transaction, so most steps write none. The similarities are the same either way. Not
 * tracked: keys rewritten in place by an earlier member of a composition (re-encoded, re-rotated);
 * their links keep the similarity of the keys as this method first saw them.
 *
 * Stages: `pivotMerge` (after a keep set was selected, e.g. H2O's heavy + recent: dropped entries
 * merge into the pivot of their merging set when that pivot is kept) and `setMerge` (with
 * `keepAllSelector`: every merging set collapses into its pivot and the best-scoring sets fill the
 * budget).
 */
import type { MergeGroup } from '../cache/decision.ts';
import type { ColumnSpec, PolicyCache } from '../cache/view.ts';
import { topK } from '../policies/common.ts';
import type { ReadonlyFloat32Array } from '../types.ts';
import { originSizes, rowDistanceSquared, rowDot, rowNorm } from './similarity.ts';
import type { HeadDraft, Scorer, Transform } from './stages.ts';

/** Values per entry in the `link` column: [sim, stamp, predecessor token]. */
export const LINK_WIDTH = 3;
const SEEN = 1;
const UNSEEN = 2;

/** The column consecutive similarities live in (name unprefixed). */
export const LINK_COLUMNS: readonly ColumnSpec[] = [{ name: 'link', width: LINK_WIDTH, reduce: 'sum', initial: UNSEEN }];

/** A scorer that also declares the link column (the pipeline declares only the scorer's columns). */
export function withLinkColumns(scorer: Scorer): Scorer {
  return { ...scorer, columns: [...scorer.columns, ...LINK_COLUMNS] };
}

/** cos(k_{j−1}, k_j) of a head's keys ([n, d] rows); 0 for the first entry or a zero key. */
function linkOf(keys: ReadonlyFloat32Array, j: number, d: number): number {
  if (j === 0) return 0;
  const product = rowNorm(keys, j - 1, d) * rowNorm(keys, j, d);
  return product > 0 ? rowDot(keys, j - 1, j, d) / product : 0;
}

/**
 * Stale links are written back to the column once a head has this many: below it they are
 * recomputed on each call (O(d) each) rather than copying the column into the transaction at
 * every decode step. The similarities returned are the same either way.
 */
export const LINK_FLUSH = 16;

/** Buffers `refreshLinks` reuses between calls (one head at a time). */
export interface LinkScratch {
  sims: Float64Array;
  stale: Int32Array;
}

export function linkScratch(): LinkScratch {
  return { sims: new Float64Array(0), stale: new Int32Array(0) };
}

/**
 * One head's consecutive similarities, up to date: `sims[j]` = cos(k_{j−1}, k_j) (0 for j = 0).
 * Links found stale are recomputed, and written to the `link` column when there are
 * `LINK_FLUSH` or more. The array is `scratch`'s, valid until its next use.
 */
export function refreshLinks(cache: PolicyCache, layer: number, kvHead: number, linkName: string, scratch: LinkScratch = linkScratch(), flush = LINK_FLUSH): Float64Array {
  const n = cache.length(layer, kvHead);
  const links = cache.column(layer, kvHead, linkName);
  const tokens = cache.tokens(layer, kvHead);
  if (scratch.sims.length < n) {
    const size = Math.max(n, 2 * scratch.sims.length);
    scratch.sims = new Float64Array(size);
    scratch.stale = new Int32Array(size);
  }
  const sims = scratch.sims;
  const relink = scratch.stale;
  // a link is stale when its entry's row is, its predecessor's row is, or the predecessor changed
  let count = 0;
  let previous = false;
  let predecessor = -1;
  for (let j = 0, b = 0; j < n; j++, b += LINK_WIDTH) {
    const stale = links[b + 1] !== SEEN;
    if (stale || previous || links[b + 2] !== predecessor) relink[count++] = j;
    else sims[j] = links[b];
    previous = stale;
    predecessor = tokens[j];
  }
  if (count > 0) {
    const d = cache.headDim;
    const keys = cache.keys(layer, kvHead);
    const out = count >= flush ? cache.writeColumn(layer, kvHead, linkName) : null;
    for (let x = 0; x < count; x++) {
      const j = relink[x];
      const sim = linkOf(keys, j, d);
      sims[j] = sim;
      if (!out) continue;
      const b = j * LINK_WIDTH;
      out[b] = sim;
      out[b + 1] = SEEN;
      out[b + 2] = j > 0 ? tokens[j - 1] : -1;
    }
  }
  return sims.subarray(0, n);
}

/** Reads the similarity of entry j to entry j − 1 (mergingSetAround, mergingSets). */
export type SimilarityReader = (j: number) => number;

/**
 * One head's consecutive similarities read on demand: a stored link is used when valid (its row
 * and its predecessor's row are current and the predecessor is the same entry), otherwise it is
 * recomputed, O(d). A head whose reads recomputed `flush` or more links is refreshed in full
 * (`refreshLinks`) when closed, so later reads find them stored. Stored rows are only ever
 * written by that full refresh, which rewrites a row together with its successor's link: a
 * valid row therefore always holds the similarity to its current predecessor.
 */
export class HeadLinks {
  private cache: PolicyCache | null = null;
  private layer = 0;
  private kvHead = 0;
  private name = '';
  private links: ArrayLike<number> = [];
  private tokens: ArrayLike<number> = [];
  private keys: ReadonlyFloat32Array = new Float32Array(0);
  private d = 1;
  private recomputed = 0;
  private readonly scratch = linkScratch();
  /** this head's reader, bound once */
  readonly sim: SimilarityReader = (j) => this.read(j);

  constructor(private readonly flush = LINK_FLUSH) {}

  open(cache: PolicyCache, layer: number, kvHead: number, linkName: string): this {
    this.cache = cache;
    this.layer = layer;
    this.kvHead = kvHead;
    this.name = linkName;
    this.links = cache.column(layer, kvHead, linkName);
    this.tokens = cache.tokens(layer, kvHead);
    this.keys = cache.keys(layer, kvHead);
    this.d = cache.headDim;
    this.recomputed = 0;
    return this;
  }

  private read(j: number): number {
    const links = this.links;
    const b = j * LINK_WIDTH;
    if (links[b + 1] === SEEN && (j === 0 ? links[b + 2] === -1 : links[b + 1 - LINK_WIDTH] === SEEN && links[b + 2] === this.tokens[j - 1])) return links[b];
    this.recomputed++;
    return linkOf(this.keys, j, this.d);
  }

  /** Ends the head's reads; writes its stale links back when enough were recomputed. */
  close(): void {
    if (this.cache && this.recomputed >= this.flush) refreshLinks(this.cache, this.layer, this.kvHead, this.name, this.scratch, 0);
    this.cache = null;
  }
}

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
