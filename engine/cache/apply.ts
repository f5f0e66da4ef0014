/**
 * Applying one head's validated decision (plan.ts) to its storage (head.ts): `applyHead` compacts
 * the head in place (a keep-all decision replaces only its score / hidden arrays) and returns an
 * `undo` that puts the head back exactly (the store's transaction keeps it until commit).
 */
import type { ExactEntry, HeadDecision } from './decision.ts';
import { moveEntries, storedCodec, type HeadData, type HeadStore, type StoredCodec } from './head.ts';
import type { ApplyContext, HeadPlan } from './plan.ts';
import type { AppliedHead, ColumnSpec } from './view.ts';

export interface HeadOutcome {
  /** null when nothing changed that the trace reports */
  applied: AppliedHead | null;
  undo: () => void;
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
  if (plan.inPlace) return applyReencodesInPlace(head, decision, applied, before, ctx.headDim);

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
  const codecs: (StoredCodec | null)[] | null = old.codecs ? [] : null;
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
      applied.merged.push({ into: j, origins: entry.origin, weights: [...merges[g].weights], count: entry.count, memberTokens: entry.memberTokens, similarity: entry.similarity });
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
    data.codecs ??= new Array<null>(j).fill(null);
    // the K/V the model computed, kept from the entry's first codec on (error views; not memory)
    const exact = data.codecs[target]?.exact ?? (re.keys || re.values ? exactEntry(data, target, d) : undefined);
    if (re.keys) data.keys.set(re.keys, target * d);
    if (re.values) data.values.set(re.values, target * d);
    data.codecs[target] = storedCodec(re.codec, exact);
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
  };
}

/**
 * A decision that keeps every entry in its place and re-encodes some (a quantizer's step): only the
 * re-encoded rows and codec slots are rewritten, each saved first, so a step costs what it
 * re-encodes, not the head (no compaction, no copy of the head's K/V).
 */
function applyReencodesInPlace(head: HeadStore, decision: HeadDecision, applied: AppliedHead, before: { data: HeadData; hidden: number }, d: number): HeadOutcome {
  const marks = applyInPlace(head, decision, applied, before);
  const data = head.data;
  const oldCodecs = data.codecs;
  const codecs = oldCodecs ?? new Array<StoredCodec | null>(head.length).fill(null);
  const saved: { index: number; codec: StoredCodec | null; keys: Float32Array | null; values: Float32Array | null }[] = [];
  for (const re of decision.reencode ?? []) {
    const i = re.index;
    const previous = codecs[i] ?? null;
    saved.push({ index: i, codec: previous, keys: re.keys ? data.keys.slice(i * d, (i + 1) * d) : null, values: re.values ? data.values.slice(i * d, (i + 1) * d) : null });
    // the K/V the model computed, kept from the entry's first codec on (error views; not memory)
    const exact = previous?.exact ?? (re.keys || re.values ? exactEntry(data, i, d) : undefined);
    if (re.keys) data.keys.set(re.keys, i * d);
    if (re.values) data.values.set(re.values, i * d);
    codecs[i] = storedCodec(re.codec, exact);
    applied.reencoded.push({ index: i, codec: re.codec.name, kError: re.kError, vError: re.vError });
    applied.reencodedTokens!.push(data.token[i]);
  }
  data.codecs = codecs;
  return {
    applied: changed(applied) ? applied : null,
    undo: () => {
      for (let k = saved.length - 1; k >= 0; k--) {
        const { index, codec, keys, values } = saved[k];
        if (keys) data.keys.set(keys, index * d);
        if (values) data.values.set(values, index * d);
        codecs[index] = codec;
      }
      data.codecs = oldCodecs;
      marks.undo();
    },
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

function exactEntry(data: HeadData, index: number, d: number): ExactEntry {
  return { keys: data.keys.slice(index * d, (index + 1) * d), values: data.values.slice(index * d, (index + 1) * d) };
}
