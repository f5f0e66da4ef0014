/**
 * Window-level selection (stages.ts Selector) — WindowKV (Zuo et al., 2025,
 * https://arxiv.org/abs/2503.17922; reference optim996/WindowKV `models/compress_utils.py`
 * get_window_score): the review part [0, n − W) of a head, W = budget.recent (the observation
 * suffix, always kept), is cut into consecutive windows of `windowSize` entries from the start (the
 * last may be shorter) and whole windows are dropped, lowest score first, until the kept review
 * part fits in budget.total − W. Window scores come from the suffix's votes (window-votes.ts
 * headVotes) of every query head of the layer — `mean` over heads and the window's tokens, or
 * `topmean`, per head the mean of its top ⌊w/2⌋ votes, then the mean over heads.
 * A layer whose KV heads hold the same number of entries selects once for all of them; one whose
 * heads differ (a ragged cache) selects per KV head from its own query heads. Layer groups of
 * `groupSize`: the group's first layer shares its windows with the later layers of the same length
 * (env.shared, scratch of one decision). budget.total < W keeps the newest budget.total entries.
 */
import { indexRange } from '../policies/types.ts';
import type { Selector } from './stages.ts';
import { headVotes, lastRows } from './window-votes.ts';

export type WindowScore = 'mean' | 'topmean';

/** Score of each window of the review part [0, review) from per-query-head vote arrays. */
export function windowScores(votes: readonly Float64Array[], review: number, windowSize: number, score: WindowScore): Float64Array {
  const count = Math.ceil(review / windowSize);
  const out = new Float64Array(count);
  const top = Math.max(1, Math.floor(windowSize / 2));
  for (let w = 0; w < count; w++) {
    const a = w * windowSize;
    const b = Math.min(review, a + windowSize);
    let total = 0;
    for (const v of votes) {
      if (score === 'mean') {
        for (let j = a; j < b; j++) total += v[j];
      } else {
        const values = Array.from(v.subarray(a, b)).sort((x, y) => y - x);
        const k = Math.min(top, values.length);
        let s = 0;
        for (let i = 0; i < k; i++) s += values[i];
        total += s / k;
      }
    }
    out[w] = score === 'mean' ? total / (votes.length * (b - a)) : total / votes.length;
  }
  return out;
}

/** Windows kept (ascending window indices) so that the kept review entries are ≤ budget. */
export function selectWindows(scores: Float64Array, review: number, windowSize: number, budget: number): number[] {
  const count = scores.length;
  // rank best first; stable → among equal scores the earlier window ranks higher (later dropped first)
  const order = Array.from({ length: count }, (_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
  const kept = new Set(order);
  let size = review;
  for (let r = count - 1; r >= 0 && size > budget; r--) {
    const w = order[r];
    kept.delete(w);
    size -= Math.min(review, (w + 1) * windowSize) - w * windowSize;
  }
  return [...kept].sort((a, b) => a - b);
}

function keepFromWindows(windows: readonly number[], review: number, windowSize: number, n: number): Int32Array {
  const out: number[] = [];
  for (const w of windows) for (let j = w * windowSize; j < Math.min(review, (w + 1) * windowSize); j++) out.push(j);
  for (let j = review; j < n; j++) out.push(j);
  return Int32Array.from(out);
}

export function windowSelector(windowSize: number, score: WindowScore, groupSize: number): Selector {
  return {
    select(env, head) {
      const { layer, kvHead, length: n } = head;
      const { total, recent: rows } = head.budget;
      // C < W keeps the newest C; C = W (or a review budget of 0) drops every window below
      if (total < rows) return indexRange(n - total, n);
      const review = n - rows;
      const blocks = lastRows(env, layer, rows);
      const choose = (queryHeads: readonly number[]) =>
        selectWindows(windowScores(queryHeads.map((qh) => headVotes(blocks[qh], rows, review)), review, windowSize, score), review, windowSize, total - rows);
      let uniform = true;
      for (let h = 1; h < env.cache.nKvHeads; h++) uniform &&= env.cache.length(layer, h) === env.cache.length(layer, 0);
      if (!uniform) {
        const group = blocks.length / env.cache.nKvHeads;
        return keepFromWindows(choose(Array.from({ length: group }, (_, g) => kvHead * group + g)), review, windowSize, n);
      }
      const key = `windowkv layer ${layer}`;
      if (!env.shared.has(key)) {
        const groupKey = `windowkv group ${Math.floor(layer / groupSize)}`;
        const first = env.shared.get(groupKey) as { windows: number[]; n: number } | undefined;
        const windows = layer % groupSize !== 0 && first?.n === n ? first.windows : choose(Array.from({ length: blocks.length }, (_, qh) => qh));
        if (layer % groupSize === 0) env.shared.set(groupKey, { windows, n });
        env.shared.set(key, windows);
      }
      return keepFromWindows(env.shared.get(key) as number[], review, windowSize, n);
    },
  };
}
