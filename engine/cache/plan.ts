/**
 * Checking one head's decision (decision.ts) against its storage (head.ts) before anything changes:
 * indices, roles (kept, evicted, merge anchor, merged away), re-encodes, moves and hides. Merged
 * entries (K/V, origin, count and every column's reduction) are computed here, from the head as it
 * is, so the store can validate every head of a decision before it touches any (apply.ts).
 */
import { PolicyDecisionError } from '../errors.ts';
import type { Rope } from '../model/rope.ts';
import type { HeadDecision, MergeGroup } from './decision.ts';
import type { HeadStore } from './head.ts';
import type { ColumnSpec } from './view.ts';

export interface ApplyContext {
  headDim: number;
  rope: Rope | null;
  columns: readonly ColumnSpec[];
}

export interface MergedEntry {
  keys: Float32Array;
  values: Float32Array;
  count: number;
  origin: number[];
  pos: number;
  /** reduced value of every declared column, [columns][width] */
  columns: Float64Array[];
  /** first origin token of each member, in the group's member order (for the trace) */
  memberTokens: number[];
  /** cosine similarity of each member's key to the merged key, member order (for the trace) */
  similarity: number[];
}

/** A validated head decision: role per entry (0 evicted, 1 kept, 2 merge anchor, 3 merged away). */
export interface HeadPlan {
  role: Uint8Array;
  anchorGroup: Int32Array;
  merged: MergedEntry[];
  /** every entry kept as it is, nothing else but scores / hidden flags: no arrays need rewriting */
  identity: boolean;
  /** every entry kept in its place (re-encodes, scores, hidden flags only): rewritten in place, no compaction */
  inPlace: boolean;
  /** a re-encode replaces a codec that named a codec group with one that does not name it (the group may die) */
  leavesGroup: boolean;
}

function ascendingUniqueProblem(indices: ArrayLike<number>, n: number): string | null {
  if (indices instanceof Int32Array) return ascendingInt32Problem(indices, n);
  let previous = -1;
  for (let i = 0; i < indices.length; i++) {
    const index = indices[i];
    if (!Number.isInteger(index) || index < 0 || index >= n) return `index ${index} is out of range [0, ${n})`;
    if (index <= previous) return `indices must be ascending and unique (${previous} then ${index})`;
    previous = index;
  }
  return null;
}

/** The same check for an Int32Array (the common case), kept monomorphic for speed: its values are integers. */
function ascendingInt32Problem(indices: Int32Array, n: number): string | null {
  let previous = -1;
  for (let i = 0; i < indices.length; i++) {
    const index = indices[i];
    if (index < 0 || index >= n) return `index ${index} is out of range [0, ${n})`;
    if (index <= previous) return `indices must be ascending and unique (${previous} then ${index})`;
    previous = index;
  }
  return null;
}

/** Checks a head decision against the head without changing anything; computes merged entries. */
export function planHead(head: HeadStore, where: string, decision: HeadDecision, ctx: ApplyContext): HeadPlan {
  const n = head.length;
  const d = ctx.headDim;
  const keep = decision.keep;
  const merges = decision.merge ?? [];

  const keepProblem = ascendingUniqueProblem(keep, n);
  if (keepProblem) throw new PolicyDecisionError(`${where}: keep ${keepProblem}`);
  if (keep.length + merges.length === 0 && n > 0) {
    throw new PolicyDecisionError(`${where}: would leave the head empty (at least one entry must be kept)`);
  }
  if (decision.scores && decision.scores.length !== n) {
    throw new PolicyDecisionError(`${where}: scores has ${decision.scores.length} values for ${n} entries`);
  }
  const role = new Uint8Array(n);
  if (keep instanceof Int32Array) for (let i = 0; i < keep.length; i++) role[keep[i]] = 1;
  else for (let i = 0; i < keep.length; i++) role[keep[i]] = 1;
  const anchorGroup = new Int32Array(merges.length > 0 ? n : 0).fill(-1);
  const merged = merges.map((group, g) => prepareMerge(head, group, g, role, anchorGroup, where, ctx));
  for (const re of decision.reencode ?? []) {
    if (!(re.index >= 0 && re.index < n && role[re.index] === 1)) throw new PolicyDecisionError(`${where}: reencode index ${re.index} is not a kept entry`);
    const { kBits, vBits, kElements, vElements, kMetaBytes, vMetaBytes } = re.codec;
    if (![kBits, vBits, kElements, vElements, kMetaBytes, vMetaBytes].every((x) => Number.isFinite(x) && x >= 0)) {
      throw new PolicyDecisionError(`${where}: reencode of entry ${re.index} needs finite, non-negative codec bits, elements and metadata bytes`);
    }
    if ((re.keys && re.keys.length !== d) || (re.values && re.values.length !== d)) {
      throw new PolicyDecisionError(`${where}: reencode of entry ${re.index} must give ${d} floats per key/value`);
    }
  }
  for (const move of decision.reposition ?? []) {
    if (!(move.index >= 0 && move.index < n && role[move.index] === 1)) throw new PolicyDecisionError(`${where}: reposition index ${move.index} is not a kept entry`);
    if (!Number.isInteger(move.pos) || move.pos < 0) throw new PolicyDecisionError(`${where}: reposition to invalid position ${move.pos}`);
    if (!ctx.rope) throw new PolicyDecisionError(`${where}: reposition needs the model's RoPE parameters`);
  }
  const hide = decision.hide ?? [];
  const hideProblem = ascendingUniqueProblem(hide, n);
  if (hideProblem) throw new PolicyDecisionError(`${where}: hide ${hideProblem}`);
  for (let i = 0; i < hide.length; i++) {
    if (role[hide[i]] !== 1) throw new PolicyDecisionError(`${where}: hide index ${hide[i]} is not a kept entry`);
  }
  const inPlace = keep.length === n && merges.length === 0 && !decision.reposition?.length;
  const identity = inPlace && !decision.reencode?.length;
  const codecs = head.data.codecs;
  const leavesGroup = codecs !== null && (decision.reencode ?? []).some((re) => {
    const group = codecs[re.index]?.group;
    return group !== undefined && group !== re.codec.group;
  });
  return { role, anchorGroup, merged, identity, inPlace, leavesGroup };
}

