/**
 * Chunked soft matching, online part (Chelsea; the algorithm and its pure pieces are in
 * soft-matching.ts): the incremental per-entry edge state kept in a store column, the stage's
 * Scorer that declares it, and the merge transform (chunkedSoftMatching) that reads it.
 *
 * Incremental state (a store column, so transactions, snapshots and forks keep it exact): per
 * entry [similarity of its edge, stamp, partner offset], reduce `sum`. The stamp is
 * L + size·2¹⁶ + rank (its rank in its run, the run's size; L = 2⁵⁰), valid only in
 * [L, L + 2³²). New entries start at 4L and a merge sums its members' stamps (≥ 2L), so an entry
 * is current only if its edge was computed and it has not been merged since. A run is current
 * when every entry's stamp still says its rank and the run's size; the others are recomputed
 * (a decode step changes one or two small runs: the one the entry leaving the recent window
 * joins, the one a merge touched) and written back once enough of them have piled up. The result
 * is the same as recomputing every run (tests check it). Not tracked: keys rewritten in place by
 * an earlier member of a composition (re-encoded, re-rotated) leave the stamps as they were, so
 * their edges keep the similarity of the keys as this method first saw them.
 */
import type { ColumnSpec } from '../cache/view.ts';
import { indexRange } from '../policies/types.ts';
import { originSizes, rowNorm } from './similarity.ts';
import { groupEdges, matchRange, protectedSpan, softMatchRounds, takeEdges, type Edge, type SoftMatchBias, type SoftMatchRank, type SoftMerge } from './soft-matching.ts';
import type { HeadDraft, Scorer, StageEnv, Transform } from './stages.ts';

export interface SoftMatchOptions {
  /** chunk length c in positions */
  chunk: number;
  /** first entries never merged (clamped to fit the budget, see protectedSpan) */
  sinks: number;
  /** last entries never merged (clamped likewise) */
  recent: number;
  rank: SoftMatchRank;
  bias: SoftMatchBias;
  /** merges made at once when a head goes over its budget (it then holds B − batch + 1): 1 = every step */
  batch: number;
}

/** The stage's column (unprefixed name) and its spec. */
export const MATCH_COLUMN = 'match';
const WIDTH = 3;
const STAMP_BASE = 2 ** 50;
const FIELD = 2 ** 16;
export const SOFT_MATCH_COLUMNS: readonly ColumnSpec[] = [{ name: MATCH_COLUMN, width: WIDTH, reduce: 'sum', initial: 4 * STAMP_BASE }];

/** The stamp of an entry at `rank` in a run of `size` (both < 2¹⁶). */
export function matchStamp(size: number, rank: number): number {
  return STAMP_BASE + size * FIELD + rank;
}

/** 0, 1, 2, … (grown on demand): run-local row lists without allocating. */
let ascending = new Int32Array(64).map((_, i) => i);
/** An ascending list 0, 1, … of at least n (the whole scratch array: no view allocated). */
function rowsUpTo(n: number): Int32Array {
  if (ascending.length < n) ascending = new Int32Array(Math.max(n, 2 * ascending.length)).map((_, i) => i);
  return ascending;
}

let marks = new Uint8Array(0);
/** A zeroed scratch of at least n flags (callers clear what they set). */
function markScratch(n: number): Uint8Array {
  if (marks.length < n) marks = new Uint8Array(Math.max(n, 2 * marks.length));
  return marks;
}

/**
 * One head's current edges: `offset[a]` ≠ 0 makes entry a (in [from, to)) an A with an edge to
 * a + offset[a] of similarity `similarity[a]`. The arrays are scratch, longer than the head.
 */
export interface HeadEdges {
  similarity: Float64Array;
  offset: Int32Array;
  /** edges in [from, to) */
  count: number;
  /** runs recomputed by this call, and whether they were written to the column */
  recomputed: number;
  written: boolean;
}

// scratch for refreshEdges (valid until its next call; the stage runs synchronously)
let scratchSimilarity = new Float64Array(0);
let scratchOffset = new Int32Array(0);
let scratchPartner = new Int32Array(0);
let scratchNorms = new Float64Array(0);

/**
 * Brings a head's edges over its mergeable range [from, to) up to date: runs whose stored stamps
 * are current are read from the column, the others recomputed. Recomputed runs are written back
 * (one copy of the column) once what they cost to recompute — A·B pairs + 1 per run — reaches
 * `persistCost` (default max(16, n/8), about what the copy costs), so a decode step, which changes
 * one or two small runs, usually costs a few cosines and no copy; the result is the same either
 * way.
 */
