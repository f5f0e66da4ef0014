/**
 * Chunked soft matching (Chelsea, Hu et al., 2025, https://arxiv.org/abs/2506.11418; ToMe's
 * bipartite soft matching, Bolya et al., 2023, https://arxiv.org/abs/2210.09461, is the origin of
 * the idea): a merge stage that folds a head over its budget into centroids of similar keys.
 * policies/chelsea.ts has the reading. This file holds the pure pieces, reusable by other
 * methods: chunk runs, A/B matching, edge order and grouping, and the from-scratch multi-round
 * matching (softMatchRounds). soft-matching-online.ts holds the incremental per-entry edge state
 * (column, stamps, recompute) and the merge transform built on them.
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
 */
import { rowCosine, rowNorm } from './similarity.ts';

export type SoftMatchRank = 'head' | 'chunk';
export type SoftMatchBias = 'log_count' | 'none';

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
export function groupEdges(taken: readonly Edge[]): Map<number, number[]> {
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
