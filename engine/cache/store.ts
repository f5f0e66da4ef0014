/**
 * The KV cache (docs/architecture.md, "The cache"): per layer, per KV head, an ordered list of
 * entries — a post-RoPE key, a value, the RoPE position its key is rotated to, the tokens it
 * stands for (one, or many after a merge), codec metadata, the score a policy attached and the
 * per-entry columns policy stages declared. This file ties the jobs together:
 *   head.ts      storage of one head          feeds.ts     graph feeds and the bias layout
 *   plan.ts      validating a decision        apply.ts     applying it (and its undo)
 *   memory.ts    byte-exact accounting
 *   snapshot.ts  snapshots                    decision.ts  what policies may ask for
 *
 * Transactions make a session step atomic: between begin() and commit() every change (appended
 * entries, applied decisions, column writes, codec groups) is journaled, and rollback() returns
 * the store to exactly its state at begin(). Applying a decision compacts a head in place after
 * saving what it overwrites (undo moves the survivors back and restores the rest); a keep-all
 * decision replaces only its score / hidden arrays; a column a stage writes is copied on its first
 * write; growing a head allocates new arrays. So undo costs what changed, not the whole cache.
 */
import { PolicyDecisionError } from '../errors.ts';
import type { Rope } from '../model/rope.ts';
import type { LayerFeed, ModelDims } from '../runtime/forward.ts';
import type { ReadonlyFloat32Array, ReadonlyInt32Array } from '../types.ts';
import { applyHead } from './apply.ts';
import { planHead, type ApplyContext, type HeadPlan } from './plan.ts';
import type { CodecGroup, Decision, EntryCodec, ExactEntry, HeadDecision } from './decision.ts';
import { buildLayerFeed, entryAttention, sameBias, slotCount, type FeedLayout, type FeedScratch } from './feeds.ts';
import { HeadStore } from './head.ts';
import { Journal } from './journal.ts';
import { liveGroups, memoryReport, withGroups } from './memory.ts';
import { headFromSnapshot, snapshotHead, type CacheSnapshot } from './snapshot.ts';
import type { AppliedDecision, AppliedHead, ColumnSpec, MemoryReport, PolicyCache, ReadonlyFloat64Array } from './view.ts';

/** A decision measure's name (the same rule as engine/trace/read-decision.ts). */
const MEASURE_NAME = /^[a-z][a-z0-9_]*$/;

export { MASK_BIAS } from './feeds.ts';
export type { CodecGroup, Decision, EntryCodec, HeadDecision, MergeGroup, Reencode, Reposition } from './decision.ts';
export type { AppliedDecision, AppliedHead, CacheView, ColumnReduce, ColumnSpec, MemoryReport, PolicyCache, ReadonlyFloat64Array } from './view.ts';
export type { CacheSnapshot, HeadSnapshot } from './snapshot.ts';

type Dims = Pick<ModelDims, 'nLayers' | 'nKvHeads' | 'nHeads' | 'headDim'>;

export class KVCacheStore implements PolicyCache {
  readonly nLayers: number;
  readonly nKvHeads: number;
  readonly nHeads: number;
  readonly headDim: number;
  readonly groupSize: number;
  tokenCount = 0;
  private heads: HeadStore[];
  private scratch: FeedScratch[];
  private columnSpecs: ColumnSpec[] = [];
  private groups: ReadonlyMap<string, CodecGroup> = new Map();
  private readonly journal = new Journal();

  constructor(
    dims: Dims,
    private readonly rope: Rope | null = null,
    private readonly initialCapacity = 64,
  ) {
    this.nLayers = dims.nLayers;
    this.nKvHeads = dims.nKvHeads;
    this.nHeads = dims.nHeads;
    this.headDim = dims.headDim;
    this.groupSize = dims.nHeads / dims.nKvHeads;
    this.heads = Array.from({ length: this.nLayers * this.nKvHeads }, () => new HeadStore(this.headDim, initialCapacity, []));
    this.scratch = Array.from({ length: this.nLayers }, () => ({ keys: new Float32Array(0), values: new Float32Array(0), bias: new Float32Array(0) }));
  }

