/**
 * The KV cache (DESIGN.md §3): per layer, per KV head, an ordered list of entries. An entry is a
 * post-RoPE key, a value, the RoPE position its key is rotated to (`pos`), the token indices it
 * stands for (`origin`: one token, or many after a merge), `count`, optional codec metadata and
 * the score a policy attached.
 *
 * Storage is contiguous per head (Float32Array keys/values, Int32Array metadata) with capacity
 * doubling, so appending, evicting (compaction by copyWithin over runs) and building graph feeds
 * (one set() per head) touch no per-entry JS objects. Origins and codecs, rare, live in lazily
 * created side arrays.
 *
 * Heads of a layer may hold different numbers of entries (ragged). The graph gets, per layer,
 * T_l = the largest head length: head h fills slots [0, n_h) with its own entries and the rest is
 * padding masked with MASK_BIAS. Slot j of two heads need not be the same token — each KV head's
 * keys are a separate block of past_key — so padding is all the alignment the graph needs.
 */
import { PolicyDecisionError } from '../errors.ts';
import type { Rope } from '../model/rope.ts';
import type { Decision, HeadDecision, MergeGroup } from '../policies/types.ts';
import type { LayerFeed, ModelDims } from '../runtime/forward.ts';
import type { ReadonlyFloat32Array, ReadonlyInt32Array } from '../types.ts';

/**
 * Additive bias that removes a slot from attention. A large finite negative rather than -Infinity:
 * exp underflows to exactly 0 either way, but a finite value cannot turn into NaN if a graph ever
 * scales or adds biases (−∞ · 0, −∞ + ∞). Every row always sees at least the new token itself,
 * so no row is fully masked.
 */
export const MASK_BIAS = -1e9;

const BYTES_PER_FLOAT32 = 4;

/** How an entry is stored when it is not plain fp32 (quantized, channel-pruned, low-rank…). */
export interface EntryCodec {
  /** codec name, e.g. "kivi-2" */
  name: string;
  /** bits per stored key / value element */
  kBits: number;
  vBits: number;
  /** stored key / value elements (headDim unless channels were pruned or projected) */
  kElements: number;
  vElements: number;
  /**
   * metadata bytes charged to this entry (scales, zero points, factors, outliers). Metadata shared
   * by a group of entries is charged once, to one entry of the group, so sums stay byte-exact.
   */
  kMetaBytes: number;
  vMetaBytes: number;
  group?: number;
  rank?: number;
}

/** Read-only view of the cache given to policies. Arrays are live views: copy what you keep. */
export interface CacheView {
  readonly nLayers: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  /** tokens fed to the model so far (prompt + generated), i.e. what the full cache would hold */
  readonly tokenCount: number;
  length(layer: number, kvHead: number): number;
  /** RoPE position of each entry's key */
  positions(layer: number, kvHead: number): ReadonlyInt32Array;
  /** first token index of each entry's origin (the token itself unless merged) */
  tokens(layer: number, kvHead: number): ReadonlyInt32Array;
  /** tokens each entry stands for (1 unless merged) */
  counts(layer: number, kvHead: number): ReadonlyInt32Array;
  /** score the policy attached (NaN where none) */
  scores(layer: number, kvHead: number): ReadonlyFloat32Array;
  /** [length, headDim] post-RoPE keys */
  keys(layer: number, kvHead: number): ReadonlyFloat32Array;
  /** [length, headDim] values */
  values(layer: number, kvHead: number): ReadonlyFloat32Array;
  /** token indices entry `index` stands for */
  origin(layer: number, kvHead: number, index: number): readonly number[];
  codec(layer: number, kvHead: number, index: number): EntryCodec | null;
}

export interface MemoryReport {
  /** tokens the full cache would hold (fed so far) */
  tokens: number;
  /** [layer][kvHead] entries held */
  entries: number[][];
  heldEntries: number;
  kBytes: number;
  vBytes: number;
  bytes: number;
  /** fp32 cache holding every token in every head */
  fullKBytes: number;
  fullVBytes: number;
  fullBytes: number;
  /** bytes / fullBytes (1 when nothing is held yet) */
  ratio: number;
  /** stored bits per held K/V element, metadata included (32 for plain fp32) */
  bitsPerElement: number;
}

