/**
 * One KV head of the trace replay (replay.ts has the whole cache and the events): its entries in
 * cache order (first origin token, origin list, codec name, the merge that made each), a token →
 * entry index, and how one head's decision changes them — checked against what the decision says
 * (lengths, held tokens, whole-entry merges) so that a wrong replay or an inconsistent trace fails
 * with the head named. Applying a decision is O(entries).
 */
import { mergeRecord, type MergeRecord, type ReplayableMerge } from './replay-merges.ts';

/** The trace and the replay disagree: the message names the event, head and token. */
export class TraceReplayError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TraceReplayError';
  }
}

/**
 * The fields of one head's applied decision the replay reads (engine/cache AppliedHead). Typed
 * loosely on purpose: traces read from JSON and newer engines may carry more or fewer fields.
 */
export interface ReplayableHead {
  layer: number;
  kvHead: number;
  before?: number;
  after?: number;
  evictedTokens: readonly number[];
  /** one per evicted entry: when present, the number of distinct evicted entries is checked against it */
  evictedPositions?: readonly number[];
  merged?: readonly ReplayableMerge[];
  reencoded?: readonly { index: number; token?: number; codec: string }[];
  /** first origin token of each re-encoded entry, in the order of `reencoded` (newer traces) */
  reencodedTokens?: readonly number[];
}

export interface HeadSnapshot {
  length: number;
  first: Int32Array;
  origins: (readonly number[] | null)[] | null;
  codecs: (string | null)[] | null;
  merges: (MergeRecord | null)[] | null;
}

/** One KV head: entries in cache order, plus token → entry index for finding what a decision names. */
export class ReplayHead {
  length = 0;
  first = new Int32Array(64);
  /** null, or per entry its origin list (null = just [first[i]]) */
  origins: (readonly number[] | null)[] | null = null;
  /** null, or per entry its codec name (null = fp32) */
  codecs: (string | null)[] | null = null;
  /** null, or per entry the merge that made it (null = never merged) */
  merges: (MergeRecord | null)[] | null = null;
  /** token index → index of the entry holding it, −1 when none */
  slot = new Int32Array(64).fill(-1);

  // double buffers for out-of-place compaction (swapped, never reallocated per decision)
  private spareFirst = new Int32Array(64);
  private gone = new Uint8Array(64);

  origin(index: number): readonly number[] {
    return this.origins?.[index] ?? [this.first[index]];
  }

  codec(index: number): string | null {
    return this.codecs?.[index] ?? null;
  }

  merge(index: number): MergeRecord | null {
    return this.merges?.[index] ?? null;
  }

  private slotOf(token: number): number {
    return Number.isInteger(token) && token >= 0 && token < this.slot.length ? this.slot[token] : -1;
  }

  private ensureTokens(size: number): void {
    if (size <= this.slot.length) return;
    let capacity = this.slot.length;
    while (capacity < size) capacity *= 2;
    const slot = new Int32Array(capacity).fill(-1);
    slot.set(this.slot);
    this.slot = slot;
  }

  private ensureEntries(size: number): void {
    if (size <= this.first.length) return;
    let capacity = this.first.length;
    while (capacity < size) capacity *= 2;
    const first = new Int32Array(capacity);
    first.set(this.first.subarray(0, this.length));
    this.first = first;
    this.spareFirst = new Int32Array(capacity);
    this.gone = new Uint8Array(capacity);
  }

  append(token: number, where: () => string): void {
    this.ensureTokens(token + 1);
    if (this.slot[token] >= 0) throw new TraceReplayError(`${where()}: token ${token} is appended but is already held`);
    this.ensureEntries(this.length + 1);
    const n = this.length;
    this.first[n] = token;
    this.origins?.push(null);
    this.codecs?.push(null);
    this.merges?.push(null);
    this.slot[token] = n;
    this.length = n + 1;
  }

