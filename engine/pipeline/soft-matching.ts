/**
 * Chunked soft matching (Chelsea, Hu et al., 2025, https://arxiv.org/abs/2506.11418; ToMe's
 * bipartite soft matching, Bolya et al., 2023, https://arxiv.org/abs/2210.09461, is the origin of
 * the idea): a merge stage that folds a head over its budget into centroids of similar keys.
 * policies/chelsea.ts has the reading; this file is the mechanism, reusable by other methods.
 *
 *   chunks    the mergeable entries (all but the first `sinks` and the last `recent`) are cut into
 *             runs of consecutive entries whose RoPE position falls in the same chunk
 *             ⌊pos / c⌋. A merged entry sits at its anchor's position, so chunk boundaries never
 *             move as the cache changes (stable for incremental work).
 *   A / B     inside a run, entries alternate by rank: even ranks are A, odd ranks B (ToMe's
 *             a = x[::2], b = x[1::2]).
 *   edges     each A entry links to its most similar B entry of the run (cosine of keys; ties →
 *             the earlier B).
 *   merges    to shed e entries, the first e edges are taken (`rank=chunk`: every run's best edge
 *             first, then every run's second best, … — the same number of merges per chunk;
 *             `rank=head`: by similarity over the whole head); each taken A entry merges into its B
 *             (several A's may merge into one B, as in ToMe). When a round has fewer edges than
 *             merges still needed, every edge is taken and another round runs on the centroids;
 *             when no run has two entries left, chunks double (c·2, c·4, …) so neighbouring chunks
 *             merge — so any budget ≥ 1 is reached.
 *   centroid  each group's members are weighted by the tokens they already stand for (origin
 *             length), so K and V are the exact mean of every token merged so far, however often a
 *             centroid is merged again; the merged entry takes the B (anchor) entry's place and
 *             position; count = the tokens it stands for (bias log count) or 1 (`bias=none`).
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
import type { ColumnSpec, PolicyCache } from '../cache/view.ts';
import { indexRange } from '../policies/types.ts';
import { originSizes, rowCosine, rowNorm } from './similarity.ts';
import type { HeadDraft, Scorer, StageEnv, Transform } from './stages.ts';

export type SoftMatchRank = 'head' | 'chunk';
export type SoftMatchBias = 'log_count' | 'none';

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

/** An A → B link: `a` and `b` index the rows (entries or clusters) matched, `run` the run they are in. */
export interface Edge {
  a: number;
  b: number;
  similarity: number;
  run: number;
}