/** What applying a decision did to one head (for the trace). */
export interface AppliedHead {
  layer: number;
  kvHead: number;
  before: number;
  after: number;
  /** origins of the evicted entries, flattened, and their positions (one per evicted entry) */
  evictedTokens: number[];
  evictedPositions: number[];
  merged: { into: number; origins: number[]; weights: number[] }[];
  reencoded: { index: number; codec: string; kError?: number; vError?: number }[];
  repositioned: number;
}

export interface AppliedDecision {
  /** only heads that changed */
  heads: AppliedHead[];
  evicted: number;
  merged: number;
  reencoded: number;
  note?: string;
  nextPosition?: number;
}

interface MergedEntry {
  keys: Float32Array;
  values: Float32Array;
  count: number;
  origin: number[];
  pos: number;
}

/** A validated head decision: role per entry (0 evicted, 1 kept, 2 merge anchor, 3 merged away). */
interface HeadPlan {
  role: Uint8Array;
  anchorGroup: Int32Array;
  merged: MergedEntry[];
}

interface HeadSnapshot {
  length: number;
  keys: Float32Array;
  values: Float32Array;
  pos: Int32Array;
  token: Int32Array;
  count: Int32Array;
  score: Float32Array;
  origins: (number[] | null)[] | null;
  codecs: (EntryCodec | null)[] | null;
}

export interface CacheSnapshot {
  tokenCount: number;
  heads: HeadSnapshot[];
}

/** One KV head of one layer: parallel arrays, `length` entries used out of `capacity`. */
class HeadStore {
  length = 0;
  capacity: number;
  keys: Float32Array;
  values: Float32Array;
  pos: Int32Array;
  token: Int32Array;
  count: Int32Array;
  score: Float32Array;
  /** null, or per entry the origin list (null = just [token[i]]) */
  origins: (readonly number[] | null)[] | null = null;
  /** null, or per entry its codec (null = fp32) */
  codecs: (EntryCodec | null)[] | null = null;
  /** entries whose count ≠ 1, so bias building can skip log(count) when there are none */
  mergedEntries = 0;

  constructor(
    readonly headDim: number,
    capacity: number,
  ) {
    this.capacity = Math.max(1, capacity);
    this.keys = new Float32Array(this.capacity * headDim);
    this.values = new Float32Array(this.capacity * headDim);
    this.pos = new Int32Array(this.capacity);
    this.token = new Int32Array(this.capacity);
    this.count = new Int32Array(this.capacity);
    this.score = new Float32Array(this.capacity);
  }

  ensureCapacity(needed: number): void {
    if (needed <= this.capacity) return;
    let capacity = this.capacity;
    while (capacity < needed) capacity *= 2;
    const d = this.headDim;
    const grow = <T extends Float32Array | Int32Array>(old: T, size: number, make: (n: number) => T): T => {
      const next = make(size);
      next.set(old.subarray(0, this.length * (old.length / this.capacity)));
      return next;
    };
    this.keys = grow(this.keys, capacity * d, (n) => new Float32Array(n));
    this.values = grow(this.values, capacity * d, (n) => new Float32Array(n));
    this.pos = grow(this.pos, capacity, (n) => new Int32Array(n));
    this.token = grow(this.token, capacity, (n) => new Int32Array(n));
    this.count = grow(this.count, capacity, (n) => new Int32Array(n));
    this.score = grow(this.score, capacity, (n) => new Float32Array(n));
    this.capacity = capacity;
  }

  origin(index: number): readonly number[] {
    return this.origins?.[index] ?? [this.token[index]];
  }

  setOrigin(index: number, origin: readonly number[]): void {
    if (origin.length === 1 && origin[0] === this.token[index]) {
      if (this.origins) this.origins[index] = null;
      return;
    }
    if (!this.origins) this.origins = new Array<readonly number[] | null>(this.length).fill(null);
    this.origins[index] = origin;
  }

  setCodec(index: number, codec: EntryCodec | null): void {
    if (codec === null && !this.codecs) return;
    if (!this.codecs) this.codecs = new Array<EntryCodec | null>(this.length).fill(null);
    this.codecs[index] = codec;
  }

  /** Copies entry `from` into slot `to` (to ≤ from during compaction). */
  moveEntry(from: number, to: number): void {
    const d = this.headDim;
    this.keys.copyWithin(to * d, from * d, from * d + d);
    this.values.copyWithin(to * d, from * d, from * d + d);
    this.pos[to] = this.pos[from];
    this.token[to] = this.token[from];
    this.count[to] = this.count[from];
    this.score[to] = this.score[from];
    if (this.origins) this.origins[to] = this.origins[from];
    if (this.codecs) this.codecs[to] = this.codecs[from];
  }

