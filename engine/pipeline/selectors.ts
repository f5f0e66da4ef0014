/**
 * Shared selectors (stages.ts Selector): which entries of a head over its budget stay.
 * Every result is ascending and unique and keeps at least one entry.
 */
import { sinksRecentTopK, topK, type TieBreak } from '../policies/common.ts';
import { indexRange } from '../policies/types.ts';
import type { Selector } from './stages.ts';

/**
 * The first `sinks`, the last `budget.recent`, and the best-scoring entries of the middle up to
 * `budget.total` (StreamingLLM without scores, H2O and D2O with them; ties per `tie`). Sinks take
 * places of the budget's non-recent part, never more (D2O's sinks count among its heavy hitters),
 * so a head never keeps more than `budget.total`.
 */
export function sinksRecentTopKSelector(sinks: number, tie: TieBreak = 'older'): Selector {
  return {
    select(_env, head) {
      const { total, recent } = head.budget;
      const s = Math.min(sinks, Math.max(0, total - recent));
      const k = Math.max(0, total - s - recent);
      return sinksRecentTopK(head.length, s, recent, k, k > 0 ? head.scores : null, tie);
    },
  };
}

/** The `budget.total` best-scoring entries (TOVA); without scores, the newest. */
export function topKSelector(tie: TieBreak = 'older'): Selector {
  return {
    select(_env, head) {
      const total = Math.max(1, Math.floor(head.budget.total));
      if (!head.scores) return indexRange(head.length - Math.min(total, head.length), head.length);
      return topK(head.scores, total, tie);
    },
  };
}

/** Top `total − recent` of the entries before the last `recent` (the observation window), plus that window (SnapKV, CompressKV). */
export function topKPlusWindowSelector(tie: TieBreak = 'older'): Selector {
  return {
    select(_env, head) {
      const { total, recent } = head.budget;
      const n = head.length;
      const w = Math.min(recent, n);
      if (total <= w || !head.scores) return indexRange(n - Math.min(total, n), n);
      const picked = topK(head.scores, total - w, tie, 0, n - w);
      const out = new Int32Array(picked.length + w);
      out.set(picked);
      for (let i = 0; i < w; i++) out[picked.length + i] = n - w + i;
      return out;
    },
  };
}
