/**
 * What the replay keeps of the merge that made each merged entry (engine/trace/replay.ts holds the
 * entries; this module reads a trace's merge record into the form it keeps). A merged entry is
 * made by one decision and replaced wholesale when a later decision merges it again (D2O folds
 * more evicted entries into the same kept one), so one record per held entry is its latest merge.
 *
 * The trace's `AppliedHead.merged[]` entry (engine/cache/view.ts) carries the member weights; newer
 * traces add `count` (tokens it counts for in the attention bias), `memberTokens` (each member's
 * first token) and `similarity` (cosine of each member's key to the merged key). Fields an older
 * trace lacks are null here, so views say "not recorded" instead of guessing: a count cannot be
 * inferred from the origins (RazorAttention's `count=one` gives a merged entry count 1).
 */

/** The merge that made a held entry, as recorded in the trace. Never mutated once made. */
export interface MergeRecord {
  /** index of the trace event whose decision made it */
  readonly event: number;
  /** per member, in the group's order */
  readonly weights: readonly number[];
  /** first origin token of each member; null in older traces */
  readonly memberTokens: readonly number[] | null;
  /** tokens each member stood for when it was merged (the replay knows what it held); null when memberTokens is */
  readonly memberSizes: readonly number[] | null;
  /** cosine of each member's key to the merged key; null in older traces */
  readonly similarity: readonly number[] | null;
  /** tokens it counts for in the attention bias (log count when > 1); null in older traces */
  readonly count: number | null;
}

/** One merged entry of a head's applied decision, typed loosely (traces come from JSON and from older engines). */
export interface ReplayableMerge {
  into: number;
  origins: readonly number[];
  weights?: readonly number[];
  count?: number;
  memberTokens?: readonly number[];
  similarity?: readonly number[];
}

function numbers(value: unknown): number[] | null {
  return Array.isArray(value) && value.every((v) => typeof v === 'number') ? [...value] : null;
}

/**
 * The record of `merge`, made by event `event`. `sizeOf(token)` is the number of tokens the entry
 * whose first token is `token` stood for just before the decision (null when the head held no such
 * entry); member sizes are kept only when every member is found, so a trace whose member tokens do
 * not name entries shows none rather than wrong ones.
 */
export function mergeRecord(merge: ReplayableMerge, event: number, sizeOf: (token: number) => number | null): MergeRecord {
  const weights = numbers(merge.weights) ?? [];
  const memberTokens = numbers(merge.memberTokens);
  const similarity = numbers(merge.similarity);
  let memberSizes: number[] | null = null;
  if (memberTokens) {
    const sizes = memberTokens.map(sizeOf);
    if (sizes.every((s): s is number => s !== null)) memberSizes = sizes;
  }
  const count = typeof merge.count === 'number' && Number.isFinite(merge.count) ? merge.count : null;
  return { event, weights, memberTokens, memberSizes, similarity, count };
}
