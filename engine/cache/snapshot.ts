/** Snapshots of the store: plain copies of every head's used entries, its columns and codec groups. */
import type { CodecGroup } from './decision.ts';
import { HeadStore, type StoredCodec } from './head.ts';
import type { ColumnSpec } from './view.ts';

export interface HeadSnapshot {
  length: number;
  keys: Float32Array;
  values: Float32Array;
  pos: Int32Array;
  token: Int32Array;
  count: Int32Array;
  score: Float32Array;
  /** one per CacheSnapshot.columns */
  columns: Float64Array[];
  origins: (number[] | null)[] | null;
  codecs: (StoredCodec | null)[] | null;
  hidden: Uint8Array | null;
}

export interface CacheSnapshot {
  tokenCount: number;
  columns: ColumnSpec[];
  groups: CodecGroup[];
  heads: HeadSnapshot[];
}

export function snapshotHead(head: HeadStore, columns: readonly ColumnSpec[]): HeadSnapshot {
  const n = head.length;
  const d = head.headDim;
  const data = head.data;
  return {
    length: n,
    keys: data.keys.slice(0, n * d),
    values: data.values.slice(0, n * d),
    pos: data.pos.slice(0, n),
    token: data.token.slice(0, n),
    count: data.count.slice(0, n),
    score: data.score.slice(0, n),
    columns: columns.map((c, k) => data.columns[k].slice(0, n * c.width)),
    origins: data.origins ? data.origins.slice(0, n).map((o) => (o ? [...o] : null)) : null,
    // stored codecs are never mutated (apply.ts replaces them), so snapshots share them
    codecs: data.codecs ? data.codecs.slice(0, n) : null,
    hidden: data.hidden ? data.hidden.slice(0, n) : null,
  };
}

export function headFromSnapshot(s: HeadSnapshot, headDim: number, columns: readonly ColumnSpec[]): HeadStore {
  const head = new HeadStore(headDim, Math.max(16, s.length), columns);
  const data = head.data;
  data.keys.set(s.keys);
  data.values.set(s.values);
  data.pos.set(s.pos);
  data.token.set(s.token);
  data.count.set(s.count);
  data.score.set(s.score);
  columns.forEach((_, k) => data.columns[k].set(s.columns[k]));
  head.length = s.length;
  data.origins = s.origins ? s.origins.map((o) => (o ? [...o] : null)) : null;
  data.codecs = s.codecs ? s.codecs.slice() : null;
  if (s.hidden) {
    data.hidden = new Uint8Array(data.capacity);
    data.hidden.set(s.hidden);
  }
  head.recount();
  return head;
}
