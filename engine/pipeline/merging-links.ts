/**
 * Incremental links of KVMerger's merging sets (merging-sets.ts has the sets, pivots, weights and
 * stages): consecutive key similarities cos(k_{j−1}, k_j) per head, kept in a journaled store
 * column and read on demand (`HeadLinks`) or refreshed in full (`refreshLinks`).
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
 */
import type { ColumnSpec, PolicyCache } from '../cache/view.ts';
import type { ReadonlyFloat32Array } from '../types.ts';
import { rowDot, rowNorm } from './similarity.ts';
import type { Scorer } from './stages.ts';

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
