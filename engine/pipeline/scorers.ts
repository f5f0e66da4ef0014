/**
 * Shared scorers (stages.ts Scorer). Each keeps its per-entry state in store columns.
 *
 * accumulatedAttention — H2O's heavy-hitter score (Zhang et al., 2023): S_j += Σ_rows A[row][j]
 *   over every query row of every forward (prefill rows via PrefillObservation.attentionSums, then
 *   one row per decode step). Kept per query head in a column of width = group, reduced to the KV
 *   head with `gqa` when scores are asked for. `accumulate=mean` divides by the number of query
 *   rows that could see the entry (kvpress's observed attention): prompt entry k of an n-token
 *   prefill was seen by n − k rows, then by every later step. `gqaAt: 'row'` instead reduces each
 *   row to the KV head as it arrives and accumulates one value per entry (D2O's reading).
 *
 * currentAttention — TOVA's score (Oren et al., 2024): the attention of the current query only
 *   (after prefill: the last prompt row). `head-mean` ranks a layer's entries once by the mean over
 *   all its query heads (all KV heads then keep the same indices); a layer whose KV heads hold
 *   different lengths falls back to per-head ranking with `gqa`.
 */

import { reduceAt, reduceGqaHead, reduceGroupColumn, type GqaReduce } from './gqa.ts';
import type { Scorer, StageEnv } from './stages.ts';

export type Accumulate = 'sum' | 'mean';

export interface AccumulatedOptions {
  /** query heads per KV head (ModelDims.groupSize) */
  group: number;
  gqa: GqaReduce;
  accumulate: Accumulate;
  /** `selection` (H2O): per query head, reduced when ranking; `row` (D2O): each row reduced on arrival */
  gqaAt?: 'selection' | 'row';
  /** what a merged entry's score is: the members' sum (default) or the anchor's (D2O: recalled entries add to the kept entry's K/V, not to its score) */
  merge?: 'sum' | 'anchor';
}

export function accumulatedAttention(options: AccumulatedOptions): Scorer {
  const perRow = options.gqaAt === 'row';
  const { gqa, accumulate } = options;
  return {
    columns: [
      { name: 'attention', width: perRow ? 1 : options.group, reduce: options.merge ?? 'sum', initial: 0 },
      // `seen` is only needed to normalise (accumulate=mean); summing alone skips its upkeep
      ...(accumulate === 'mean' ? [{ name: 'seen', width: 1, reduce: 'max' as const, initial: 0 }] : []),
    ],
    needs: { attention: true },
    withoutHistory: 'no attention history: accumulated scores start at 0, so the oldest entries count as heavy until attention accumulates',
    observe(env) {
      const { cache, dims } = env;
      const group = dims.groupSize;
      const scoreName = env.column('attention');
      const seenName = env.column('seen');
      const rows = env.prefill ? env.prefill.attentionSums : (env.step?.attention ?? null);
      const fed = env.prefill ? env.prefill.tokenCount : 1;
      const first = env.prefill ? env.prefill.firstToken : (env.step?.tokenIndex ?? cache.tokenCount - 1);
      for (let l = 0; l < cache.nLayers; l++) {
        for (let h = 0; h < cache.nKvHeads; h++) {
          const n = cache.length(l, h);
          if (accumulate === 'mean') {
            const seen = cache.writeColumn(l, h, seenName);
            const tokens = cache.tokens(l, h);
            // entries already held were seen by every new row; new token k by the rows from k on
            // (by token, not by place: an earlier member of a composition may have evicted some)
            for (let j = 0; j < n; j++) seen[j] += tokens[j] < first ? fed : fed - (tokens[j] - first);
          }
          if (!rows) continue;
          const scores = cache.writeColumn(l, h, scoreName);
          const groupRows = rows[l].slice(h * group, h * group + group);
          if (perRow) {
            for (let j = 0; j < n; j++) scores[j] += reduceAt(groupRows, j, gqa);
          } else {
            groupRows.forEach((row, g) => {
              for (let j = 0; j < n; j++) scores[j * group + g] += row[j];
            });
          }
        }
      }
    },
    headScores(env, layer, kvHead) {
      const { cache, dims } = env;
      const n = cache.length(layer, kvHead);
      const column = cache.column(layer, kvHead, env.column('attention'));
      const out = perRow ? Float64Array.from(column) : reduceGroupColumn(column, n, dims.groupSize, gqa);
      if (accumulate === 'mean') {
        const seen = cache.column(layer, kvHead, env.column('seen'));
        for (let j = 0; j < n; j++) out[j] /= Math.max(1, seen[j]);
      }
      return out;
    },
  };
}

export type CurrentReduce = 'head-mean' | 'per-head';

export function currentAttention(reduce: CurrentReduce, gqa: GqaReduce): Scorer {
  /** [layer][queryHead] rows of the hook being decided (the current query), or null */
  let current: (readonly ArrayLike<number>[])[] | null = null;
  const layerMean = (env: StageEnv, layer: number): Float64Array | null => {
    const key = `current-mean-${layer}`;
    if (env.shared.has(key)) return env.shared.get(key) as Float64Array | null;
    const { cache } = env;
    const n = cache.length(layer, 0);
    let mean: Float64Array | null = null;
    let aligned = true;
    for (let h = 1; h < cache.nKvHeads; h++) aligned &&= cache.length(layer, h) === n;
    if (reduce === 'head-mean' && aligned && current) {
      const rows = current[layer];
      mean = new Float64Array(n);
      for (const row of rows) for (let j = 0; j < n; j++) mean[j] += row[j];
      for (let j = 0; j < n; j++) mean[j] /= rows.length;
    }
    env.shared.set(key, mean);
    return mean;
  };
  return {
    columns: [],
    needs: { attention: true, prefillWindow: 1 },
    withoutHistory: 'no current query yet: keeps the newest entries until the next step',
    observe(env) {
      current = null;
      if (env.step) current = env.step.attention;
      const prefill = env.prefill;
      if (prefill?.windowAttention && prefill.windowRows >= 1) {
        // the last window row is the last prompt query
        const rows = prefill.windowRows;
        current = prefill.windowAttention.map((layer) =>
          layer.map((block) => {
            const entries = block.length / rows;
            return block.subarray((rows - 1) * entries, rows * entries);
          }),
        );
      }
    },
    headScores(env, layer, kvHead) {
      if (!current || env.phase === 'attach') return null;
      return layerMean(env, layer) ?? reduceGqaHead(current[layer], kvHead, env.cache.nKvHeads, gqa);
    },
  };
}