  /** Moves the run of entries [from, from+n) to start at `to` (to ≤ from). */
  moveRun(from: number, to: number, n: number): void {
    if (from === to || n === 0) return;
    const d = this.headDim;
    this.keys.copyWithin(to * d, from * d, (from + n) * d);
    this.values.copyWithin(to * d, from * d, (from + n) * d);
    this.pos.copyWithin(to, from, from + n);
    this.token.copyWithin(to, from, from + n);
    this.count.copyWithin(to, from, from + n);
    this.score.copyWithin(to, from, from + n);
    if (this.origins) this.origins.copyWithin(to, from, from + n);
    if (this.codecs) this.codecs.copyWithin(to, from, from + n);
  }

  truncate(length: number): void {
    this.length = length;
    if (this.origins) this.origins.length = length;
    if (this.codecs) this.codecs.length = length;
  }

  recountMerged(): void {
    let merged = 0;
    for (let i = 0; i < this.length; i++) if (this.count[i] !== 1) merged++;
    this.mergedEntries = merged;
  }

  snapshot(): HeadSnapshot {
    const n = this.length;
    const d = this.headDim;
    return {
      length: n,
      keys: this.keys.slice(0, n * d),
      values: this.values.slice(0, n * d),
      pos: this.pos.slice(0, n),
      token: this.token.slice(0, n),
      count: this.count.slice(0, n),
      score: this.score.slice(0, n),
      origins: this.origins ? this.origins.slice(0, n).map((o) => (o ? [...o] : null)) : null,
      codecs: this.codecs ? this.codecs.slice(0, n).map((c) => (c ? { ...c } : null)) : null,
    };
  }

  static fromSnapshot(s: HeadSnapshot, headDim: number): HeadStore {
    const head = new HeadStore(headDim, Math.max(16, s.length));
    head.keys.set(s.keys);
    head.values.set(s.values);
    head.pos.set(s.pos);
    head.token.set(s.token);
    head.count.set(s.count);
    head.score.set(s.score);
    head.length = s.length;
    head.origins = s.origins ? s.origins.map((o) => (o ? [...o] : null)) : null;
    head.codecs = s.codecs ? s.codecs.map((c) => (c ? { ...c } : null)) : null;
    head.recountMerged();
    return head;
  }
}

/** Per-layer reusable feed buffers (grown by doubling, handed to the graph as exact-size views). */
interface FeedScratch {
  keys: Float32Array;
  values: Float32Array;
  bias: Float32Array;
}

function ensureSize(buffer: Float32Array, size: number): Float32Array {
  if (buffer.length >= size) return buffer;
  let capacity = Math.max(16, buffer.length);
  while (capacity < size) capacity *= 2;
  return new Float32Array(capacity);
}

function isAscendingUnique(indices: ArrayLike<number>, n: number): string | null {
  let previous = -1;
  for (let i = 0; i < indices.length; i++) {
    const index = indices[i];
    if (!Number.isInteger(index) || index < 0 || index >= n) return `index ${index} is out of range [0, ${n})`;
    if (index <= previous) return `indices must be ascending and unique (${previous} then ${index})`;
    previous = index;
  }
  return null;
}

export class KVCacheStore implements CacheView {
  readonly nLayers: number;
  readonly nKvHeads: number;
  readonly nHeads: number;
  readonly headDim: number;
  readonly groupSize: number;
  tokenCount = 0;
  private heads: HeadStore[];
  private scratch: FeedScratch[];

  constructor(
    dims: Pick<ModelDims, 'nLayers' | 'nKvHeads' | 'nHeads' | 'headDim'>,
    private readonly rope: Rope | null = null,
    initialCapacity = 64,
  ) {
    this.nLayers = dims.nLayers;
    this.nKvHeads = dims.nKvHeads;
    this.nHeads = dims.nHeads;
    this.headDim = dims.headDim;
    this.groupSize = dims.nHeads / dims.nKvHeads;
    this.heads = [];
    for (let i = 0; i < this.nLayers * this.nKvHeads; i++) this.heads.push(new HeadStore(this.headDim, initialCapacity));
    this.scratch = [];
    for (let l = 0; l < this.nLayers; l++) {
      this.scratch.push({ keys: new Float32Array(0), values: new Float32Array(0), bias: new Float32Array(0) });
    }
  }

