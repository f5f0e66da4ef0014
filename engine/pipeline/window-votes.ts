/**
 * Observation-window votes: the attention the last W prompt queries give each older entry —
 * SnapKV's observation window (Li et al., 2024), reused by PyramidKV, WindowKV and CompressKV.
 * The engine hands the window's attention over once, at prefill (PrefillObservation
 * .windowAttention: [layer][queryHead] → rows × entries, softmax over all keys, causal inside the
 * window), so one query head's vote for entry j is the column sum Σ_rows A[row][j]. The W window
 * entries are never candidates: every method keeps them (they are each head's `recent` part).
 *
 * windowVotes (stages.ts Scorer) — per-entry scores for a top-k selector, pooled along the
 * sequence (policies/common.ts pool1d) so neighbours of an important token score with it:
 * - voters `group` (SnapKV): a KV head's own query heads vote; each head's votes are pooled, then
 *   the group is reduced with `gqa`.
 * - voters `heads` (CompressKV): per layer, the listed query heads' raw votes are averaged, in
 *   float32 row by row as the reference accumulates them, then pooled; one score for every KV head
 *   of the layer. A layer whose KV heads hold different tokens (a cache handed over mid-run) scores
 *   each KV head from its own listed heads (its whole group when none of them is listed).
 * The votes are used once, when they arrive, so the scorer keeps no store columns.
 *
 * windowAllocator — per-layer totals with the observation window as every head's recent part;
 * without window attention (no window rows) every head stays whole.
 */
import { columnSums, pool1d, type PoolMode, type PoolPadding } from '../policies/common.ts';
import { reduceGqaHead, type GqaReduce } from './gqa.ts';
import type { PolicyCache } from '../cache/view.ts';
import { layerAllocator } from './allocators.ts';
import type { Allocator, Scorer, StageEnv } from './stages.ts';

/** Window rows a method with window W reads (the last min(W, windowRows)); 0 without window attention. */
export function observedRows(env: StageEnv, window: number): number {
  return env.prefill?.windowAttention ? Math.min(window, env.prefill.windowRows) : 0;
}

/** [queryHead] → the last `rows` rows (rows × entries) of one layer's window attention. */
export function lastRows(env: StageEnv, layer: number, rows: number): Float32Array[] {
  const { windowAttention, windowRows } = env.prefill!;
  return windowAttention![layer].map((block) => block.subarray((windowRows - rows) * (block.length / windowRows)));
}

/** One query head's votes Σ_rows A[row][j] for entries [0, candidates), in double precision. */
export function headVotes(block: Float32Array, rows: number, candidates: number): Float64Array {
  return columnSums(block, rows, block.length / rows, 0, candidates);
}

/** The mean vote of the query heads `heads` for entries [0, candidates), accumulated in float32 (CompressKV's reference). */
export function meanVotes(blocks: readonly Float32Array[], heads: readonly number[], rows: number, candidates: number): Float32Array {
  const sums = new Float32Array(candidates);
  for (const qh of heads) {
    const block = blocks[qh];
    const entries = block.length / rows;
    for (let r = 0; r < rows; r++) {
      const base = r * entries;
      for (let j = 0; j < candidates; j++) sums[j] += block[base + j];
    }
  }
  for (let j = 0; j < candidates; j++) sums[j] /= heads.length;
  return sums;
}

/** True when every KV head of the layer holds the same tokens (one index set can serve them all). */
export function sameEntries(cache: PolicyCache, layer: number): boolean {
  const first = cache.tokens(layer, 0);
  for (let h = 1; h < cache.nKvHeads; h++) {
    const other = cache.tokens(layer, h);
    if (other.length !== first.length) return false;
    for (let i = 0; i < first.length; i++) if (other[i] !== first[i]) return false;
  }
  return true;
}

/**
 * Who votes for a KV head's entries: `group`, its own query heads, each pooled, then reduced with
 * `gqa` (SnapKV); `heads`, per layer these query heads, averaged, then pooled — one score shared
 * by the layer's KV heads (CompressKV's semantic heads; list every head for "all").
 */
export type Voters = { kind: 'group'; gqa: GqaReduce } | { kind: 'heads'; heads: readonly (readonly number[])[] };

export interface WindowVotesOptions {
  /** W: the last min(W, windowRows) prompt queries vote */
  window: number;
  voters: Voters;
  kernel: number;
  pool: PoolMode;
  padding: PoolPadding;
  /** score reported for the window entries, kept regardless: the candidates' largest (SnapKV) or NaN (CompressKV) */
  windowScore: 'max' | 'nan';
}

export function windowVotes(options: WindowVotesOptions): Scorer {
  const { window, voters, kernel, pool, padding } = options;
  /** scores of every entry of (layer, kvHead) from the query heads `heads` (`group`: the KV head's own) */
  const score = (env: StageEnv, layer: number, kvHead: number, rows: number, heads: readonly number[]): Float64Array => {
    const n = env.cache.length(layer, kvHead);
    const candidates = Math.max(0, n - rows);
    const blocks = lastRows(env, layer, rows);
    const out = new Float64Array(n);
    if (voters.kind === 'group') {
      out.set(reduceGqaHead(heads.map((qh) => pool1d(headVotes(blocks[qh], rows, candidates), kernel, pool, padding)), 0, 1, voters.gqa));
    } else {
      out.set(pool1d(meanVotes(blocks, heads, rows, candidates), kernel, pool, padding));
    }
    out.fill(options.windowScore === 'nan' ? Number.NaN : out.subarray(0, candidates).reduce((a, b) => Math.max(a, b), 0), candidates);
    return out;
  };
  return {
    columns: [],
    needs: { prefillWindow: window },
    withoutHistory: 'votes come from the last prompt queries, seen only at prefill',
    // nothing to keep between hooks: the votes are read from env.prefill when scores are asked for
    headScores(env, layer, kvHead) {
      const rows = observedRows(env, window);
      if (rows === 0) return null;
      const group = env.prefill!.windowAttention![layer].length / env.cache.nKvHeads;
      const own = Array.from({ length: group }, (_, g) => kvHead * group + g);
      if (voters.kind === 'group') return score(env, layer, kvHead, rows, own);
      if (!sameEntries(env.cache, layer)) {
        const listed = voters.heads[layer].filter((qh) => Math.floor(qh / group) === kvHead);
        return score(env, layer, kvHead, rows, listed.length > 0 ? listed : own);
      }
      const key = `window-votes ${layer}`;
      if (!env.shared.has(key)) env.shared.set(key, score(env, layer, kvHead, rows, voters.heads[layer]));
      return env.shared.get(key) as Float64Array;
    },
  };
}

/** Every KV head of layer l gets `totals(env, rows)[l]` entries, of which the `rows` window rows are recent. */
export function windowAllocator(window: number, totals: (env: StageEnv, rows: number) => readonly number[]): Allocator {
  const allocator = layerAllocator((env) => {
    const rows = observedRows(env, window);
    if (rows === 0) return Array.from({ length: env.cache.nLayers }, () => ({ total: Infinity, recent: 0 }));
    return totals(env, rows).map((total) => ({ total, recent: rows }));
  });
  return { ...allocator, needs: { prefillWindow: window } };
}