/** A merge the stage asks for: members ascending (entry indices), the B entry as anchor. */
export interface SoftMerge {
  members: number[];
  anchor: number;
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

/**
 * Sinks and recent window that fit budget B: at most B − 1 protected entries (sinks first), so at
 * least one merged entry can stand for the rest and every head ends within B.
 */
export function protectedSpan(budget: number, sinks: number, recent: number): { sinks: number; recent: number } {
  const room = Math.max(0, Math.floor(budget) - 1);
  const s = Math.min(sinks, room);
  return { sinks: s, recent: Math.min(recent, room - s) };
}

/**
 * Runs of consecutive rows in `order` (row indices, in cache order) whose position lies in the same
 * chunk ⌊pos / chunk⌋: [start, end) offsets into `order`.
 */
export function chunkRuns(positions: ArrayLike<number>, order: ArrayLike<number>, chunk: number): [number, number][] {
  const runs: [number, number][] = [];
  let start = 0;
  let id = 0;
  for (let k = 0; k < order.length; k++) {
    const c = Math.floor(positions[order[k]] / chunk);
    if (k === 0) id = c;
    else if (c !== id) {
      runs.push([start, k]);
      start = k;
      id = c;
    }
  }
  if (order.length > 0) runs.push([start, order.length]);
  return runs;
}

/**
 * Soft matching inside one run, rows[start..end) in order: even ranks are A, odd ranks B; each A
 * row a gets its most similar B (cosine of keys; ties → the earlier B) in partner[a] and
 * similarity[a] (arrays indexed by row). No allocation: the decode path calls it every step.
 */
export function matchRange(
  keys: ArrayLike<number>,
  d: number,
  norms: ArrayLike<number>,
  rows: ArrayLike<number>,
  start: number,
  end: number,
  partner: Int32Array,
  similarity: Float64Array,
): void {
  for (let r = start; r < end; r += 2) {
    const a = rows[r];
    let best = -1;
    let top = -Infinity;
    for (let q = start + 1; q < end; q += 2) {
      const u = rowCosine(keys, a, rows[q], d, norms);
      if (u > top) {
        top = u;
        best = rows[q];
      }
    }
    partner[a] = best;
    similarity[a] = top;
  }
}

/** matchRange's edges as a list: one per A of a run of two or more (`rows` in order). */
export function matchRun(keys: ArrayLike<number>, d: number, norms: ArrayLike<number>, rows: ArrayLike<number>, run: number): Edge[] {
  let top = 0;
  for (let r = 0; r < rows.length; r++) top = Math.max(top, rows[r] + 1);
  const partner = new Int32Array(top).fill(-1);
  const similarity = new Float64Array(top);
  matchRange(keys, d, norms, rows, 0, rows.length, partner, similarity);
  const edges: Edge[] = [];
  for (let r = 0; r < rows.length; r += 2) if (partner[rows[r]] >= 0) edges.push({ a: rows[r], b: partner[rows[r]], similarity: similarity[rows[r]], run });
  return edges;
}

/** Best first by similarity (ties → the earlier A). */
function bySimilarity(x: Edge, y: Edge): number {
  return y.similarity - x.similarity || x.a - y.a;
}

/**
 * The first `count` edges in merge order: `head` — by similarity over all edges; `chunk` — every
 * run's best edge, then every run's second best, … (by similarity within each tier).
 */
export function takeEdges(edges: readonly Edge[], count: number, rank: SoftMatchRank): Edge[] {
  if (count <= 0) return [];
  if (count === 1) {
    // the best edge is the same under both orders: one scan
    let best: Edge | null = null;
    for (const e of edges) if (!best || bySimilarity(e, best) < 0) best = e;
    return best ? [best] : [];
  }
  const sorted = [...edges].sort(bySimilarity);
  if (rank === 'chunk') {
    const seen = new Map<number, number>();
    const tier = new Map<Edge, number>();
    for (const e of sorted) {
      const t = seen.get(e.run) ?? 0;
      seen.set(e.run, t + 1);
      tier.set(e, t);
    }
    sorted.sort((x, y) => tier.get(x)! - tier.get(y)! || bySimilarity(x, y));
  }
  return sorted.slice(0, count);
}

/** Groups taken edges by their B: each B with the A's merging into it, members ascending. */
function groupEdges(taken: readonly Edge[]): Map<number, number[]> {
  const into = new Map<number, number[]>();
  for (const e of taken) {
    const group = into.get(e.b) ?? [e.b];
    group.push(e.a);
    into.set(e.b, group);
  }
  return into;
}

/**
 * Chunked soft matching from scratch on rows `from..to−1` of a head: rounds of matching until
 * `merges` entries are merged away (each round takes the best edges, at most as many as are
 * still needed; chunks double when no run has two entries). `sizes[i]` are the tokens entry i
 * stands for (the centroid weights). Returns the merges as groups of original entries.
 */
export function softMatchRounds(
  keys: ArrayLike<number>,
  d: number,
  positions: ArrayLike<number>,
  sizes: ArrayLike<number>,
  from: number,
  to: number,
  chunk: number,
  merges: number,
  rank: SoftMatchRank,
): SoftMerge[] {
  const m = Math.max(0, to - from);
  // cluster k starts as entry from + k; merged clusters keep their B's id (= its place in order)
  const rows = new Float64Array(m * d);
  for (let i = 0; i < m * d; i++) rows[i] = keys[from * d + i];
  const norms = new Float64Array(m);
  const pos = new Float64Array(m);
  const weight = new Float64Array(m);
  const members: number[][] = [];
  for (let k = 0; k < m; k++) {
    norms[k] = rowNorm(rows, k, d);
    pos[k] = positions[from + k];
    weight[k] = sizes[from + k];
    members.push([from + k]);
  }
  let alive: number[] = Array.from({ length: m }, (_, k) => k);
  let remaining = Math.min(merges, Math.max(0, m - 1));
  let width = chunk;
  while (remaining > 0 && alive.length > 1) {
    const edges: Edge[] = [];
    chunkRuns(pos, alive, width).forEach(([s, e], run) => edges.push(...matchRun(rows, d, norms, alive.slice(s, e), run)));
    if (edges.length === 0) {
      width *= 2;
      continue;
    }
    const taken = takeEdges(edges, remaining, rank);
    const gone = new Set<number>();
    for (const [b, group] of groupEdges(taken)) {
      // centroid of the clusters, weighted by the tokens each stands for: the mean of every token
      const sum = new Float64Array(d);
      let total = 0;
      for (const k of group) {
        for (let c = 0; c < d; c++) sum[c] += weight[k] * rows[k * d + c];
        total += weight[k];
      }
      for (let c = 0; c < d; c++) rows[b * d + c] = sum[c] / total;
      norms[b] = rowNorm(rows, b, d);
      weight[b] = total;
      for (const k of group) {
        if (k === b) continue;
        members[b].push(...members[k]);
        gone.add(k);
      }
    }
    alive = alive.filter((k) => !gone.has(k));
    remaining -= taken.length;
  }
  const out: SoftMerge[] = [];
  for (const k of alive) if (members[k].length > 1) out.push({ members: [...members[k]].sort((a, b) => a - b), anchor: from + k });
  return out;
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