  private head(layer: number, kvHead: number): HeadStore {
    const head = this.heads[layer * this.nKvHeads + kvHead];
    if (!head) throw new RangeError(`no cache head ${layer}/${kvHead} (layers ${this.nLayers}, kv heads ${this.nKvHeads})`);
    return head;
  }

  // ---- CacheView ---------------------------------------------------------------------------

  length(layer: number, kvHead: number): number {
    return this.head(layer, kvHead).length;
  }
  positions(layer: number, kvHead: number): ReadonlyInt32Array {
    const h = this.head(layer, kvHead);
    return h.pos.subarray(0, h.length);
  }
  tokens(layer: number, kvHead: number): ReadonlyInt32Array {
    const h = this.head(layer, kvHead);
    return h.token.subarray(0, h.length);
  }
  counts(layer: number, kvHead: number): ReadonlyInt32Array {
    const h = this.head(layer, kvHead);
    return h.count.subarray(0, h.length);
  }
  scores(layer: number, kvHead: number): ReadonlyFloat32Array {
    const h = this.head(layer, kvHead);
    return h.score.subarray(0, h.length);
  }
  keys(layer: number, kvHead: number): ReadonlyFloat32Array {
    const h = this.head(layer, kvHead);
    return h.keys.subarray(0, h.length * this.headDim);
  }
  values(layer: number, kvHead: number): ReadonlyFloat32Array {
    const h = this.head(layer, kvHead);
    return h.values.subarray(0, h.length * this.headDim);
  }
  origin(layer: number, kvHead: number, index: number): readonly number[] {
    return this.head(layer, kvHead).origin(index);
  }
  codec(layer: number, kvHead: number, index: number): EntryCodec | null {
    return this.head(layer, kvHead).codecs?.[index] ?? null;
  }

  /** Slots the graph gets for this layer: the longest head. */
  slotCount(layer: number): number {
    let t = 0;
    for (let h = 0; h < this.nKvHeads; h++) t = Math.max(t, this.head(layer, h).length);
    return t;
  }

  // ---- writing ---------------------------------------------------------------------------

  /**
   * Appends q new tokens' entries to every head of one layer, from a graph output block laid out
   * [Hkv, q, D] (key_l / value_l).
   */
  appendLayer(layer: number, keys: Float32Array, values: Float32Array, q: number, positions: ArrayLike<number>, firstToken: number): void {
    const d = this.headDim;
    for (let h = 0; h < this.nKvHeads; h++) {
      const head = this.head(layer, h);
      const n = head.length;
      head.ensureCapacity(n + q);
      head.keys.set(keys.subarray(h * q * d, (h + 1) * q * d), n * d);
      head.values.set(values.subarray(h * q * d, (h + 1) * q * d), n * d);
      for (let i = 0; i < q; i++) {
        head.pos[n + i] = positions[i];
        head.token[n + i] = firstToken + i;
        head.count[n + i] = 1;
        head.score[n + i] = Number.NaN;
      }
      if (head.origins) for (let i = 0; i < q; i++) head.origins.push(null);
      if (head.codecs) for (let i = 0; i < q; i++) head.codecs.push(null);
      head.length = n + q;
    }
  }

  /** Appends one forward's new entries (all layers) and counts the tokens as fed. */
  appendForward(newKeys: readonly Float32Array[], newValues: readonly Float32Array[], q: number, positions: ArrayLike<number>, firstToken: number): void {
    for (let l = 0; l < this.nLayers; l++) this.appendLayer(l, newKeys[l], newValues[l], q, positions, firstToken);
    this.tokenCount = Math.max(this.tokenCount, firstToken + q);
  }

  /** Forgets every policy score (a new policy must not read the previous one's scores). */
  clearScores(): void {
    for (const head of this.heads) head.score.fill(Number.NaN, 0, head.length);
  }

  clear(): void {
    for (const head of this.heads) {
      head.truncate(0);
      head.origins = null;
      head.codecs = null;
      head.mergedEntries = 0;
    }
    this.tokenCount = 0;
  }

  // ---- graph feeds ---------------------------------------------------------------------------