export function refreshEdges(env: StageEnv, layer: number, kvHead: number, from: number, to: number, chunk: number, persistCost?: number): HeadEdges {
  const { cache } = env;
  const d = cache.headDim;
  const n = cache.length(layer, kvHead);
  const name = env.column(MATCH_COLUMN);
  const positions = cache.positions(layer, kvHead);
  const keys = cache.keys(layer, kvHead);
  const stored = cache.column(layer, kvHead, name);
  if (scratchOffset.length < n) {
    const size = Math.max(n, 2 * scratchOffset.length);
    scratchSimilarity = new Float64Array(size);
    scratchOffset = new Int32Array(size);
    scratchPartner = new Int32Array(size);
    scratchNorms = new Float64Array(size);
  }
  const partner = scratchPartner;
  const norms = scratchNorms;
  const rows = rowsUpTo(n);
  const similarity = scratchSimilarity;
  const offset = scratchOffset;
  offset.fill(0, from, to);
  const dirty: number[] = [];
  let cost = 0;
  let count = 0;
  for (let i = from; i < to; ) {
    // the run: following entries in the same chunk [lo, hi) of positions
    const lo = Math.floor(positions[i] / chunk) * chunk;
    const hi = lo + chunk;
    let end = i + 1;
    while (end < to && positions[end] >= lo && positions[end] < hi) end++;
    const size = end - i;
    if (size > 1) count += (size + 1) >> 1;
    let current = size < FIELD;
    const stamp = STAMP_BASE + size * FIELD - i;
    for (let k = i; k < end && current; k++) current = stored[WIDTH * k + 1] === stamp + k;
    if (current) {
      for (let k = i; k < end; k++) {
        similarity[k] = stored[WIDTH * k];
        offset[k] = stored[WIDTH * k + 2];
      }
    } else if (size > 1) {
      for (let k = i; k < end; k++) norms[k] = rowNorm(keys, k, d);
      matchRange(keys, d, norms, rows, i, end, partner, similarity);
      for (let k = i; k < end; k += 2) offset[k] = partner[k] - k;
    }
    if (!current) {
      dirty.push(i, end);
      cost += ((size + 1) >> 1) * (size >> 1) + 1;
    }
    i = end;
  }
  const written = dirty.length > 0 && cost >= (persistCost ?? Math.max(16, n >> 3));
  if (written) {
    const w = cache.writeColumn(layer, kvHead, name);
    for (let x = 0; x < dirty.length; x += 2) {
      const i = dirty[x];
      const end = dirty[x + 1];
      // (a run too long for the stamp's fields is recomputed every time)
      if (end - i >= FIELD) continue;
      for (let k = i; k < end; k++) {
        w[WIDTH * k] = offset[k] !== 0 ? similarity[k] : 0;
        w[WIDTH * k + 1] = matchStamp(end - i, k - i);
        w[WIDTH * k + 2] = offset[k];
      }
    }
  }
  return { similarity, offset, count, recomputed: dirty.length / 2, written };
}

/** The current edges of [from, to) as a list (run = the run's place among the range's runs). */
function edgeList(edges: HeadEdges, positions: ArrayLike<number>, from: number, to: number, chunk: number): Edge[] {
  const out: Edge[] = [];
  let run = -1;
  let id = NaN;
  for (let i = from; i < to; i++) {
    const c = Math.floor(positions[i] / chunk);
    if (c !== id) {
      run++;
      id = c;
    }
    if (edges.offset[i] !== 0) out.push({ a: i, b: i + edges.offset[i], similarity: edges.similarity[i], run });
  }
  return out;
}

/**
 * The first `k` current edges of [from, to) in merge order, without sorting every edge: for
 * `head`, the k best by similarity (ties → the earlier A); for `chunk`, the k best of the runs'
 * best edges — takeEdges' order as long as k runs have an edge (else null: use takeEdges).
 * One scan keeping a sorted top-k (decode steps ask for one to a few).
 */
function topEdges(edges: HeadEdges, positions: ArrayLike<number>, from: number, to: number, chunk: number, k: number, rank: SoftMatchRank): Edge[] | null {
  const { similarity, offset } = edges;
  const index: number[] = new Array<number>(k).fill(0);
  const top: number[] = new Array<number>(k).fill(-Infinity);
  let size = 0;
  const offer = (i: number, u: number) => {
    // an equal similarity ranks after the earlier A already held
    if (size === k && !(u > top[k - 1])) return;
    let p = size < k ? size++ : k - 1;
    while (p > 0 && u > top[p - 1]) {
      top[p] = top[p - 1];
      index[p] = index[p - 1];
      p--;
    }
    top[p] = u;
    index[p] = i;
  };
  if (rank === 'head') {
    for (let i = from; i < to; i++) if (offset[i] !== 0) offer(i, similarity[i]);
  } else {
    let best = -1;
    let id = NaN;
    for (let i = from; i < to; i++) {
      const c = Math.floor(positions[i] / chunk);
      if (c !== id) {
        if (best >= 0) offer(best, similarity[best]);
        best = -1;
        id = c;
      }
      if (offset[i] !== 0 && (best < 0 || similarity[i] > similarity[best])) best = i;
    }
    if (best >= 0) offer(best, similarity[best]);
    if (size < k) return null;
  }
  const out: Edge[] = [];
  for (let x = 0; x < size; x++) out.push({ a: index[x], b: index[x] + offset[index[x]], similarity: top[x], run: 0 });
  return out;
}

