/**
 * Entries still in play: for methods that never evict but retire entries for good (MiKV demotes
 * what H2O would evict to low precision, and a demoted entry never competes again). A store column
 * says what the method knows of each entry without reading its codec, so a step costs the entries
 * in play, not the head:
 *   0 (OUT_OF_PLAY)  retired: never looked at again
 *   1 (UNSEEN)       new, or not looked at since it arrived / the method was attached
 *   2 (KNOWN)        in play and in the state the method put it in when it last looked
 * Merged entries take the max of their members (a merge makes a plain entry: a method that cares
 * re-checks an entry's codec before it changes it).
 *
 * `inPlayAttention` is H2O's accumulated attention (Zhang et al., 2023; pipeline/scorers.ts)
 * kept for the entries in play only: S_j += the attention of every query row, reduced to the KV
 * head per row with `gqa` (gqa.ts reduceAt, D2O's `gqaAt: 'row'`; sum and mean rank as H2O's
 * per-query-head sums). A retired entry's score stays what it was when it was retired.
 */
import { sinksRecentTopK } from '../policies/common.ts';
import { reduceAt, type GqaReduce } from './gqa.ts';
import type { Scorer, StageEnv } from './stages.ts';

export const IN_PLAY_COLUMN = 'in_play';
export const OUT_OF_PLAY = 0;
export const UNSEEN = 1;
export const KNOWN = 2;

/** A head's entries in play (ascending) and, per entry, whether the column says KNOWN. */
export interface InPlay {
  indices: Int32Array;
  known: Uint8Array;
}

/** The head's entries in play for this decision: scanned once and shared by the stages (env.shared). */
export function inPlayEntries(env: StageEnv, layer: number, kvHead: number): InPlay {
  const key = `in-play-${layer}-${kvHead}`;
  const shared = env.shared.get(key) as InPlay | undefined;
  if (shared) return shared;
  const column = env.cache.column(layer, kvHead, env.column(IN_PLAY_COLUMN));
  const n = column.length;
  const indices = new Int32Array(n);
  const known = new Uint8Array(n);
  let count = 0;
  for (let i = 0; i < n; i++) {
    const state = column[i];
    if (state === OUT_OF_PLAY) continue;
    known[count] = state === KNOWN ? 1 : 0;
    indices[count++] = i;
  }
  const found = { indices: indices.subarray(0, count), known: known.subarray(0, count) };
  env.shared.set(key, found);
  return found;
}

export function inPlayAttention(group: number, gqa: GqaReduce): Scorer {
  return {
    columns: [
      { name: 'attention', width: 1, reduce: 'sum', initial: 0 },
      { name: IN_PLAY_COLUMN, width: 1, reduce: 'max', initial: UNSEEN },
    ],
    needs: { attention: true },
    withoutHistory: 'no attention history: accumulated scores start at 0, so the oldest entries count as heavy until attention accumulates',
    observe(env) {
      const { cache } = env;
      const rows = env.prefill ? env.prefill.attentionSums : (env.step?.attention ?? null);
      if (!rows) return;
      for (let l = 0; l < cache.nLayers; l++) {
        for (let h = 0; h < cache.nKvHeads; h++) {
          const { indices } = inPlayEntries(env, l, h);
          const scores = cache.writeColumn(l, h, env.column('attention'));
          const groupRows = rows[l].slice(h * group, (h + 1) * group);
          for (const j of indices) scores[j] += reduceAt(groupRows, j, gqa);
        }
      }
    },
    headScores(env, layer, kvHead) {
      return Float64Array.from(env.cache.column(layer, kvHead, env.column('attention')));
    },
  };
}

/**
 * Flags, per entry in play, of the important ones: the newest `recent` and the `heavy`
 * best-scoring of the rest (H2O's keep set over the entries in play; ties → the older).
 */
export function importantAmong(inPlay: Int32Array, scores: ArrayLike<number>, heavy: number, recent: number): Uint8Array {
  const m = inPlay.length;
  const flags = new Uint8Array(m);
  if (m <= heavy + recent) return flags.fill(1);
  const gathered = new Float64Array(m);
  for (let k = 0; k < m; k++) gathered[k] = scores[inPlay[k]];
  for (const k of sinksRecentTopK(m, 0, recent, heavy, gathered)) flags[k] = 1;
  return flags;
}