  /**
   * Builds every layer's feed for q new tokens: keys/values padded to the longest head, bias with
   * log(count) for merged entries, MASK_BIAS for padding and a causal mask among the new tokens.
   * The returned arrays are views of reused buffers, valid until the next call.
   */
  buildFeeds(q: number): LayerFeed[] {
    const feeds: LayerFeed[] = [];
    for (let l = 0; l < this.nLayers; l++) {
      // Layers whose heads hold the same numbers of unmerged entries get the same bias: build it
      // once (a q × (T + q) mask per head is most of a prefill chunk's feed-building time).
      let shared: Float32Array | null = null;
      for (let j = 0; j < l && !shared; j++) if (this.sameBias(l, j)) shared = feeds[j].bias;
      feeds.push(this.buildLayerFeed(l, q, shared));
    }
    return feeds;
  }

  /** Whether layers a and b need identical attention biases (same head lengths, no merged entries). */
  private sameBias(a: number, b: number): boolean {
    for (let h = 0; h < this.nKvHeads; h++) {
      const x = this.head(a, h);
      const y = this.head(b, h);
      if (x.length !== y.length || x.mergedEntries !== 0 || y.mergedEntries !== 0) return false;
    }
    return true;
  }

  private buildLayerFeed(layer: number, q: number, sharedBias: Float32Array | null = null): LayerFeed {
    const d = this.headDim;
    const t = this.slotCount(layer);
    const scratch = this.scratch[layer];
    const kvSize = this.nKvHeads * t * d;
    scratch.keys = ensureSize(scratch.keys, kvSize);
    scratch.values = ensureSize(scratch.values, kvSize);
    const keys = scratch.keys.subarray(0, kvSize);
    const values = scratch.values.subarray(0, kvSize);
    for (let h = 0; h < this.nKvHeads; h++) {
      const head = this.head(layer, h);
      const n = head.length;
      keys.set(head.keys.subarray(0, n * d), h * t * d);
      values.set(head.values.subarray(0, n * d), h * t * d);
      if (n < t) {
        // padding slots are masked, but keep them finite and deterministic
        keys.fill(0, (h * t + n) * d, (h + 1) * t * d);
        values.fill(0, (h * t + n) * d, (h + 1) * t * d);
      }
    }

    const rowLength = t + q;
    const biasSize = this.nHeads * q * rowLength;
    if (sharedBias) return { length: t, keys, values, bias: sharedBias };
    scratch.bias = ensureSize(scratch.bias, biasSize);
    const bias = scratch.bias.subarray(0, biasSize);
    for (let qh = 0; qh < this.nHeads; qh++) {
      const head = this.head(layer, Math.floor(qh / this.groupSize));
      const n = head.length;
      for (let row = 0; row < q; row++) {
        const base = (qh * q + row) * rowLength;
        if (head.mergedEntries === 0) {
          bias.fill(0, base, base + n);
        } else {
          for (let j = 0; j < n; j++) bias[base + j] = head.count[j] === 1 ? 0 : Math.log(head.count[j]);
        }
        bias.fill(MASK_BIAS, base + n, base + t);
        // causal among the new tokens: row sees new tokens 0..row
        bias.fill(0, base + t, base + t + row + 1);
        bias.fill(MASK_BIAS, base + t + row + 1, base + rowLength);
      }
    }
    return { length: t, keys, values, bias };
  }

  /**
   * Attention of query head `queryHead`, new-token row `row`, mapped onto its KV head's entries:
   * the `before` entries held when the graph was fed, then the new tokens 0..row.
   * `attn` is the graph's attn_l output [H, q, T + q] for a feed of T slots.
   */
  static entryAttention(attn: Float32Array, queryHead: number, row: number, q: number, slots: number, before: number, out?: Float32Array): Float32Array {
    const rowLength = slots + q;
    const base = (queryHead * q + row) * rowLength;
    const size = before + row + 1;
    const result = out && out.length === size ? out : new Float32Array(size);
    result.set(attn.subarray(base, base + before), 0);
    result.set(attn.subarray(base + slots, base + slots + row + 1), before);
    return result;
  }

  // ---- applying decisions ---------------------------------------------------------------------

