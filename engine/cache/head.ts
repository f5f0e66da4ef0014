/**
 * Storage of one KV head of one layer: parallel typed arrays (`HeadData`), `length` entries used
 * out of `capacity`, grown by doubling. Appending, compaction and graph feeds touch no per-entry
 * JS objects; origins (after merges), codecs and hidden flags, rare, live in lazily created side
 * arrays. Declared per-entry columns (view.ts ColumnSpec) are Float64Arrays of width × capacity.
 *
 * Applying a decision writes the survivors into a second HeadData (the spare) and swaps, so the
 * arrays the head had before stay intact until the store's transaction commits: rolling back a
 * failed step is swapping back (store.ts). The two are halves of the same buffers.
 */
import type { EntryCodec } from './decision.ts';
import type { ColumnSpec } from './view.ts';

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
  codecs: (EntryCodec | null)[] | null;
  /** null, or 1 per entry hidden from the next forward */
  hidden: Uint8Array | null;
}

export function makeHeadData(capacity: number, headDim: number, columns: readonly ColumnSpec[]): HeadData {
  return makeHeadPair(capacity, headDim, columns, 1)[0];
}

/**
 * `halves` HeadData of one capacity whose arrays are views into shared buffers, so copying
 * survivors from one to the other is one `copyWithin` per array (V8 moves a block within one
 * buffer several times faster than `set` between two).
 */
function makeHeadPair(capacity: number, headDim: number, columns: readonly ColumnSpec[], halves: 1 | 2): HeadData[] {
  const keys = new Float32Array(halves * capacity * headDim);
  const values = new Float32Array(halves * capacity * headDim);
  const pos = new Int32Array(halves * capacity);
  const token = new Int32Array(halves * capacity);
  const count = new Int32Array(halves * capacity);
  const score = new Float32Array(halves * capacity);
  const cols = columns.map((c) => new Float64Array(halves * capacity * c.width));
  return Array.from({ length: halves }, (_, h) => ({
    capacity,
    keys: keys.subarray(h * capacity * headDim, (h + 1) * capacity * headDim),
    values: values.subarray(h * capacity * headDim, (h + 1) * capacity * headDim),
    pos: pos.subarray(h * capacity, (h + 1) * capacity),
    token: token.subarray(h * capacity, (h + 1) * capacity),
    count: count.subarray(h * capacity, (h + 1) * capacity),
    score: score.subarray(h * capacity, (h + 1) * capacity),
    columns: cols.map((c, k) => c.subarray(h * capacity * columns[k].width, (h + 1) * capacity * columns[k].width)),
    origins: null,
    codecs: null,
    hidden: null,
  }));
}

export class HeadStore {
  length = 0;
  data: HeadData;
  /** entries whose count ≠ 1, so bias building can skip log(count) when there are none */
  mergedEntries = 0;
  /** entries flagged hidden, so bias building can skip the check when there are none */
  hiddenEntries = 0;
  private spare: HeadData | null = null;

  constructor(
    readonly headDim: number,
    capacity: number,
    columns: readonly ColumnSpec[],
  ) {
    [this.data, this.spare] = makeHeadPair(Math.max(1, capacity), headDim, columns, 2);
  }

  ensureCapacity(needed: number, columns: readonly ColumnSpec[]): void {
    const old = this.data;
    if (needed <= old.capacity) return;
    let capacity = old.capacity;
    while (capacity < needed) capacity *= 2;
    const [next, spare] = makeHeadPair(capacity, this.headDim, columns, 2);
    copyEntries(old, 0, next, 0, this.length, this.headDim, columns);
    if (old.origins) next.origins = old.origins.slice(0, this.length);
    if (old.codecs) next.codecs = old.codecs.slice(0, this.length);
    if (old.hidden) {
      next.hidden = new Uint8Array(capacity);
      next.hidden.set(old.hidden.subarray(0, this.length));
    }
    this.data = next;
    this.spare = spare;
  }

  /** An empty HeadData of at least the current capacity to write survivors into. */
  takeSpare(columns: readonly ColumnSpec[]): HeadData {
    const spare = this.spare;
    this.spare = null;
    const fits = (s: HeadData) => s.capacity >= this.data.capacity && s.columns.length === columns.length && columns.every((c, k) => s.columns[k].length === s.capacity * c.width);
    if (spare && fits(spare)) {
      spare.origins = null;
      spare.codecs = null;
      spare.hidden = null;
      return spare;
    }
    return makeHeadData(this.data.capacity, this.headDim, columns);
  }

  /** Forgets the spare (its columns no longer match the declared ones). */
  dropSpare(): void {
    this.spare = null;
  }

  /** Gives back arrays no transaction needs any more, to be reused by the next decision. */
  recycle(data: HeadData): void {
    if (data !== this.data) this.spare = data;
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

/** Copies entries [from, from+n) of `src` to [to, to+n) of `dst` (different arrays, or to ≤ from). */
export function copyEntries(src: HeadData, from: number, dst: HeadData, to: number, n: number, headDim: number, columns: readonly ColumnSpec[]): void {
  if (n <= 0) return;
  copyBlock(src.keys, from * headDim, dst.keys, to * headDim, n * headDim);
  copyBlock(src.values, from * headDim, dst.values, to * headDim, n * headDim);
  copyBlock(src.pos, from, dst.pos, to, n);
  copyBlock(src.token, from, dst.token, to, n);
  copyBlock(src.count, from, dst.count, to, n);
  copyBlock(src.score, from, dst.score, to, n);
  columns.forEach((c, k) => copyBlock(src.columns[k], from * c.width, dst.columns[k], to * c.width, n * c.width));
}

type Block = Float32Array | Int32Array | Float64Array;

/** `n` elements from src[from] to dst[to]: one copyWithin when both are views of one buffer, else set. */
function copyBlock<T extends Block>(src: T, from: number, dst: T, to: number, n: number): void {
  if (src.buffer === dst.buffer && src.constructor === dst.constructor) {
    const size = src.BYTES_PER_ELEMENT;
    const whole = wholeView(src);
    const s = src.byteOffset / size + from;
    whole.copyWithin(dst.byteOffset / size + to, s, s + n);
  } else {
    (dst as Float32Array).set((src as Float32Array).subarray(from, from + n), to);
  }
}

function wholeView(array: Block): Block {
  if (array instanceof Float32Array) return new Float32Array(array.buffer);
  if (array instanceof Int32Array) return new Int32Array(array.buffer);
  return new Float64Array(array.buffer);
}