  private head(layer: number, kvHead: number): HeadStore {
    const head = this.heads[layer * this.nKvHeads + kvHead];
    if (!head || layer < 0 || kvHead < 0 || kvHead >= this.nKvHeads) {
      throw new RangeError(`no cache head ${layer}/${kvHead} (layers ${this.nLayers}, kv heads ${this.nKvHeads})`);
    }
    return head;
  }

  private layerHeads(layer: number): HeadStore[] {
    return this.heads.slice(layer * this.nKvHeads, (layer + 1) * this.nKvHeads);
  }

  // ---- CacheView ---------------------------------------------------------------------------

  length(layer: number, kvHead: number): number {
    return this.head(layer, kvHead).length;
  }
  positions(layer: number, kvHead: number): ReadonlyInt32Array {
    const h = this.head(layer, kvHead);
    return h.data.pos.subarray(0, h.length);
  }
  tokens(layer: number, kvHead: number): ReadonlyInt32Array {
    const h = this.head(layer, kvHead);
    return h.data.token.subarray(0, h.length);
  }
  counts(layer: number, kvHead: number): ReadonlyInt32Array {
    const h = this.head(layer, kvHead);
    return h.data.count.subarray(0, h.length);
  }
  scores(layer: number, kvHead: number): ReadonlyFloat32Array {
    const h = this.head(layer, kvHead);
    return h.data.score.subarray(0, h.length);
  }
  keys(layer: number, kvHead: number): ReadonlyFloat32Array {
    const h = this.head(layer, kvHead);
    return h.data.keys.subarray(0, h.length * this.headDim);
  }
  values(layer: number, kvHead: number): ReadonlyFloat32Array {
    const h = this.head(layer, kvHead);
    return h.data.values.subarray(0, h.length * this.headDim);
  }
  origin(layer: number, kvHead: number, index: number): readonly number[] {
    return this.head(layer, kvHead).origin(index);
  }
  codec(layer: number, kvHead: number, index: number): EntryCodec | null {
    return this.head(layer, kvHead).data.codecs?.[index] ?? null;
  }
  exact(layer: number, kvHead: number, index: number): ExactEntry | null {
    return this.head(layer, kvHead).data.codecs?.[index]?.exact ?? null;
  }
  /** entries hidden from the next forward, over every head */
  hiddenCount(): number {
    let n = 0;
    for (const head of this.heads) n += head.hiddenEntries;
    return n;
  }
  /** whether entry `index` is hidden from the next forward */
  hidden(layer: number, kvHead: number, index: number): boolean {
    return this.head(layer, kvHead).data.hidden?.[index] === 1;
  }
  /** Slots the graph gets for this layer: the longest head. */
  slotCount(layer: number): number {
    return slotCount(this.layerHeads(layer));
  }

  // ---- per-entry columns ----------------------------------------------------------------------

  private columnIndex(name: string): number {
    const k = this.columnSpecs.findIndex((c) => c.name === name);
    if (k < 0) throw new RangeError(`no cache column ${JSON.stringify(name)} (declared: ${this.columnSpecs.map((c) => c.name).join(', ') || 'none'})`);
    return k;
  }

  hasColumn(name: string): boolean {
    return this.columnSpecs.some((c) => c.name === name);
  }

  get columns(): readonly ColumnSpec[] {
    return this.columnSpecs;
  }