  /**
   * Validates and applies a policy decision; throws PolicyDecisionError naming the problem.
   * Every head is validated before any is changed, so a rejected decision leaves the cache as it was.
   */
  apply(decision: Decision): AppliedDecision {
    const applied: AppliedDecision = { heads: [], evicted: 0, merged: 0, reencoded: 0 };
    if (decision.note !== undefined) applied.note = decision.note;
    if (decision.nextPosition !== undefined) {
      if (!Number.isInteger(decision.nextPosition) || decision.nextPosition < 0) {
        throw new PolicyDecisionError(`decision nextPosition must be an integer ≥ 0, got ${decision.nextPosition}`);
      }
      applied.nextPosition = decision.nextPosition;
    }
    if (!decision.layers) return applied;
    if (decision.layers.length !== this.nLayers) {
      throw new PolicyDecisionError(`decision lists ${decision.layers.length} layers, the cache has ${this.nLayers}`);
    }
    const planned: { layer: number; kvHead: number; decision: HeadDecision; plan: HeadPlan }[] = [];
    for (let l = 0; l < this.nLayers; l++) {
      const layer = decision.layers[l];
      if (!layer) continue;
      if (layer.length !== this.nKvHeads) {
        throw new PolicyDecisionError(`decision for layer ${l} lists ${layer.length} heads, the cache has ${this.nKvHeads} KV heads`);
      }
      for (let h = 0; h < this.nKvHeads; h++) {
        const headDecision = layer[h];
        if (headDecision) planned.push({ layer: l, kvHead: h, decision: headDecision, plan: this.planHead(l, h, headDecision) });
      }
    }
    for (const { layer, kvHead, decision: headDecision, plan } of planned) {
      const result = this.applyHead(layer, kvHead, headDecision, plan);
      if (result) {
        applied.heads.push(result);
        applied.evicted += result.evictedPositions.length;
        applied.merged += result.merged.length;
        applied.reencoded += result.reencoded.length;
      }
    }
    return applied;
  }

  /** Checks a head decision against the head without changing anything; computes merged entries. */
  private planHead(layer: number, kvHead: number, decision: HeadDecision): HeadPlan {
    const where = `decision for layer ${layer} head ${kvHead}`;
    const head = this.head(layer, kvHead);
    const n = head.length;
    const d = this.headDim;
    const keep = decision.keep;
    const merges = decision.merge ?? [];

    const keepProblem = isAscendingUnique(keep, n);
    if (keepProblem) throw new PolicyDecisionError(`${where}: keep ${keepProblem}`);
    if (keep.length + merges.length === 0 && n > 0) {
      throw new PolicyDecisionError(`${where}: would leave the head empty (at least one entry must be kept)`);
    }
    if (decision.scores && decision.scores.length !== n) {
      throw new PolicyDecisionError(`${where}: scores has ${decision.scores.length} values for ${n} entries`);
    }
    // role per index: 0 evicted, 1 kept, 2 merge anchor, 3 merged into another entry
    const role = new Uint8Array(n);
    for (let i = 0; i < keep.length; i++) role[keep[i]] = 1;
    const anchorGroup = new Int32Array(merges.length > 0 ? n : 0).fill(-1);
    const merged = merges.map((group, g) => this.prepareMerge(head, group, g, role, anchorGroup, where));
    for (const re of decision.reencode ?? []) {
      if (!(re.index >= 0 && re.index < n && role[re.index] === 1)) throw new PolicyDecisionError(`${where}: reencode index ${re.index} is not a kept entry`);
      if ((re.keys && re.keys.length !== d) || (re.values && re.values.length !== d)) {
        throw new PolicyDecisionError(`${where}: reencode of entry ${re.index} must give ${d} floats per key/value`);
      }
    }
    for (const move of decision.reposition ?? []) {
      if (!(move.index >= 0 && move.index < n && role[move.index] === 1)) throw new PolicyDecisionError(`${where}: reposition index ${move.index} is not a kept entry`);
      if (!Number.isInteger(move.pos) || move.pos < 0) throw new PolicyDecisionError(`${where}: reposition to invalid position ${move.pos}`);
      if (!this.rope) throw new PolicyDecisionError(`${where}: reposition needs the model's RoPE parameters`);
    }
    return { role, anchorGroup, merged };
  }

