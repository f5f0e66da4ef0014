/**
 * RazorAttention — Tang et al., 2024, "RazorAttention: Efficient KV Cache Compression Through
 * Retrieval Heads" (arXiv:2407.15891). Reference code read before implementing: MindSpore
 * Golden-Stick `razor_attention.py` (head search: echo / induction masks, max over the KV group,
 * top ratio of all heads by `round(N·ratio)`, union of the two sets) and its vLLM wrapper
 * `DeployRACompressCell._compress` (sinks + mean "virtual token" + recent window).
 *
 * Offline, data-free (engine/calibration/probe.ts): per query head an echo score (attention on the
 * same token in earlier repeats of a random sequence) and an induction score (on the token after
 * it). Online:
 *  - retrieval heads = the top `echo_pct` (1%) of KV heads by echo ∪ the top `induction_pct` (14%)
 *    by induction, counted over all L·Hkv KV heads as round(L·Hkv·pct) (Golden-Stick's rounding:
 *    with 16 KV heads 1% selects none, 14% selects 2). Query-head scores are reduced to KV heads
 *    with `gqa` (default max, as Golden-Stick: a KV head is a retrieval head if any of its query
 *    heads is one — the cache is per KV head, so the whole group keeps everything);
 *  - retrieval heads keep the full cache;
 *  - every other head keeps `sinks` (4) first entries + the R most recent + one compensation token
 *    standing for everything in between: the mean of the dropped keys and of the dropped values.
 *    It is emitted as a MergeGroup over the dropped entries (anchored at the first, so it sits right
 *    after the sinks), so the cache records its origins. `compensation=weighted` (the paper) gives
 *    it count N_D, i.e. attention bias log N_D — as if N_D copies were there; `plain` gives count 1
 *    (Golden-Stick's virtual token, no bias); `none` just evicts (ablation).
 *
 * Our readings where the sources are loose:
 *  - R = max(`recent_min`, ⌊recent·n⌋) for a ratio `recent` (n = tokens fed so far), or `recent`
 *    entries when ≥ 1 — our reading of the paper's "recent window" that grows with the input
 *    (default 20 % of the tokens, at least 32);
 *  - compression runs after prefill *and after every step* (Golden-Stick compresses at prefill
 *    and then appends): a token leaving the recent window is folded into the compensation token,
 *    whose running mean stays exact because members are weighted by the tokens they stand for
 *    (origin length): w_i = |origin_i| / Σ|origin|;
 *  - keys are post-RoPE (P1), so the compensation key averages keys rotated to different
 *    positions, as in the reference (which averages cached, rotated keys); its position is the
 *    first dropped entry's.
 *
 * Stages: a per-head allocator (retrieval heads unlimited; the others sinks + R + the compensation
 * token's place), sinks + recent (pipeline/selectors.ts) and the compensation token
 * (pipeline/merge.ts).
 */
import { requireCalibration, type RazorCalibration } from '../calibration/format.ts';
import { compensationToken, reserveCompensationSlot } from '../pipeline/merge.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import { sinksRecentTopKSelector } from '../pipeline/selectors.ts';
import type { HeadBudget, Selector, Transform } from '../pipeline/stages.ts';
import { budgetParam, budgetValue, isRatio, resolveBudget } from './common.ts';
import { enumParam, floatParam, intParam } from './types.ts';

export type Compensation = 'weighted' | 'plain' | 'none';

/** Per KV head score: max or mean over its query heads. Returns [layer][kvHead]. */
export function reduceToKvHeads(scores: readonly (readonly number[])[], nKvHeads: number, mode: 'max' | 'mean'): number[][] {
  return scores.map((row) => {
    const group = row.length / nKvHeads;
    return Array.from({ length: nKvHeads }, (_, h) => {
      const members = row.slice(h * group, (h + 1) * group);
      return mode === 'max' ? Math.max(...members) : members.reduce((a, b) => a + b, 0) / group;
    });
  });
}

/** Indices (layer·Hkv + kvHead) of the top round(N·pct) heads (ties → lower index). */
export function topHeadShare(scores: readonly (readonly number[])[], pct: number): number[] {
  const flat = scores.flat();
  const count = Math.round(flat.length * pct);
  return flat
    .map((s, i) => ({ s, i }))
    .sort((a, b) => b.s - a.s || a.i - b.i)
    .slice(0, count)
    .map((x) => x.i);
}

/** [layer][kvHead] true for retrieval heads: top echo_pct by echo ∪ top induction_pct by induction. */
export function razorRetrievalHeads(razor: Pick<RazorCalibration, 'echo' | 'induction'>, nKvHeads: number, echoPct: number, inductionPct: number, gqa: 'max' | 'mean'): boolean[][] {
  const echo = reduceToKvHeads(razor.echo, nKvHeads, gqa);
  const induction = reduceToKvHeads(razor.induction, nKvHeads, gqa);
  const chosen = new Set([...topHeadShare(echo, echoPct), ...topHeadShare(induction, inductionPct)]);
  return echo.map((row, l) => row.map((_, h) => chosen.has(l * nKvHeads + h)));
}