  declareColumns(specs: readonly ColumnSpec[]): void {
    const added: ColumnSpec[] = [];
    for (const spec of specs) {
      const existing = this.columnSpecs.find((c) => c.name === spec.name);
      if (!existing) {
        if (!Number.isInteger(spec.width) || spec.width < 1) throw new RangeError(`cache column ${spec.name}: width must be an integer ≥ 1`);
        added.push({ ...spec });
      } else if (existing.width !== spec.width || existing.reduce !== spec.reduce || !Object.is(existing.initial, spec.initial)) {
        throw new RangeError(`cache column ${JSON.stringify(spec.name)} is already declared differently`);
      }
    }
    if (added.length > 0) this.setColumns([...this.columnSpecs, ...added]);
  }

  /** Drops every column (a new policy starts without the previous one's state). */
  resetColumns(): void {
    if (this.columnSpecs.length > 0) this.setColumns([]);
  }

  private setColumns(next: ColumnSpec[]): void {
    const previous = this.columnSpecs;
    const saved = this.heads.map((head) => ({ head, data: head.data, columns: head.data.columns }));
    for (const head of this.heads) {
      const data = head.data;
      data.columns = next.map((spec) => {
        const k = previous.findIndex((c) => c.name === spec.name);
        if (k >= 0) return data.columns[k];
        const column = new Float64Array(data.capacity * spec.width).fill(spec.initial);
        this.journal.claim(column);
        return column;
      });
    }
    this.columnSpecs = next;
    this.journal.record(() => {
      this.columnSpecs = previous;
      for (const { data, columns } of saved) data.columns = columns;
    });
  }

  column(layer: number, kvHead: number, name: string): ReadonlyFloat64Array {
    const head = this.head(layer, kvHead);
    const k = this.columnIndex(name);
    return head.data.columns[k].subarray(0, head.length * this.columnSpecs[k].width);
  }

  writeColumn(layer: number, kvHead: number, name: string): Float64Array {
    const head = this.head(layer, kvHead);
    const k = this.columnIndex(name);
    const data = head.data;
    let column = data.columns[k];
    if (!this.journal.owns(column)) {
      const original = column;
      column = original.slice();
      data.columns[k] = column;
      this.journal.claim(column);
      this.journal.record(() => {
        data.columns[k] = original;
      });
    }
    return column.subarray(0, head.length * this.columnSpecs[k].width);
  }

  // ---- transactions ---------------------------------------------------------------------------

  get inTransaction(): boolean {
    return this.journal.open;
  }

  begin(): void {
    this.journal.begin();
  }

  commit(): void {
    this.journal.commit();
  }

  rollback(): void {
    this.journal.rollback();
  }

  /** A savepoint inside the open transaction (Journal.mark). */
  savepoint(): number {
    return this.journal.mark();
  }

