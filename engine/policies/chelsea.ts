/**
 * Chelsea — Hu, Wang, He, Gong, Yi, Zhang, Bai, Chen, Zhang, Li, Yuan, 2025, "Efficient
 * Long-Context LLM Inference via KV Cache Clustering" (arXiv:2506.11418,
 * https://arxiv.org/abs/2506.11418). No public reference code: implemented from the paper's text
 * (abstract and method overview: divide the sequence into chunks; Chunked Soft Matching with an
 * alternating partition inside each chunk finds clusters by key similarity; each cluster's KV is
 * merged into one centroid) and from its origin, ToMe's bipartite soft matching (Bolya et al.,
 * 2023, https://arxiv.org/abs/2210.09461). The mechanism is pipeline/soft-matching.ts (pure
 * matching) and pipeline/soft-matching-online.ts (incremental edge state, merge transform).
 *
 * Our reading, each ambiguous choice a parameter (defaults picked on `kvscope eval --task ppl` at
 * B = 128 on the default model, see the end):
 *  - chunks of `chunk` (c = 32) positions: entry j is in chunk ⌊pos_j / c⌋. Chunks are fixed in
 *    position (not re-cut by entry count after merges), so a decode step only revisits the chunk
 *    that changed; an old chunk keeps shrinking as the cache is compressed further.
 *  - inside a chunk, entries alternate by rank: A = even ranks, B = odd ranks (ToMe's x[::2],
 *    x[1::2]); each A key finds its most similar B key by cosine (ties → the earlier B); several
 *    A's may pick the same B and then merge into it together (ToMe).
 *  - "merge the r most similar pairs" of each chunk: how many merges is set by the budget (a head
 *    over B merges down to B − batch + 1); `rank=chunk` (default) spreads them evenly over the
 *    chunks — every chunk's best edge, then every chunk's second best, … (our reading of "r per
 *    chunk"); `rank=head` takes the most similar edges over the whole head.
 *  - centroids: mean K and mean V, members weighted by the tokens they already stand for (so a
 *    centroid merged again is still the exact mean of its tokens); the centroid's count is its
 *    tokens; `bias=log_count` (default) lets the graph add log(count) to its attention logit
 *    (ToMe's proportional attention: the centroid weighs as the tokens it replaces), `bias=none`
 *    gives count 1 (a plain centroid).
 *  - online: after prefill and after every decode step, with the budget fixed at the prompt's
 *    length when a ratio. A head that goes over B merges `batch` (4) pairs at once and then grows
 *    back for batch − 1 steps (it holds B − batch + 1 … B entries); `batch=1` merges one pair every
 *    step. Batching is ours: it keeps the cost per decode step within 10% of the forward (merges
 *    are what the store's apply pays for), and scored better on that evaluation.
 *  - the first `sinks` (4) and last `recent` (16) entries are never merged (attention sinks and
 *    tokens still being written about; our addition, 0 turns either off). Both shrink to fit a
 *    small budget: sinks + recent ≤ B − 1, sinks first.
 *  - budget not reachable in one round (more merges needed than there are A entries, e.g. a long
 *    prompt to a small budget): every edge is merged and matching runs again on the centroids;
 *    when every chunk is down to one entry, chunks double (2c, 4c, …) so neighbouring chunks
 *    merge. Every head ends within its budget.
 * P1: the merged entry sits at its B (anchor) entry's place and RoPE position; its key is the mean
 * of post-RoPE keys.
 *
 * Perplexity at B = 128 (2 held-out windows of 1024, prefix 32; full 16.24, h2o 16.88, window
 * 17.93): defaults 16.78; rank=head 18.04; batch=1 18.12; chunk=16 17.24; bias=none 17.10;
 * sinks=0,recent=0 (with rank=head, chunk=16) 23.19.
 */
import { promptBudget, promptLength, uniformAllocator } from '../pipeline/allocators.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import { keepAllSelector } from '../pipeline/similarity.ts';
import { protectedSpan, type SoftMatchBias, type SoftMatchRank } from '../pipeline/soft-matching.ts';
import { chunkedSoftMatching, softMatchingState } from '../pipeline/soft-matching-online.ts';
import { budgetParam, budgetValue } from './common.ts';
import { enumParam, intParam } from './types.ts';

export const chelseaPolicy = defineMethod({
  id: 'chelsea',
  label: 'Chelsea (chunked soft matching)',
  description:
    'Merges instead of evicting: inside fixed chunks, alternate entries match their most similar key of the other half (cosine) and the most similar pairs merge into centroids (mean K/V) until the head fits its budget.',
  paper: {
    short: 'Hu et al., 2025 (Chelsea)',
    title: 'Efficient Long-Context LLM Inference via KV Cache Clustering',
    url: 'https://arxiv.org/abs/2506.11418',
  },
  params: [
    budgetParam('budget', 0.5, 'entries each head may hold'),
    { name: 'chunk', kind: 'int', default: 32, min: 2, max: 65535, description: 'chunk length c in positions (matching stays inside a chunk)' },
    { name: 'sinks', kind: 'int', default: 4, min: 0, description: 'first entries never merged (shrinks to fit the budget)' },
    { name: 'recent', kind: 'int', default: 16, min: 0, description: 'last entries never merged (shrinks to fit the budget)' },
    {
      name: 'rank',
      kind: 'enum',
      default: 'chunk',
      choices: ['chunk', 'head'],
      description: 'which edges merge first: head = most similar over the head; chunk = the same number per chunk (each chunk’s best, then second best, …)',
    },
    { name: 'batch', kind: 'int', default: 4, min: 1, description: 'merges made at once when a head goes over its budget (it then holds B − batch + 1 and grows back): 1 = one merge every step' },
    { name: 'bias', kind: 'enum', default: 'log_count', choices: ['log_count', 'none'], description: 'attention bias of a centroid: log(tokens it stands for), or none (count 1)' },
  ],
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: { params: ['budget'], map: (b) => ({ budget: b }), text: 'budget = B (a head over B merges down to B − batch + 1; sinks and recent shrink to fit B − 1)', scope: 'every head, after prefill and every step', min: 1 },
  needs: { attention: false, queries: false, calibration: false },
  build(params) {
    const budgetSetting = budgetValue(params, 'budget');
    const sinks = intParam(params, 'sinks');
    const recent = intParam(params, 'recent');
    const merge = chunkedSoftMatching({
      chunk: intParam(params, 'chunk'),
      sinks,
      recent,
      rank: enumParam(params, 'rank') as SoftMatchRank,
      bias: enumParam(params, 'bias') as SoftMatchBias,
      batch: intParam(params, 'batch'),
    });
    let budget = 0;
    return {
      scorer: softMatchingState(),
      allocator: uniformAllocator((env) => {
        budget = promptBudget(promptLength(env), budgetSetting);
        return { total: budget, recent: protectedSpan(budget, sinks, recent).recent };
      }),
      selector: keepAllSelector,
      transforms: [merge],
      note: () => {
        const { merged, groups, rounds } = merge.tally;
        if (merged === 0) return undefined;
        return `chelsea: budget ${budget}: ${merged} entries merged away into ${groups} centroids${rounds > 0 ? ` (${rounds} heads took several rounds)` : ''}`;
      },
    };
  },
});