  private applyHead(layer: number, kvHead: number, decision: HeadDecision, plan: HeadPlan): AppliedHead | null {
    const head = this.head(layer, kvHead);
    const n = head.length;
    const d = this.headDim;
    const keep = decision.keep;
    const merges = decision.merge ?? [];
    const { role, anchorGroup, merged: mergedEntries } = plan;

    const applied: AppliedHead = {
      layer,
      kvHead,
      before: n,
      after: 0,
      evictedTokens: [],
      evictedPositions: [],
      merged: [],
      reencoded: [],
      repositioned: 0,
    };
    const newIndex = new Int32Array(n).fill(-1);
    let j = 0;
    if (merges.length === 0) {
      // Fast path: move runs of consecutive kept entries with one copyWithin each.
      let previous = -1;
      let i = 0;
      while (i < keep.length) {
        let runEnd = i;
        while (runEnd + 1 < keep.length && keep[runEnd + 1] === keep[runEnd] + 1) runEnd++;
        const from = keep[i];
        const runLength = runEnd - i + 1;
        for (let e = previous + 1; e < from; e++) this.recordEviction(head, e, applied);
        head.moveRun(from, j, runLength);
        for (let k = 0; k < runLength; k++) newIndex[from + k] = j + k;
        j += runLength;
        previous = keep[runEnd];
        i = runEnd + 1;
      }
      for (let e = previous + 1; e < n; e++) this.recordEviction(head, e, applied);
    } else {
      // Compaction left to right: slot j ≤ i, so entry i is still intact when it is read; merged
      // vectors were computed in planHead before any member could be overwritten.
      for (let i = 0; i < n; i++) {
        if (role[i] === 1) {
          if (i !== j) head.moveEntry(i, j);
          newIndex[i] = j++;
        } else if (role[i] === 2) {
          const g = anchorGroup[i];
          const merged = mergedEntries[g];
          head.keys.set(merged.keys, j * d);
          head.values.set(merged.values, j * d);
          head.pos[j] = merged.pos;
          head.token[j] = merged.origin[0];
          head.count[j] = merged.count;
          head.score[j] = head.score[i];
          head.setOrigin(j, merged.origin);
          head.setCodec(j, null);
          applied.merged.push({ into: j, origins: merged.origin, weights: [...merges[g].weights] });
          newIndex[i] = j++;
        } else if (role[i] === 0) {
          this.recordEviction(head, i, applied);
        }
      }
    }
    head.truncate(j);
    applied.after = j;

    if (decision.scores) {
      for (let i = 0; i < n; i++) if (newIndex[i] >= 0) head.score[newIndex[i]] = decision.scores[i];
    }
    for (const re of decision.reencode ?? []) {
      const target = newIndex[re.index];
      if (re.keys) head.keys.set(re.keys, target * d);
      if (re.values) head.values.set(re.values, target * d);
      head.setCodec(target, { ...re.codec });
      applied.reencoded.push({ index: target, codec: re.codec.name, kError: re.kError, vError: re.vError });
    }
    // Runs of moves with consecutive targets and the same delta (StreamingLLM P2 shifts every
    // recent key by the same amount) are rotated with one call: cos/sin computed once per run.
    const moves = decision.reposition ?? [];
    for (let m = 0; m < moves.length; ) {
      const target = newIndex[moves[m].index];
      const delta = moves[m].pos - head.pos[target];
      let run = 1;
      while (m + run < moves.length) {
        const next = newIndex[moves[m + run].index];
        if (next !== target + run || moves[m + run].pos - head.pos[next] !== delta) break;
        run++;
      }
      this.rope!.rotate(head.keys, delta, target * d, run);
      for (let k = 0; k < run; k++) head.pos[target + k] = moves[m + k].pos;
      applied.repositioned += run;
      m += run;
    }
    if (merges.length > 0 || head.mergedEntries > 0) head.recountMerged();

    const changed = applied.after !== n || applied.merged.length > 0 || applied.reencoded.length > 0 || applied.repositioned > 0;
    return changed ? applied : null;
  }

  private recordEviction(head: HeadStore, index: number, applied: AppliedHead): void {
    const origin = head.origin(index);
    for (const t of origin) applied.evictedTokens.push(t);
    applied.evictedPositions.push(head.pos[index]);
  }

