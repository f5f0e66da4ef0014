/**
 * Storage of one KV head of one layer: parallel typed arrays (`HeadData`), `length` entries used
 * out of `capacity`, grown by doubling. Appending, compaction (copyWithin over runs) and graph
 * feeds touch no per-entry JS objects; origins (after merges), codecs and hidden flags, rare, live
 * in lazily created side arrays. Declared per-entry columns (view.ts ColumnSpec) are Float64Arrays
 * of width × capacity.
 */
import type { EntryCodec, ExactEntry } from './decision.ts';
import type { ColumnSpec } from './view.ts';

/** An entry's codec as the store keeps it: with the K/V the model computed before it (apply.ts). Never mutated. */
export interface StoredCodec extends EntryCodec {
  exact?: ExactEntry;
}

/**
 * The stored form of a policy's codec: every field in one fixed order, so all stored codecs share
 * one V8 shape and the per-entry reads of every step (memory report, live groups) stay
 * monomorphic — spread copies with differing optional keys made them ~10× slower.
 */
export function storedCodec(codec: EntryCodec, exact: ExactEntry | undefined): StoredCodec {
  return {
    name: codec.name,
    kBits: codec.kBits,
    vBits: codec.vBits,
    kElements: codec.kElements,
    vElements: codec.vElements,
    kMetaBytes: codec.kMetaBytes,
    vMetaBytes: codec.vMetaBytes,
    group: codec.group,
    groupSize: codec.groupSize,
    rank: codec.rank,
    kOutliers: codec.kOutliers,
    vOutliers: codec.vOutliers,
    kPruned: codec.kPruned,
    exact,
  };
}

export interface HeadData {
  capacity: number;
  /** [capacity, headDim] post-RoPE keys and values */
  keys: Float32Array;
  values: Float32Array;
  /** RoPE position, first origin token and token count of each entry */
  pos: Int32Array;
  token: Int32Array;
  count: Int32Array;
  /** score the policy attached (NaN where none), for views */
  score: Float32Array;
  /** one per declared column, [capacity, width] */
  columns: Float64Array[];
  /** null, or per entry the origin list (null = just [token[i]]) */
  origins: (readonly number[] | null)[] | null;
  /** null, or per entry its codec (null = fp32) */
  codecs: (StoredCodec | null)[] | null;
  /** null, or 1 per entry hidden from the next forward */
  hidden: Uint8Array | null;
}

export function makeHeadData(capacity: number, headDim: number, columns: readonly ColumnSpec[]): HeadData {
  return {
    capacity,
    keys: new Float32Array(capacity * headDim),
    values: new Float32Array(capacity * headDim),
    pos: new Int32Array(capacity),
    token: new Int32Array(capacity),
    count: new Int32Array(capacity),
    score: new Float32Array(capacity),
    columns: columns.map((c) => new Float64Array(capacity * c.width)),
    origins: null,
    codecs: null,
    hidden: null,
  };
}

export class HeadStore {
  length = 0;
  data: HeadData;
  /** entries whose count ≠ 1, so bias building can skip log(count) when there are none */
  mergedEntries = 0;
  /** entries flagged hidden, so bias building can skip the check when there are none */
  hiddenEntries = 0;

  constructor(
    readonly headDim: number,
    capacity: number,
    columns: readonly ColumnSpec[],
  ) {
    this.data = makeHeadData(Math.max(1, capacity), headDim, columns);
  }

  /** Grows to hold `needed` entries: new arrays (the old ones stay intact for a transaction's undo). */
  ensureCapacity(needed: number, columns: readonly ColumnSpec[]): void {
    const old = this.data;
    if (needed <= old.capacity) return;
    let capacity = old.capacity;
    while (capacity < needed) capacity *= 2;
    const d = this.headDim;
    const n = this.length;
    const next = makeHeadData(capacity, d, columns);
    next.keys.set(old.keys.subarray(0, n * d));
    next.values.set(old.values.subarray(0, n * d));
    next.pos.set(old.pos.subarray(0, n));
    next.token.set(old.token.subarray(0, n));
    next.count.set(old.count.subarray(0, n));
    next.score.set(old.score.subarray(0, n));
    columns.forEach((c, k) => next.columns[k].set(old.columns[k].subarray(0, n * c.width)));
    if (old.origins) next.origins = old.origins.slice(0, n);
    if (old.codecs) next.codecs = old.codecs.slice(0, n);
    if (old.hidden) {
      next.hidden = new Uint8Array(capacity);
      next.hidden.set(old.hidden.subarray(0, n));
    }
    this.data = next;
  }

  origin(index: number): readonly number[] {
    return this.data.origins?.[index] ?? [this.data.token[index]];
  }

  truncate(length: number): void {
    this.length = length;
    const { origins, codecs } = this.data;
    if (origins && origins.length > length) origins.length = length;
    if (codecs && codecs.length > length) codecs.length = length;
  }

  recount(): void {
    const { count, hidden } = this.data;
    let merged = 0;
    let hiddenEntries = 0;
    for (let i = 0; i < this.length; i++) {
      if (count[i] !== 1) merged++;
      if (hidden && hidden[i]) hiddenEntries++;
    }
    this.mergedEntries = merged;
    this.hiddenEntries = hiddenEntries;
  }
}

/** Moves entries [from, from+n) to [to, to+n) within one head's arrays (overlap allowed). Side arrays are the caller's. */
export function moveEntries(data: HeadData, from: number, to: number, n: number, headDim: number, columns: readonly ColumnSpec[]): void {
  if (n <= 0 || from === to) return;
  const d = headDim;
  data.keys.copyWithin(to * d, from * d, (from + n) * d);
  data.values.copyWithin(to * d, from * d, (from + n) * d);
  data.pos.copyWithin(to, from, from + n);
  data.token.copyWithin(to, from, from + n);
  data.count.copyWithin(to, from, from + n);
  data.score.copyWithin(to, from, from + n);
  columns.forEach((c, k) => data.columns[k].copyWithin(to * c.width, from * c.width, (from + n) * c.width));
}
