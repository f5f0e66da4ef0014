/**
 * Validating and applying one head's decision (decision.ts) to its storage (head.ts).
 *
 * `planHead` checks everything and computes merged entries without changing anything, so the store
 * can validate every head before it touches any. `applyHead` compacts the head in place (a keep-all
 * decision replaces only its score / hidden arrays); it returns an `undo` that puts the head back
 * exactly (the store's transaction keeps it until commit) and `release` for what may be freed
 * once nobody can undo.
 */
import { PolicyDecisionError } from '../errors.ts';
import type { Rope } from '../model/rope.ts';
import type { EntryCodec, HeadDecision, MergeGroup } from './decision.ts';
import { moveEntries, type HeadData, type HeadStore } from './head.ts';
import type { AppliedHead, ColumnSpec } from './view.ts';

export interface ApplyContext {
  headDim: number;
  rope: Rope | null;
  columns: readonly ColumnSpec[];
}

interface MergedEntry {
  keys: Float32Array;
  values: Float32Array;
  count: number;
  origin: number[];
  pos: number;
  /** reduced value of every declared column, [columns][width] */
  columns: Float64Array[];
}

/** A validated head decision: role per entry (0 evicted, 1 kept, 2 merge anchor, 3 merged away). */
export interface HeadPlan {
  role: Uint8Array;
  anchorGroup: Int32Array;
  merged: MergedEntry[];
  /** every entry kept as it is, nothing else but scores / hidden flags: no arrays need rewriting */
  identity: boolean;
}

