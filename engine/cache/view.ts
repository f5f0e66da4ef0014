/**
 * What the cache looks like from outside the store: the read-only view policies get, the
 * per-entry columns they may declare and write, the memory report and what applying a decision
 * did (the trace records AppliedDecision as is).
 */
import type { EntryCodec, ExactEntry } from './decision.ts';
import type { ReadonlyFloat32Array, ReadonlyInt32Array } from '../types.ts';

export type ReadonlyFloat64Array = Readonly<Omit<Float64Array, 'set' | 'fill' | 'copyWithin' | 'sort' | 'reverse'>>;

/**
 * How a per-entry column combines when entries merge: `sum` adds the members' values, `max` takes
 * the largest, `weighted` Σ weight·value with the merge weights, `anchor` keeps the anchor's.
 */
export type ColumnReduce = 'sum' | 'max' | 'weighted' | 'anchor';

/**
 * A per-entry column a policy stage keeps in the store (accumulated attention, visit counts, …).
 * The store keeps it aligned with the entries through eviction, merges, snapshots and forks, so
 * a stage never re-gathers its own state. `width` values per entry (e.g. one per query head of the
 * KV head's group); new entries start at `initial`.
 */
export interface ColumnSpec {
  name: string;
  width: number;
  reduce: ColumnReduce;
  initial: number;
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
  /** the key / value entry `index` held before its first codec (null while it has none): for error views */
  exact(layer: number, kvHead: number, index: number): ExactEntry | null;
  /** [length, width] values of a declared column; throws for an undeclared one */
  column(layer: number, kvHead: number, name: string): ReadonlyFloat64Array;
  hasColumn(name: string): boolean;
}

/** The view a policy's stages get: the cache plus write access to the columns they declared. */
export interface PolicyCache extends CacheView {
  /** declares columns (idempotent for the same spec); existing values are kept */
  declareColumns(specs: readonly ColumnSpec[]): void;
  /** [length, width] writable values of a declared column (in a transaction: a private copy) */
  writeColumn(layer: number, kvHead: number, name: string): Float64Array;
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
  /** bytes of live codec groups (included in kBytes / vBytes), each counted once; absent in traces before groups existed */
  groupBytes?: number;
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
  /**
   * merged entries this decision made: `into` its place after the decision, `origins` every token
   * it stands for; per member (the group's order) its weight, first token and the cosine of its
   * key to the merged key; `count` the tokens it counts for in the attention bias (log count).
   * `count`, `memberTokens` and `similarity` are absent in older traces.
   */
  merged: { into: number; origins: number[]; weights: number[]; count?: number; memberTokens?: number[]; similarity?: number[] }[];
  /** index = the entry's place after the decision */
  reencoded: { index: number; codec: string; kError?: number; vError?: number }[];
  /** first origin token of each re-encoded entry, in the order of `reencoded` (absent in older traces) */
  reencodedTokens?: number[];
  repositioned: number;
  /** first tokens of the entries hidden from the next forward (absent in older traces) */
  hiddenTokens?: number[];
}

export interface AppliedDecision {
  /** only heads that changed */
  heads: AppliedHead[];
  evicted: number;
  merged: number;
  reencoded: number;
  /** entries hidden from the next forward (absent in older traces) */
  hidden?: number;
  note?: string;
  nextPosition?: number;
  /** [layer][kvHead] the method's allocation, when it stated one */
  budgets?: number[][];
  /** per-layer measurements the method made, for views (Decision.measures) */
  measures?: Record<string, number[]>;
  /** per-head measurements the method made, for views (Decision.headMeasures): name → [layer][kvHead] → numbers */
  headMeasures?: Record<string, number[][][]>;
}