/**
 * The soft-matching stage's column as a Scorer. It reports no per-entry scores (a merge method has
 * no keep ranking; the trace records each merge's members and their similarity to the centroid).
 */
export function softMatchingState(): Scorer {
  return {
    columns: SOFT_MATCH_COLUMNS,
    withoutHistory: 'needs no history: chunk matches are computed from the keys in the cache on the first decision',
    headScores: () => null,
  };
}

/** What a decision merged, for the note. */
export interface SoftMatchTally {
  /** entries merged away (members − 1 per group) */
  merged: number;
  /** centroids made or grown */
  groups: number;
  /** heads that needed more than one round */
  rounds: number;
}

/**
 * The merge transform: every head over its budget B (after keepAllSelector) merges down to
 * B − batch + 1 entries by chunked soft matching. Incremental when one round suffices (the stored
 * edges), from scratch otherwise (softMatchRounds).
 */
export function chunkedSoftMatching(options: SoftMatchOptions): Transform & { readonly tally: SoftMatchTally } {
  const tally: SoftMatchTally = { merged: 0, groups: 0, rounds: 0 };
  const mergeHead = (env: StageEnv, layer: number, head: HeadDraft) => {
    const { cache } = env;
    const n = head.length;
    const budget = Math.max(1, Math.floor(head.budget.total));
    if (n <= budget || !head.keep) return;
    const span = protectedSpan(budget, options.sinks, options.recent);
    const from = span.sinks;
    const to = n - span.recent;
    // a head over its budget merges down to B − (batch − 1), never below one merged entry
    const excess = Math.min(n - budget + options.batch - 1, to - from - 1);
    const edges = refreshEdges(env, layer, head.kvHead, from, to, options.chunk);
    const count = edges.count;
    let merges: SoftMerge[];
    if (excess <= count) {
      // one round on the current edges: a top-k scan, or every edge sorted when it cannot tell
      const positions = cache.positions(layer, head.kvHead);
      const taken =
        (excess <= 64 ? topEdges(edges, positions, from, to, options.chunk, excess, options.rank) : null) ??
        takeEdges(edgeList(edges, positions, from, to, options.chunk), excess, options.rank);
      merges = [...groupEdges(taken)].map(([b, group]) => ({ members: group.sort((x, y) => x - y), anchor: b }));
    } else {
      merges = [];
    }
    if (merges.length === 0 || excess > count) {
      const sizes = originSizes(cache, layer, head.kvHead, indexRange(0, n));
      merges = softMatchRounds(cache.keys(layer, head.kvHead), cache.headDim, cache.positions(layer, head.kvHead), sizes, from, to, options.chunk, excess, options.rank);
      tally.rounds++;
    }
    if (merges.length === 0) return;
    merges.sort((x, y) => x.anchor - y.anchor);
    const out = markScratch(n);
    for (const { members, anchor } of merges) {
      const sizes = originSizes(cache, layer, head.kvHead, members);
      const total = sizes.reduce((a, b) => a + b, 0);
      head.merge.push({ members, weights: Array.from(sizes, (s) => s / total), anchor, count: options.bias === 'log_count' ? total : 1 });
      for (const i of members) out[i] = 1;
      tally.merged += members.length - 1;
      tally.groups++;
    }
    // the members leave `keep` (compacted in place: the selector's array is the draft's own);
    // then the marks are cleared for the next head
    const keep = head.keep;
    let kept = 0;
    for (let i = 0; i < keep.length; i++) if (!out[keep[i]]) keep[kept++] = keep[i];
    for (const { members } of merges) for (const i of members) out[i] = 0;
    head.keep = keep.subarray(0, kept);
  };
  return {
    tally,
    layer(env, layer, heads) {
      if (layer === 0) {
        tally.merged = 0;
        tally.groups = 0;
        tally.rounds = 0;
      }
      for (const head of heads) mergeHead(env, layer, head);
    },
  };
}