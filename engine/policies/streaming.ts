/**
 * StreamingLLM — keep the first `sinks` entries (attention sinks) and the last `recent` entries of
 * every head; evict the middle.
 *
 * Paper: Xiao, Tian, Chen, Han, Lewis, "Efficient Streaming Language Models with Attention Sinks",
 * ICLR 2024, https://arxiv.org/abs/2309.17453.
 * Reference read: mit-han-lab/streaming-llm `streaming_llm/kv_cache.py` (StartRecentKVCache: concat
 * of the first start_size and the last recent_size entries) and `pos_shift/modify_llama.py` (keys
 * cached before RoPE, rotated to their index in the cache at every forward; the query sits at
 * the cache length).
 *
 * Positions (`positions` parameter):
 * - `p2` (default, as in the original with pos_shift): the rerotateToIndex transform
 *   (pipeline/transforms.ts) re-rotates each kept key to its index in the head and feeds the next
 *   token at the longest head's length, so generation can go past the model's context.
 * - `p1`: keys keep their original positions; the next token gets its token index.
 *
 * Reading implemented: the budget is what each head holds *between* steps (sinks + recent entries,
 * the new token included once it is cached), like the window policy; the original evicts before
 * the forward (evict_for_space), so its query sees sinks + recent entries including itself, one
 * fewer than here. `recent` may be a ratio of the prompt length; `sinks` is a count.
 *
 * Stages: uniform allocator (sinks + recent), sinks + recent selector, P2 transform.
 */
import type { PolicyCache } from '../cache/view.ts';
import { promptBudget, promptLength, uniformAllocator } from '../pipeline/allocators.ts';
import { decideWithStages, defineMethod, standaloneEnv, type MethodStages } from '../pipeline/pipeline.ts';
import { sinksRecentTopKSelector } from '../pipeline/selectors.ts';
import { rerotateToIndex } from '../pipeline/transforms.ts';
import { budgetParam, budgetValue } from './common.ts';
import { enumParam, intParam, type Decision } from './types.ts';

export type PositionMode = 'p1' | 'p2';

function streamingStages(sinks: number, recent: (promptTokens: number) => number, positions: PositionMode): MethodStages {
  let resolved = 0;
  return {
    allocator: uniformAllocator((env) => {
      resolved = recent(promptLength(env));
      return { total: sinks + resolved, recent: resolved };
    }),
    selector: sinksRecentTopKSelector(sinks),
    transforms: positions === 'p2' ? [rerotateToIndex()] : [],
    note(summary) {
      if (summary.evicted === 0 && summary.repositioned === 0) return undefined;
      const head = `sinks ${sinks} + recent ${resolved}`;
      return positions === 'p1' ? `${head}: evicted ${summary.evicted} entries` : `${head}: evicted ${summary.evicted}, re-rotated ${summary.repositioned} keys (P2)`;
    },
  };
}

/**
 * The StreamingLLM decision for a cache: per head keep [0, sinks) ∪ [n − recent, n) when
 * n > sinks + recent; with `p2`, reposition kept entries to their new index and set nextPosition.
 */
export function streamingDecision(cache: PolicyCache, sinks: number, recent: number, positions: PositionMode): Decision {
  return decideWithStages(streamingStages(sinks, () => recent, positions), standaloneEnv(cache, 'step'), { id: 'streaming', reportScores: 'selected' });
}

export const streamingPolicy = defineMethod({
  id: 'streaming',
  label: 'StreamingLLM (sinks + recent)',
  description:
    'Keeps the first few tokens (attention sinks) and a window of recent tokens; P2 re-rotates kept keys to their cache index as in the original.',
  paper: {
    short: 'Xiao et al., 2024 (ICLR)',
    title: 'Efficient Streaming Language Models with Attention Sinks',
    url: 'https://arxiv.org/abs/2309.17453',
    code: 'https://github.com/mit-han-lab/streaming-llm',
  },
  params: [
    { name: 'sinks', kind: 'int', default: 4, min: 0, description: 'first entries always kept (attention sinks)' },
    budgetParam('recent', 512, 'most recent entries kept'),
    {
      name: 'positions',
      kind: 'enum',
      default: 'p2',
      choices: ['p2', 'p1'],
      description: 'p2: re-rotate kept keys to their cache index, query at the cache length (original); p1: keep original positions',
    },
  ],
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: { params: ['sinks', 'recent'], map: (b) => ({ sinks: 4, recent: b - 4 }), text: 'sinks = 4, recent = B − 4', scope: 'every head', min: 5 },
  needs: { attention: false, queries: false, calibration: false },
  build(params) {
    const recentValue = budgetValue(params, 'recent');
    return streamingStages(intParam(params, 'sinks'), (prompt) => promptBudget(prompt, recentValue), enumParam(params, 'positions') as PositionMode);
  },
});