/**
 * Counts the entries each decision folds (or evicts), for its note; with `plainKeep`, lists `keep`
 * as a plain array, as razor's decisions always did (a test compares a whole `compensation=none`
 * head decision).
 */
function razorTally(plainKeep: boolean): Transform & { readonly folded: number } {
  let folded = 0;
  return {
    get folded() {
      return folded;
    },
    layer(_env, layer, heads) {
      if (layer === 0) folded = 0;
      for (const head of heads) {
        if (!head.keep) continue;
        folded += head.length - head.keep.length;
        if (!plainKeep) continue;
        // HeadDraft.keep is typed Int32Array; the store and the trace take any ArrayLike
        const draft: { keep: ArrayLike<number> | null } = head;
        draft.keep = Array.from(head.keep);
      }
    },
  };
}

const UNLIMITED: HeadBudget = { total: Infinity, recent: 0 };

export const razorPolicy = defineMethod({
  id: 'razor',
  label: 'RazorAttention',
  description:
    'Retrieval heads (found by an offline echo / induction probe) keep the full cache; every other head keeps sinks, a recent window and one compensation token averaging everything it dropped (needs calibration).',
  paper: {
    short: 'Tang et al., 2024 (RazorAttention)',
    title: 'RazorAttention: Efficient KV Cache Compression Through Retrieval Heads',
    url: 'https://arxiv.org/abs/2407.15891',
    code: 'https://github.com/mindspore-ai/golden-stick (razor_attention)',
  },
  params: [
    { name: 'echo_pct', kind: 'float', default: 0.01, min: 0, max: 1, description: 'share of KV heads kept whole for their echo score' },
    { name: 'induction_pct', kind: 'float', default: 0.14, min: 0, max: 1, description: 'share of KV heads kept whole for their induction score' },
    { name: 'gqa', kind: 'enum', default: 'max', choices: ['max', 'mean'], description: 'query-head scores → KV head (max: any query head of the group counts)' },
    { name: 'sinks', kind: 'int', default: 4, min: 0, description: 'first entries every non-retrieval head keeps' },
    budgetParam('recent', 0.2, 'recent window R of non-retrieval heads (a ratio is of the tokens fed so far)'),
    { name: 'recent_min', kind: 'int', default: 32, min: 1, description: 'smallest recent window when `recent` is a ratio' },
    {
      name: 'compensation',
      kind: 'enum',
      default: 'weighted',
      choices: ['weighted', 'plain', 'none'],
      description: 'weighted: mean token with bias log N_D (paper); plain: mean token, no bias; none: evict',
    },
  ],
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: {
    params: ['sinks', 'recent'],
    map: (b) => ({ sinks: 4, recent: b - 5 }),
    text: 'sinks = 4, recent = B − 5, plus 1 compensation token',
    scope: 'non-retrieval heads; retrieval heads keep every entry',
    min: 6,
  },
  needs: { attention: false, queries: false, calibration: true },
  build(params, context) {
    const calibration = requireCalibration(context.calibration, 'razor', ['razor'], context.calibrationError);
    const retrieval = razorRetrievalHeads(
      calibration.razor!,
      context.dims.nKvHeads,
      floatParam(params, 'echo_pct'),
      floatParam(params, 'induction_pct'),
      enumParam(params, 'gqa') as 'max' | 'mean',
    );
    const sinks = intParam(params, 'sinks');
    const recentValue = budgetValue(params, 'recent');
    const recentMin = intParam(params, 'recent_min');
    const compensation = enumParam(params, 'compensation') as Compensation;
    const folds = compensation !== 'none';
    const named = retrieval.flatMap((row, l) => row.flatMap((r, h) => (r ? [`L${l}/kv${h}`] : [])));
    const selector: Selector = sinksRecentTopKSelector(sinks);
    const tally = razorTally(!folds);
    let recent = 0;
    return {
      allocator: {
        allocate(env) {
          const n = env.cache.tokenCount;
          recent = isRatio(recentValue) ? Math.max(recentMin, resolveBudget(recentValue, n)) : resolveBudget(recentValue, n);
          // the compensation token has its own place: a head over budget folds two entries or more
          const budget: HeadBudget = { total: sinks + recent + (folds ? 1 : 0), recent };
          return retrieval.map((row) => row.map((isRetrieval) => (isRetrieval ? UNLIMITED : budget)));
        },
      },
      selector: folds ? reserveCompensationSlot(selector) : selector,
      transforms: [...(folds ? [compensationToken(compensation === 'weighted' ? 'dropped' : 'one')] : []), tally],
      protects: {
        description: 'retrieval heads (top echo ∪ top induction) keep the full cache; the others keep sinks, a recent window and a compensation token',
        kvHeads: retrieval.map((row) => [...row]),
        queryHeads: null,
      },
      // every decision is a function of the cache: no state (null, as razor's snapshots always held)
      state: { get: () => null, set() {}, reset() {} },
      note: () =>
        tally.folded > 0
          ? `razor: retrieval heads ${named.join(' ') || 'none'} keep all; others ${sinks} sinks + ${recent} recent; ${tally.folded} entries ${folds ? 'folded into compensation tokens' : 'evicted'}`
          : undefined,
    };
  },
});