/** Validates one merge group and computes its merged entry before anything is overwritten. */
function prepareMerge(head: HeadStore, group: MergeGroup, g: number, role: Uint8Array, anchorGroup: Int32Array, where: string, ctx: ApplyContext): MergedEntry {
  const n = head.length;
  const d = ctx.headDim;
  const data = head.data;
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
  if (!weights.every(Number.isFinite)) throw new PolicyDecisionError(`${where}: merge group ${g} weights must be finite numbers`);
  if (group.pos !== undefined && (!Number.isInteger(group.pos) || group.pos < 0)) throw new PolicyDecisionError(`${where}: merge group ${g} position must be an integer ≥ 0, got ${group.pos}`);
  for (const [name, given] of [['keys', group.keys], ['values', group.values]] as const) {
    if (given && given.length !== d) throw new PolicyDecisionError(`${where}: merge group ${g} ${name} must have ${d} floats, got ${given.length}`);
  }

  const keys = group.keys ? Float32Array.from(group.keys) : new Float32Array(d);
  const values = group.values ? Float32Array.from(group.values) : new Float32Array(d);
  let count = 0;
  let origin: number[] = [];
  members.forEach((m, k) => {
    const w = weights[k];
    if (!group.keys) for (let c = 0; c < d; c++) keys[c] += w * data.keys[m * d + c];
    if (!group.values) for (let c = 0; c < d; c++) values[c] += w * data.values[m * d + c];
    count += data.count[m];
    origin = mergeAscending(origin, head.origin(m));
  });
  if (group.count !== undefined) {
    if (!Number.isInteger(group.count) || group.count < 1) {
      throw new PolicyDecisionError(`${where}: merge group ${g} count must be an integer ≥ 1, got ${group.count}`);
    }
    count = group.count;
  }
  const columns = ctx.columns.map((spec, k) => reduceColumn(data.columns[k], spec, members, weights, anchor));
  const pos = group.pos ?? data.pos[anchor];
  const memberTokens = members.map((m) => data.token[m]);
  const similarity = members.map((m) => keyCosine(data.keys, m * d, keys, d));
  return { keys, values, count, origin, pos, columns, memberTokens, similarity };
}

/**
 * The union of two ascending token lists (an entry's origin is ascending and disjoint from every
 * other entry's), in linear time: centres that absorb one entry per step would otherwise re-sort
 * their whole origin on every merge.
 */
function mergeAscending(a: readonly number[], b: readonly number[]): number[] {
  const out = new Array<number>(a.length + b.length);
  let i = 0;
  let j = 0;
  let o = 0;
  while (i < a.length && j < b.length) out[o++] = a[i] <= b[j] ? a[i++] : b[j++];
  while (i < a.length) out[o++] = a[i++];
  while (j < b.length) out[o++] = b[j++];
  return out;
}

/** Cosine similarity of the key at `offset` in `keys` to `merged` (0 when either is zero). */
function keyCosine(keys: Float32Array, offset: number, merged: Float32Array, d: number): number {
  let dot = 0;
  let a = 0;
  let b = 0;
  for (let c = 0; c < d; c++) {
    const x = keys[offset + c];
    const y = merged[c];
    dot += x * y;
    a += x * x;
    b += y * y;
  }
  const norm = Math.sqrt(a * b);
  return norm > 0 ? dot / norm : 0;
}

function reduceColumn(column: Float64Array, spec: ColumnSpec, members: readonly number[], weights: readonly number[], anchor: number): Float64Array {
  const w = spec.width;
  const out = new Float64Array(w);
  if (spec.reduce === 'anchor') {
    out.set(column.subarray(anchor * w, anchor * w + w));
    return out;
  }
  if (spec.reduce === 'max') out.fill(-Infinity);
  members.forEach((m, k) => {
    for (let c = 0; c < w; c++) {
      const x = column[m * w + c];
      if (spec.reduce === 'max') out[c] = Math.max(out[c], x);
      else out[c] += spec.reduce === 'weighted' ? weights[k] * x : x;
    }
  });
  return out;
}