  /** Validates one merge group and computes its merged entry before compaction overwrites members. */
  private prepareMerge(head: HeadStore, group: MergeGroup, g: number, role: Uint8Array, anchorGroup: Int32Array, where: string): MergedEntry {
    const n = head.length;
    const d = this.headDim;
    const { members, weights } = group;
    if (members.length < 2) throw new PolicyDecisionError(`${where}: merge group ${g} needs at least 2 members`);
    if (weights.length !== members.length) {
      throw new PolicyDecisionError(`${where}: merge group ${g} has ${members.length} members but ${weights.length} weights`);
    }
    for (const m of members) {
      if (!Number.isInteger(m) || m < 0 || m >= n) throw new PolicyDecisionError(`${where}: merge group ${g} member ${m} is out of range [0, ${n})`);
      if (role[m] !== 0) throw new PolicyDecisionError(`${where}: entry ${m} is both kept/merged elsewhere and in merge group ${g}`);
      role[m] = 3;
    }
    const anchor = group.anchor ?? members[0];
    if (!members.includes(anchor)) throw new PolicyDecisionError(`${where}: merge group ${g} anchor ${anchor} is not a member`);
    role[anchor] = 2;
    anchorGroup[anchor] = g;

    const keys = new Float32Array(d);
    const values = new Float32Array(d);
    let count = 0;
    const origin: number[] = [];
    members.forEach((m, k) => {
      const w = weights[k];
      for (let c = 0; c < d; c++) {
        keys[c] += w * head.keys[m * d + c];
        values[c] += w * head.values[m * d + c];
      }
      count += head.count[m];
      origin.push(...head.origin(m));
    });
    origin.sort((a, b) => a - b);
    if (group.count !== undefined) {
      if (!Number.isInteger(group.count) || group.count < 1) {
        throw new PolicyDecisionError(`${where}: merge group ${g} count must be an integer ≥ 1, got ${group.count}`);
      }
      count = group.count;
    }
    const pos = group.pos ?? head.pos[anchor];
    return { keys, values, count, origin, pos };
  }

  // ---- memory ---------------------------------------------------------------------------------

  /** Byte-exact memory of what the heads hold, next to the full fp32 cache for the same tokens. */
  memory(): MemoryReport {
    const d = this.headDim;
    let kBytes = 0;
    let vBytes = 0;
    let held = 0;
    const entries: number[][] = [];
    for (let l = 0; l < this.nLayers; l++) {
      const row: number[] = [];
      for (let h = 0; h < this.nKvHeads; h++) {
        const head = this.head(l, h);
        row.push(head.length);
        held += head.length;
        if (!head.codecs) {
          kBytes += head.length * d * BYTES_PER_FLOAT32;
          vBytes += head.length * d * BYTES_PER_FLOAT32;
          continue;
        }
        for (let i = 0; i < head.length; i++) {
          const codec = head.codecs[i];
          if (!codec) {
            kBytes += d * BYTES_PER_FLOAT32;
            vBytes += d * BYTES_PER_FLOAT32;
          } else {
            kBytes += Math.ceil((codec.kElements * codec.kBits) / 8) + codec.kMetaBytes;
            vBytes += Math.ceil((codec.vElements * codec.vBits) / 8) + codec.vMetaBytes;
          }
        }
      }
      entries.push(row);
    }
    const fullKBytes = this.tokenCount * this.nLayers * this.nKvHeads * d * BYTES_PER_FLOAT32;
    const bytes = kBytes + vBytes;
    const fullBytes = 2 * fullKBytes;
    return {
      tokens: this.tokenCount,
      entries,
      heldEntries: held,
      kBytes,
      vBytes,
      bytes,
      fullKBytes,
      fullVBytes: fullKBytes,
      fullBytes,
      ratio: fullBytes === 0 ? 1 : bytes / fullBytes,
      bitsPerElement: held === 0 ? 0 : (bytes * 8) / (held * d * 2),
    };
  }

  // ---- snapshots ------------------------------------------------------------------------------

  snapshot(): CacheSnapshot {
    return { tokenCount: this.tokenCount, heads: this.heads.map((h) => h.snapshot()) };
  }

  restore(snapshot: CacheSnapshot): void {
    if (snapshot.heads.length !== this.heads.length) {
      throw new RangeError(`cache snapshot has ${snapshot.heads.length} heads, this cache ${this.heads.length}`);
    }
    this.heads = snapshot.heads.map((s) => HeadStore.fromSnapshot(s, this.headDim));
    this.tokenCount = snapshot.tokenCount;
  }

  clone(): KVCacheStore {
    const copy = new KVCacheStore(
      { nLayers: this.nLayers, nKvHeads: this.nKvHeads, nHeads: this.nHeads, headDim: this.headDim },
      this.rope,
      1,
    );
    copy.restore(this.snapshot());
    return copy;
  }
}