  /** Undoes every change after the savepoint; the transaction stays open. */
  rollbackTo(savepoint: number): void {
    this.journal.rollbackTo(savepoint);
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
      if (n + q > head.data.capacity) {
        const old = head.data;
        head.ensureCapacity(n + q, this.columnSpecs);
        for (const column of head.data.columns) this.journal.claim(column);
        this.journal.record(() => {
          head.data = old;
        });
      }
      const data = head.data;
      data.keys.set(keys.subarray(h * q * d, (h + 1) * q * d), n * d);
      data.values.set(values.subarray(h * q * d, (h + 1) * q * d), n * d);
      for (let i = 0; i < q; i++) {
        data.pos[n + i] = positions[i];
        data.token[n + i] = firstToken + i;
        data.count[n + i] = 1;
        data.score[n + i] = Number.NaN;
      }
      this.columnSpecs.forEach((spec, k) => data.columns[k].fill(spec.initial, n * spec.width, (n + q) * spec.width));
      if (data.origins) for (let i = 0; i < q; i++) data.origins.push(null);
      if (data.codecs) for (let i = 0; i < q; i++) data.codecs.push(null);
      if (data.hidden) data.hidden.fill(0, n, n + q);
      head.length = n + q;
      this.journal.record(() => head.truncate(n));
    }
  }

  /**
   * Appends one forward's new entries (all layers), counts the tokens as fed, and makes entries
   * hidden from that forward visible again (a hide lasts one forward).
   */
  appendForward(newKeys: readonly Float32Array[], newValues: readonly Float32Array[], q: number, positions: ArrayLike<number>, firstToken: number): void {
    this.showHidden();
    for (let l = 0; l < this.nLayers; l++) this.appendLayer(l, newKeys[l], newValues[l], q, positions, firstToken);
    const previous = this.tokenCount;
    this.tokenCount = Math.max(this.tokenCount, firstToken + q);
    this.journal.record(() => {
      this.tokenCount = previous;
    });
  }

  private showHidden(): void {
    for (const head of this.heads) {
      if (head.hiddenEntries === 0 && !head.data.hidden) continue;
      const data = head.data;
      const hidden = data.hidden;
      const count = head.hiddenEntries;
      data.hidden = null;
      head.hiddenEntries = 0;
      this.journal.record(() => {
        data.hidden = hidden;
        head.hiddenEntries = count;
      });
    }
  }

  /** Forgets every policy score (a new policy must not read the previous one's scores). */
  clearScores(): void {
    for (const head of this.heads) {
      const data = head.data;
      const score = data.score;
      data.score = new Float32Array(data.capacity).fill(Number.NaN);
      this.journal.record(() => {
        data.score = score;
      });
    }
  }

  clear(): void {
    if (this.journal.open) throw new Error('cannot clear the cache inside a transaction');
    this.heads = this.heads.map(() => new HeadStore(this.headDim, this.initialCapacity, this.columnSpecs));
    this.groups = new Map();
    this.tokenCount = 0;
  }

  // ---- graph feeds ---------------------------------------------------------------------------

  /**
   * Builds every layer's feed for q new tokens (feeds.ts has the layout). The returned arrays are
   * views of reused buffers, valid until the next call.
   */
  buildFeeds(q: number): LayerFeed[] {
    const layout: FeedLayout = { nKvHeads: this.nKvHeads, nHeads: this.nHeads, headDim: this.headDim, groupSize: this.groupSize };
    const feeds: LayerFeed[] = [];
    const layers = Array.from({ length: this.nLayers }, (_, l) => this.layerHeads(l));
    for (let l = 0; l < this.nLayers; l++) {
      // Layers whose heads hold the same numbers of plain entries get the same bias: build it
      // once (a q × (T + q) mask per head is most of a prefill chunk's feed-building time).
      let shared: Float32Array | null = null;
      for (let j = 0; j < l && !shared; j++) if (sameBias(layers[l], layers[j])) shared = feeds[j].bias;
      feeds.push(buildLayerFeed(layers[l], layout, this.scratch[l], q, shared));
    }
    return feeds;
  }

  static entryAttention(attn: Float32Array, queryHead: number, row: number, q: number, slots: number, before: number, out?: Float32Array): Float32Array {
    return entryAttention(attn, queryHead, row, q, slots, before, out);
  }

  // ---- applying decisions ---------------------------------------------------------------------

  /**
   * Validates and applies a policy decision; throws PolicyDecisionError naming the problem.
   * Every head is validated before any is changed, so a rejected decision leaves the cache as it was.
   */
  apply(decision: Decision): AppliedDecision {
    const applied: AppliedDecision = { heads: [], evicted: 0, merged: 0, reencoded: 0, hidden: 0 };
    if (decision.note !== undefined) applied.note = decision.note;
    if (decision.nextPosition !== undefined) {
      if (!Number.isInteger(decision.nextPosition) || decision.nextPosition < 0) {
        throw new PolicyDecisionError(`decision nextPosition must be an integer ≥ 0, got ${decision.nextPosition}`);
      }
      applied.nextPosition = decision.nextPosition;
    }
    if (decision.budgets) applied.budgets = this.checkBudgets(decision.budgets);
    if (decision.measures) applied.measures = this.checkMeasures(decision.measures);
    if (decision.headMeasures) applied.headMeasures = this.checkHeadMeasures(decision.headMeasures);
    if (!decision.layers) {
      this.addGroups(decision.groups ?? [], []);
      // a group no entry names is not held
      if (decision.groups?.length) this.dropDeadGroups();
      return applied;
    }
    if (decision.layers.length !== this.nLayers) {
      throw new PolicyDecisionError(`decision lists ${decision.layers.length} layers, the cache has ${this.nLayers}`);
    }
    const ctx: ApplyContext = { headDim: this.headDim, rope: this.rope, columns: this.columnSpecs };
    const planned: { layer: number; kvHead: number; decision: HeadDecision; plan: HeadPlan }[] = [];
    for (let l = 0; l < this.nLayers; l++) {
      const layer = decision.layers[l];
      if (!layer) continue;
      if (layer.length !== this.nKvHeads) {
        throw new PolicyDecisionError(`decision for layer ${l} lists ${layer.length} heads, the cache has ${this.nKvHeads} KV heads`);
      }
      for (let h = 0; h < this.nKvHeads; h++) {
        const headDecision = layer[h];
        if (headDecision) planned.push({ layer: l, kvHead: h, decision: headDecision, plan: planHead(this.head(l, h), `decision for layer ${l} head ${h}`, headDecision, ctx) });
      }
    }
    // groups can only die where entries under a codec leave, where a re-encode stops naming its group, or where new groups came
    // (a live group declared again is named by the entries that named it before)
    const newGroups = (decision.groups ?? []).some((g) => !this.groups.has(g.id));
    this.addGroups(decision.groups ?? [], planned.map((p) => p.decision));
    const mayDropGroups = newGroups || planned.some((p) => (p.plan.inPlace ? p.plan.leavesGroup : this.head(p.layer, p.kvHead).data.codecs !== null));
    for (const { layer, kvHead, decision: headDecision, plan } of planned) {
      const head = this.head(layer, kvHead);
      const previous = head.data;
      const outcome = applyHead(head, layer, kvHead, headDecision, plan, ctx);
      // arrays the decision replaced belong to this transaction; compacted ones stay shared with its undo
      if (head.data !== previous) for (const column of head.data.columns) this.journal.claim(column);
      this.journal.record(outcome.undo);
      if (outcome.applied) this.count(applied, outcome.applied);
    }
    if (mayDropGroups && this.groups.size > 0) this.dropDeadGroups();
    return applied;
  }

  private count(applied: AppliedDecision, head: AppliedHead): void {
    applied.heads.push(head);
    applied.evicted += head.evictedPositions.length;
    applied.merged += head.merged.length;
    applied.reencoded += head.reencoded.length;
    applied.hidden = (applied.hidden ?? 0) + (head.hiddenTokens?.length ?? 0);
  }

  /**
   * Measure names are lower-case letters, digits and _ (as trace/read-decision.ts reads them back); the
   * guard comes first, so no name such as `__proto__` reaches the plain output object.
   */
  private checkMeasures(measures: Readonly<Record<string, readonly number[]>>): Record<string, number[]> {
    const out: Record<string, number[]> = {};
    for (const [name, values] of Object.entries(measures)) {
      if (!MEASURE_NAME.test(name)) throw new PolicyDecisionError(`decision measure name ${JSON.stringify(name)} must be lower-case letters, digits and _ (starting with a letter)`);
      if (!Array.isArray(values) || values.length !== this.nLayers || !values.every((v) => typeof v === 'number')) {
        throw new PolicyDecisionError(`decision measure ${JSON.stringify(name)} must be ${this.nLayers} numbers (one per layer)`);
      }
      out[name] = [...values];
    }
    return out;
  }

  /** Decision.headMeasures: names as measures, values [layer][kvHead] → finite-or-NaN numbers. */
  private checkHeadMeasures(measures: NonNullable<Decision['headMeasures']>): Record<string, number[][][]> {
    const out: Record<string, number[][][]> = {};
    for (const [name, grid] of Object.entries(measures)) {
      if (!MEASURE_NAME.test(name)) throw new PolicyDecisionError(`decision head measure name ${JSON.stringify(name)} must be lower-case letters, digits and _ (starting with a letter)`);
      const rows: ReadonlyArray<ReadonlyArray<readonly number[]>> = grid;
      const isNumbers = (values: unknown) => Array.isArray(values) && values.every((v) => typeof v === 'number');
      const shaped = Array.isArray(rows) && rows.length === this.nLayers && rows.every((row) => Array.isArray(row) && row.length === this.nKvHeads && row.every(isNumbers));
      if (!shaped) throw new PolicyDecisionError(`decision head measure ${JSON.stringify(name)} must be [${this.nLayers}][${this.nKvHeads}] lists of numbers`);
      out[name] = rows.map((row) => row.map((values: readonly number[]) => [...values]));
    }
    return out;
  }

  private checkBudgets(budgets: readonly (readonly number[])[]): number[][] {
    if (budgets.length !== this.nLayers || budgets.some((row) => row.length !== this.nKvHeads)) {
      throw new PolicyDecisionError(`decision budgets must be [${this.nLayers}][${this.nKvHeads}]`);
    }
    return budgets.map((row) => row.map((b) => b));
  }

  /** Registers the decision's codec groups (memory.ts checks them and the groups re-encodes name). */
  private addGroups(groups: readonly CodecGroup[], decisions: readonly HeadDecision[]): void {
    const next = withGroups(this.groups, groups, decisions);
    if (next === this.groups) return;
    const previous = this.groups;
    this.groups = next;
    this.journal.record(() => {
      this.groups = previous;
    });
  }

  private dropDeadGroups(): void {
    const live = liveGroups(this.heads);
    if (live.size === this.groups.size) return;
    const previous = this.groups;
    this.groups = new Map([...previous].filter(([id]) => live.has(id)));
    this.journal.record(() => {
      this.groups = previous;
    });
  }

  // ---- memory ---------------------------------------------------------------------------------

  /** Byte-exact memory of what the heads hold, next to the full fp32 cache for the same tokens. */
  memory(): MemoryReport {
    // every apply drops the groups no entry names (dropDeadGroups), so the store's groups are the live ones
    return memoryReport(this.heads, this.groups, this.tokenCount, this);
  }

  // ---- snapshots ------------------------------------------------------------------------------

  snapshot(): CacheSnapshot {
    if (this.journal.open) throw new Error('cannot snapshot the cache inside a transaction (a step is half applied)');
    return {
      tokenCount: this.tokenCount,
      columns: this.columnSpecs.map((c) => ({ ...c })),
      groups: [...this.groups.values()].map((g) => ({ ...g })),
      heads: this.heads.map((h) => snapshotHead(h, this.columnSpecs)),
    };
  }

  restore(snapshot: CacheSnapshot): void {
    if (this.journal.open) throw new Error('cannot restore a snapshot inside a transaction');
    if (snapshot.heads.length !== this.heads.length) {
      throw new RangeError(`cache snapshot has ${snapshot.heads.length} heads, this cache ${this.heads.length}`);
    }
    this.columnSpecs = snapshot.columns.map((c) => ({ ...c }));
    this.groups = new Map(snapshot.groups.map((g) => [g.id, { ...g }]));
    this.heads = snapshot.heads.map((s) => headFromSnapshot(s, this.headDim, this.columnSpecs));
    this.tokenCount = snapshot.tokenCount;
  }

  clone(): KVCacheStore {
    const copy = new KVCacheStore({ nLayers: this.nLayers, nKvHeads: this.nKvHeads, nHeads: this.nHeads, headDim: this.headDim }, this.rope, 1);
    copy.restore(this.snapshot());
    return copy;
  }
}
