/**
 * Bookkeeping for the "what was forgotten" overlay and the heavy-hitter view. Pure functions over
 * what the worker sent (eviction triples, score grids, cache maps): no model math.
 *
 * Eviction moments are ordered codes: the prefill decision is 0, the decision of decode step s is
 * 2(s + 1), and a policy switch after k decode steps (PolicySwitchTrace.atStep = k) is 2k + 1, so a
 * switch sorts after the decision of the step before it.
 */
import { CELL, type CacheMapView, type ScoreGrid } from '../worker/protocol.ts';

export const NEVER = -1;

export interface EvictionSource {
  /** ordered moment code (see above) */
  moment: number;
  /** flattened (layer, kvHead, token) triples */
  evictions: Int32Array;
}

export interface EvictionLog {
  layers: number;
  kvHeads: number;
  tokens: number;
  /** [layer][kvHead][token] moment the head lost the token (first time), NEVER if it still holds it */
  at: Int32Array;
}

export const prefillMoment = (): number => 0;
export const stepMoment = (step: number): number => 2 * (step + 1);
export const switchMoment = (atStep: number): number => 2 * atStep + 1;

/** Describes a moment code for people. */
export function describeMoment(moment: number, switchTo?: (atStep: number) => string | undefined): string {
  if (moment === 0) return 'by the prefill decision';
  if (moment % 2 === 0) return `at step ${moment / 2 - 1}`;
  const atStep = (moment - 1) / 2;
  const to = switchTo?.(atStep);
  return `by the switch${to ? ` to ${to}` : ''} ${atStep === 0 ? 'after the prompt' : `after step ${atStep - 1}`}`;
}

/** When each head lost each token, over the sources with moment ≤ `upTo`. */
export function buildEvictionLog(layers: number, kvHeads: number, tokens: number, sources: readonly EvictionSource[], upTo = Infinity): EvictionLog {
  const at = new Int32Array(layers * kvHeads * tokens).fill(NEVER);
  const ordered = [...sources].filter((s) => s.moment <= upTo).sort((a, b) => a.moment - b.moment);
  for (const { moment, evictions } of ordered) {
    for (let k = 0; k + 2 < evictions.length; k += 3) {
      const l = evictions[k];
      const h = evictions[k + 1];
      const t = evictions[k + 2];
      if (l < 0 || l >= layers || h < 0 || h >= kvHeads || t < 0 || t >= tokens) continue;
      const i = (l * kvHeads + h) * tokens + t;
      if (at[i] === NEVER) at[i] = moment;
    }
  }
  return { layers, kvHeads, tokens, at };
}

export interface ForgottenMarks {
  /** per token index: share of the heads considered that no longer hold it (0…1) */
  share: Float32Array;
  /** per token index: tooltip text ('' when nothing was forgotten) */
  titles: string[];
  /** how many heads the shares are over (1 for a single head) */
  heads: number;
}

/**
 * Per token: which heads lost it. `head` = [layer, kvHead] for one head, null for all heads
 * (aggregated share). `tokens` limits the tokens considered (the shown step's tokens).
 */
export function forgottenMarks(log: EvictionLog, head: [number, number] | null, tokens: number, switchTo?: (atStep: number) => string | undefined): ForgottenMarks {
  const n = Math.min(tokens, log.tokens);
  const share = new Float32Array(tokens);
  const titles = new Array<string>(tokens).fill('');
  const heads: [number, number][] = head ? [head] : [];
  if (!head) for (let l = 0; l < log.layers; l++) for (let h = 0; h < log.kvHeads; h++) heads.push([l, h]);
  for (let t = 0; t < n; t++) {
    let lost = 0;
    let first = Infinity;
    let last = -Infinity;
    let firstHead = '';
    for (const [l, h] of heads) {
      const m = log.at[(l * log.kvHeads + h) * log.tokens + t];
      if (m === NEVER) continue;
      lost++;
      if (m < first) {
        first = m;
        firstHead = `L${l} kv${h}`;
      }
      if (m > last) last = m;
    }
    if (lost === 0) continue;
    share[t] = lost / heads.length;
    if (head) {
      titles[t] = `forgotten by L${head[0]} kv${head[1]}: evicted ${describeMoment(first, switchTo)}`;
    } else {
      const pct = Math.round((100 * lost) / heads.length);
      const span = first === last ? describeMoment(first, switchTo) : `first ${describeMoment(first, switchTo)} (${firstHead}), last ${describeMoment(last, switchTo)}`;
      titles[t] = `forgotten by ${lost} of ${heads.length} KV heads (${pct}%): evicted ${span}`;
    }
  }
  return { share, titles, heads: heads.length };
}