export interface HeadOutcome {
  /** null when nothing changed that the trace reports */
  applied: AppliedHead | null;
  undo: () => void;
  release: () => void;
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
  const identity = keep.length === n && merges.length === 0 && !decision.reencode?.length && !decision.reposition?.length;
  return { role, anchorGroup, merged, identity };
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
  const origin: number[] = [];
  members.forEach((m, k) => {
    const w = weights[k];
    if (!group.keys) for (let c = 0; c < d; c++) keys[c] += w * data.keys[m * d + c];
    if (!group.values) for (let c = 0; c < d; c++) values[c] += w * data.values[m * d + c];
    count += data.count[m];
    origin.push(...head.origin(m));
  });
  origin.sort((a, b) => a - b);
  if (group.count !== undefined) {
    if (!Number.isInteger(group.count) || group.count < 1) {
      throw new PolicyDecisionError(`${where}: merge group ${g} count must be an integer ≥ 1, got ${group.count}`);
    }
    count = group.count;
  }
  const columns = ctx.columns.map((spec, k) => reduceColumn(data.columns[k], spec, members, weights, anchor));
  const pos = group.pos ?? data.pos[anchor];
  return { keys, values, count, origin, pos, columns };
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

const NO_INDEX = new Int32Array(0);

function emptyApplied(layer: number, kvHead: number, n: number): AppliedHead {
  return { layer, kvHead, before: n, after: n, evictedTokens: [], evictedPositions: [], merged: [], reencoded: [], reencodedTokens: [], repositioned: 0, hiddenTokens: [] };
}

/** One entry's stored values, saved so that an in-place compaction can be undone. */
interface SavedEntry {
  index: number;
  keys: Float32Array;
  values: Float32Array;
  pos: number;
  token: number;
  count: number;
  columns: Float64Array[];
}

function saveEntry(data: HeadData, index: number, d: number, columns: readonly ColumnSpec[]): SavedEntry {
  return {
    index,
    keys: data.keys.slice(index * d, index * d + d),
    values: data.values.slice(index * d, index * d + d),
    pos: data.pos[index],
    token: data.token[index],
    count: data.count[index],
    columns: columns.map((c, k) => data.columns[k].slice(index * c.width, (index + 1) * c.width)),
  };
}

function restoreEntry(data: HeadData, e: SavedEntry, d: number, columns: readonly ColumnSpec[]): void {
  data.keys.set(e.keys, e.index * d);
  data.values.set(e.values, e.index * d);
  data.pos[e.index] = e.pos;
  data.token[e.index] = e.token;
  data.count[e.index] = e.count;
  columns.forEach((c, k) => data.columns[k].set(e.columns[k], e.index * c.width));
}

/**
 * Applies a planned decision in place: survivors move left in order (copyWithin), merged entries
 * take their anchor's slot, then re-encodes, moves and hides. What the compaction overwrites (the
 * entries that leave, merge anchors, re-encoded and moved entries) is saved first, so `undo` can
 * move the survivors back and restore the rest: the cost of being undoable is proportional to what
 * changed, not to the head.
 */
export function applyHead(head: HeadStore, layer: number, kvHead: number, decision: HeadDecision, plan: HeadPlan, ctx: ApplyContext): HeadOutcome {
  const n = head.length;
  const before = { data: head.data, length: n, merged: head.mergedEntries, hidden: head.hiddenEntries };
  const applied = emptyApplied(layer, kvHead, n);
  if (plan.identity) return applyInPlace(head, decision, applied, before);

  const d = ctx.headDim;
  const data = head.data;
  const merges = decision.merge ?? [];
  const { role, anchorGroup, merged } = plan;
  const old = { origins: data.origins, codecs: data.codecs, hidden: data.hidden, score: data.score.slice(0, n) };
  const saved: SavedEntry[] = [];
  for (let i = 0; i < n; i++) if (role[i] !== 1) saved.push(saveEntry(data, i, d, ctx.columns));
  // re-encodes and moves rewrite kept keys / values / positions: one copy of each block (P2 moves them all)
  const moves = (decision.reposition?.length ?? 0) > 0;
  const newKeys = moves || (decision.reencode?.some((re) => re.keys) ?? false);
  const newValues = decision.reencode?.some((re) => re.values) ?? false;
  const blocks = {
    keys: newKeys ? data.keys.slice(0, n * d) : null,
    values: newValues ? data.values.slice(0, n * d) : null,
    pos: moves ? data.pos.slice(0, n) : null,
  };
  /** original index of the entry now in slot j */
  const order = new Int32Array(n);
  // where each old entry went: only needed to place scores, re-encodes, moves and hidden flags
  const needIndex = Boolean(decision.scores || decision.reencode?.length || decision.reposition?.length || decision.hide?.length || old.hidden);
  const newIndex = needIndex ? new Int32Array(n).fill(-1) : NO_INDEX;
  const origins: (readonly number[] | null)[] | null = old.origins !== null || merges.length > 0 ? [] : null;
  const codecs: (EntryCodec | null)[] | null = old.codecs ? [] : null;
  let j = 0;
  for (let i = 0; i < n; ) {
    const r = role[i];
    if (r === 1) {
      let end = i + 1;
      while (end < n && role[end] === 1) end++;
      if (i !== j) moveEntries(data, i, j, end - i, d, ctx.columns);
      for (let k = i; k < end; k++) order[j + k - i] = k;
      if (needIndex) for (let k = i; k < end; k++) newIndex[k] = j + k - i;
      if (origins) for (let k = i; k < end; k++) origins[j + k - i] = old.origins?.[k] ?? null;
      if (codecs) for (let k = i; k < end; k++) codecs[j + k - i] = old.codecs?.[k] ?? null;
      j += end - i;
      i = end;
      continue;
    }
    if (r === 2) {
      const g = anchorGroup[i];
      const entry = merged[g];
      const score = data.score[i];
      data.keys.set(entry.keys, j * d);
      data.values.set(entry.values, j * d);
      data.pos[j] = entry.pos;
      data.token[j] = entry.origin[0];
      data.count[j] = entry.count;
      data.score[j] = score;
      ctx.columns.forEach((spec, k) => data.columns[k].set(entry.columns[k], j * spec.width));
      origins![j] = entry.origin.length === 1 ? null : entry.origin;
      if (codecs) codecs[j] = null;
      applied.merged.push({ into: j, origins: entry.origin, weights: [...merges[g].weights] });
      order[j] = i;
      if (needIndex) newIndex[i] = j;
      j++;
    } else if (r === 0) {
      for (const t of old.origins?.[i] ?? [data.token[i]]) applied.evictedTokens.push(t);
      applied.evictedPositions.push(data.pos[i]);
    }
    i++;
  }
  data.origins = origins;
  data.codecs = codecs;
  head.length = j;
  applied.after = j;

  if (decision.scores) {
    for (let i = 0; i < n; i++) if (newIndex[i] >= 0) data.score[newIndex[i]] = decision.scores[i];
  }
  for (const re of decision.reencode ?? []) {
    const target = newIndex[re.index];
    if (re.keys) data.keys.set(re.keys, target * d);
    if (re.values) data.values.set(re.values, target * d);
    data.codecs ??= new Array<null>(j).fill(null);
    data.codecs[target] = { ...re.codec };
    applied.reencoded.push({ index: target, codec: re.codec.name, kError: re.kError, vError: re.vError });
    applied.reencodedTokens!.push(data.token[target]);
  }
  reposition(data, decision, newIndex, applied, ctx);
  // hidden flags of a chain's earlier stage survive a later stage's decision
  data.hidden = null;
  if (old.hidden || decision.hide?.length) {
    data.hidden = new Uint8Array(data.capacity);
    if (old.hidden) for (let i = 0; i < n; i++) if (newIndex[i] >= 0 && old.hidden[i]) data.hidden[newIndex[i]] = 1;
    markHidden(data, decision.hide, newIndex, applied);
  }
  // counts of merged / hidden entries only change through merges, hides or losing such entries
  if (merges.length > 0 || before.merged > 0 || before.hidden > 0 || data.hidden) head.recount();

  const after = j;
  return {
    applied: changed(applied) ? applied : null,
    undo: () => {
      // survivors back to their old slots (right to left: a slot is free once its entry moved on)
      for (let k = after - 1; k >= 0; k--) if (order[k] !== k) moveEntries(data, k, order[k], 1, d, ctx.columns);
      // then everything the compaction overwrote
      for (const entry of saved) restoreEntry(data, entry, d, ctx.columns);
      if (blocks.keys) data.keys.set(blocks.keys);
      if (blocks.values) data.values.set(blocks.values);
      if (blocks.pos) data.pos.set(blocks.pos);
      data.score.set(old.score);
      data.origins = old.origins;
      data.codecs = old.codecs;
      data.hidden = old.hidden;
      head.length = before.length;
      head.mergedEntries = before.merged;
      head.hiddenEntries = before.hidden;
    },
    release: () => {},
  };
}

/** Keep-all decisions (scores, hidden flags): replace just those arrays, so undo is a swap. */
function applyInPlace(head: HeadStore, decision: HeadDecision, applied: AppliedHead, before: { data: HeadData; hidden: number }): HeadOutcome {
  const data = head.data;
  const oldScore = data.score;
  const oldHidden = data.hidden;
  const n = head.length;
  if (decision.scores) {
    const score = oldScore.slice();
    for (let i = 0; i < n; i++) score[i] = decision.scores[i];
    data.score = score;
  }
  if (decision.hide?.length) {
    data.hidden = oldHidden ? oldHidden.slice() : new Uint8Array(data.capacity);
    markHidden(data, decision.hide, null, applied);
    head.recount();
  }
  return {
    applied: changed(applied) ? applied : null,
    undo: () => {
      data.score = oldScore;
      data.hidden = oldHidden;
      head.hiddenEntries = before.hidden;
    },
    release: () => {},
  };
}

function markHidden(data: HeadData, hide: ArrayLike<number> | undefined, newIndex: Int32Array | null, applied: AppliedHead): void {
  if (!hide) return;
  for (let k = 0; k < hide.length; k++) {
    const target = newIndex ? newIndex[hide[k]] : hide[k];
    data.hidden![target] = 1;
    applied.hiddenTokens!.push(data.token[target]);
  }
}

/**
 * Runs of moves with consecutive targets and the same delta (StreamingLLM P2 shifts every recent
 * key by the same amount) are rotated with one call: cos/sin computed once per run.
 */
function reposition(dst: HeadData, decision: HeadDecision, newIndex: Int32Array, applied: AppliedHead, ctx: ApplyContext): void {
  const moves = decision.reposition ?? [];
  const d = ctx.headDim;
  for (let m = 0; m < moves.length; ) {
    const target = newIndex[moves[m].index];
    const delta = moves[m].pos - dst.pos[target];
    let run = 1;
    while (m + run < moves.length) {
      const next = newIndex[moves[m + run].index];
      if (next !== target + run || moves[m + run].pos - dst.pos[next] !== delta) break;
      run++;
    }
    ctx.rope!.rotate(dst.keys, delta, target * d, run);
    for (let k = 0; k < run; k++) dst.pos[target + k] = moves[m + k].pos;
    applied.repositioned += run;
    m += run;
  }
}

function changed(applied: AppliedHead): boolean {
  return (
    applied.after !== applied.before ||
    applied.merged.length > 0 ||
    applied.reencoded.length > 0 ||
    applied.repositioned > 0 ||
    (applied.hiddenTokens?.length ?? 0) > 0
  );
}