  /** Applies one head's decision of event `event` (its index in the trace, kept on the merges it makes). */
  apply(head: ReplayableHead, where: () => string, event = -1): void {
    const n = this.length;
    if (typeof head.before === 'number' && head.before !== n) {
      throw new TraceReplayError(`${where()}: the decision saw ${head.before} entries, the replay holds ${n}`);
    }
    const gone = this.gone;
    gone.fill(0, 0, n);

    // evictions: every evicted token must be held; its whole entry goes
    let evictedEntries = 0;
    let evictedOrigins = 0;
    for (const t of head.evictedTokens) {
      const i = this.slotOf(t);
      if (i < 0) throw new TraceReplayError(`${where()}: evicts token ${t}, which the head does not hold`);
      if (gone[i] === 0) {
        gone[i] = 1;
        evictedEntries++;
        evictedOrigins += this.origins?.[i]?.length ?? 1;
      }
    }
    if (evictedOrigins !== head.evictedTokens.length) {
      throw new TraceReplayError(`${where()}: evicts ${head.evictedTokens.length} origin tokens, but the entries holding them stand for ${evictedOrigins}`);
    }
    if (Array.isArray(head.evictedPositions) && head.evictedPositions.length !== evictedEntries) {
      throw new TraceReplayError(`${where()}: evicts ${head.evictedPositions.length} entries, but its tokens are held by ${evictedEntries}`);
    }

    // merges: the members are the entries holding the merged origins; together they stand for exactly those
    const merges = [...(head.merged ?? [])].sort((a, b) => a.into - b.into);
    const made: MergeRecord[] = [];
    // what a member stood for, read while the head still holds it
    const sizeOf = (token: number): number | null => {
      const i = this.slotOf(token);
      return i >= 0 && this.first[i] === token ? (this.origins?.[i]?.length ?? 1) : null;
    };
    let mergedMembers = 0;
    for (const merge of merges) {
      let covered = 0;
      for (const t of merge.origins) {
        const i = this.slotOf(t);
        if (i < 0) throw new TraceReplayError(`${where()}: merges token ${t}, which the head does not hold`);
        if (gone[i] === 1) throw new TraceReplayError(`${where()}: merges token ${t}, which the same decision evicts`);
        if (gone[i] === 0) {
          gone[i] = 2;
          mergedMembers++;
          covered += this.origins?.[i]?.length ?? 1;
        }
      }
      if (covered !== merge.origins.length) {
        throw new TraceReplayError(`${where()}: a merge lists ${merge.origins.length} origin tokens, but its members stand for ${covered}`);
      }
      made.push(mergeRecord(merge, event, sizeOf));
    }

    const length = n - evictedEntries - mergedMembers + merges.length;
    if (typeof head.after === 'number' && head.after !== length) {
      throw new TraceReplayError(`${where()}: the decision left ${head.after} entries, the replay ${length}`);
    }

    // forget every token that left its entry, then compact out of place: kept entries in order,
    // each merged entry at its `into`
    for (let i = 0; i < n; i++) {
      if (gone[i] === 0) continue;
      const origin = this.origins?.[i];
      if (origin) for (const t of origin) this.slot[t] = -1;
      else this.slot[this.first[i]] = -1;
    }
    const first = this.spareFirst;
    const origins: (readonly number[] | null)[] | null = this.origins || merges.length > 0 ? new Array(length) : null;
    const codecs: (string | null)[] | null = this.codecs ? new Array(length) : null;
    const mergeOf: (MergeRecord | null)[] | null = this.merges || merges.length > 0 ? new Array(length) : null;
    let from = 0;
    let m = 0;
    for (let k = 0; k < length; k++) {
      if (m < merges.length && merges[m].into === k) {
        const merged = [...merges[m].origins].sort((a, b) => a - b);
        first[k] = merged[0];
        origins![k] = merged;
        if (codecs) codecs[k] = null;
        mergeOf![k] = made[m];
        m++;
        continue;
      }
      while (from < n && gone[from] !== 0) from++;
      if (from >= n) throw new TraceReplayError(`${where()}: a merged entry's place ${merges[m]?.into} is past the head's end`);
      first[k] = this.first[from];
      if (origins) origins[k] = this.origins?.[from] ?? null;
      if (codecs) codecs[k] = this.codecs![from];
      if (mergeOf) mergeOf[k] = this.merges?.[from] ?? null;
      from++;
    }
    if (m < merges.length) throw new TraceReplayError(`${where()}: a merged entry's place ${merges[m].into} is past the head's end (${length})`);
    this.spareFirst = this.first;
    this.first = first;
    this.origins = origins;
    this.codecs = codecs;
    this.merges = mergeOf;
    this.length = length;
    for (let k = 0; k < length; k++) {
      const origin = origins?.[k];
      if (origin) for (const t of origin) this.slot[t] = k;
      else this.slot[first[k]] = k;
    }

    // re-encodes name the entry's place after the decision and, in newer traces, its first token
    // (reencodedTokens, or a `token` on the entry): then the place is checked against the replay's
    (head.reencoded ?? []).forEach((re, k) => {
      let index = re.index;
      const token = typeof re.token === 'number' ? re.token : head.reencodedTokens?.[k];
      if (typeof token === 'number') {
        index = this.slotOf(token);
        if (index < 0 || this.first[index] !== token) throw new TraceReplayError(`${where()}: re-encodes token ${token}, which the head does not hold as an entry's first token`);
        if (index !== re.index) throw new TraceReplayError(`${where()}: re-encodes token ${token} at entry ${re.index}, the replay holds it at ${index}`);
      }
      if (!Number.isInteger(index) || index < 0 || index >= length) throw new TraceReplayError(`${where()}: re-encodes entry ${re.index} of ${length}`);
      this.codecs ??= new Array<string | null>(length).fill(null);
      this.codecs[index] = String(re.codec);
    });
  }

  snapshot(): HeadSnapshot {
    const n = this.length;
    // origin lists are never mutated after they are made, so a shallow copy is a snapshot
    return {
      length: n,
      first: this.first.slice(0, n),
      origins: this.origins ? this.origins.slice(0, n) : null,
      codecs: this.codecs ? this.codecs.slice(0, n) : null,
      merges: this.merges ? this.merges.slice(0, n) : null,
    };
  }

  restore(s: HeadSnapshot, tokenCount: number): void {
    this.ensureEntries(s.length);
    this.ensureTokens(tokenCount);
    this.first.set(s.first);
    this.length = s.length;
    this.origins = s.origins ? s.origins.slice() : null;
    this.codecs = s.codecs ? s.codecs.slice() : null;
    this.merges = s.merges ? s.merges.slice() : null;
    this.slot.fill(-1);
    for (let k = 0; k < s.length; k++) {
      const origin = this.origins?.[k];
      if (origin) for (const t of origin) this.slot[t] = k;
      else this.slot[this.first[k]] = k;
    }
  }
}