// ---- heavy hitters ----------------------------------------------------------------------------

export interface HeadScores {
  /** token indices with a score, ascending */
  tokens: number[];
  scores: number[];
  /** per listed token: the decision kept it (held, merged or re-encoded after the decision) */
  kept: boolean[];
  /**
   * the keep threshold: the lowest score among kept entries that outrank every evicted entry (the
   * budget cut); null when the decision evicted nothing it scored
   */
  threshold: number | null;
  /** entries at or above the threshold (the rank of the cut) */
  aboveCut: number;
}

/** One KV head's scores from a grid, with what the decision kept (cache map after it). */
export function headScores(grid: ScoreGrid, map: CacheMapView | null, layer: number, kvHead: number): HeadScores {
  const out: HeadScores = { tokens: [], scores: [], kept: [], threshold: null, aboveCut: 0 };
  if (layer >= grid.layers || kvHead >= grid.kvHeads) return out;
  const base = (layer * grid.kvHeads + kvHead) * grid.tokens;
  const mapBase = map ? (layer * map.kvHeads + kvHead) * map.tokens : 0;
  let maxEvicted = -Infinity;
  for (let t = 0; t < grid.tokens; t++) {
    const v = grid.values[base + t];
    if (Number.isNaN(v)) continue;
    const code = map && t < map.tokens ? map.codes[mapBase + t] : CELL.HELD;
    const kept = code === CELL.HELD || code === CELL.ENCODED || code === CELL.MERGED;
    out.tokens.push(t);
    out.scores.push(v);
    out.kept.push(kept);
    if (!kept && v > maxEvicted) maxEvicted = v;
  }
  if (maxEvicted > -Infinity) {
    let threshold = Infinity;
    for (let i = 0; i < out.scores.length; i++) if (out.kept[i] && out.scores[i] >= maxEvicted && out.scores[i] < threshold) threshold = out.scores[i];
    if (threshold < Infinity) {
      out.threshold = threshold;
      out.aboveCut = out.scores.filter((s) => s >= threshold).length;
    }
  }
  return out;
}

/** Rank (1 = highest score) of each of `tokens` among one head's scored entries; null where unscored. */
export function ranksOf(grid: ScoreGrid, layer: number, kvHead: number, tokens: readonly number[]): (number | null)[] {
  const base = (layer * grid.kvHeads + kvHead) * grid.tokens;
  const values: number[] = [];
  for (let t = 0; t < grid.tokens; t++) {
    const v = grid.values[base + t];
    if (!Number.isNaN(v)) values.push(v);
  }
  values.sort((a, b) => b - a);
  return tokens.map((t) => {
    if (t >= grid.tokens) return null;
    const v = grid.values[base + t];
    if (Number.isNaN(v)) return null;
    // 1 + the number of scores above v (binary search in the descending list)
    let lo = 0;
    let hi = values.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (values[mid] > v) lo = mid + 1;
      else hi = mid;
    }
    return lo + 1;
  });
}

/** The k highest-scoring tokens of a head (ties → lower token index). */
export function topTokens(scores: HeadScores, k: number): number[] {
  return scores.tokens
    .map((t, i) => ({ t, s: scores.scores[i] }))
    .sort((a, b) => b.s - a.s || a.t - b.t)
    .slice(0, k)
    .map((x) => x.t);
}
