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
 * - `p2` (default, as in the original with pos_shift): after every decision each kept key is
 *   re-rotated to its index in the head (0..n−1) and the next token is fed at position n, so
 *   positions never exceed the budget and generation can go past the model's context. Our keys are
 *   stored post-RoPE, so the engine applies the RoPE delta (Decision.reposition); repeated deltas
 *   accumulate float32 rounding (~1e-7 relative per rotation). With ragged heads (a cache handed
 *   over by another policy) the next position is the longest head's length.
 * - `p1`: keys keep their original positions; the next token gets its token index.
 *
 * Reading implemented: the budget is what each head holds *between* steps (sinks + recent entries,
 * the new token included once it is cached), like the window policy; the original evicts before
 * the forward (evict_for_space), so its query sees sinks + recent entries including itself, one
 * fewer than here. `recent` may be a ratio of the prompt length (common.ts convention); `sinks` is
 * a count.
 */
import type { CacheView } from '../cache/store.ts';
import { budgetParam, budgetValue, resolveBudget } from './common.ts';
import {
  enumParam,
  intParam,
  NO_CHANGE,
  type Decision,
  type HeadDecision,
  type PolicyDefinition,
  type PolicyNeeds,
  type Reposition,
} from './types.ts';
import type { JsonValue } from '../types.ts';

export type PositionMode = 'p1' | 'p2';

/**
 * The StreamingLLM decision for a cache: per head keep [0, sinks) ∪ [n − recent, n) when
 * n > sinks + recent; with `p2`, reposition kept entries to their new index and set nextPosition.
 */
export function streamingDecision(cache: CacheView, sinks: number, recent: number, positions: PositionMode): Decision {
  const layers: (HeadDecision | null)[][] = [];
  let changed = false;
  let evicted = 0;
  let moved = 0;
  let longest = 0;
  for (let l = 0; l < cache.nLayers; l++) {
    const heads: (HeadDecision | null)[] = [];
    for (let h = 0; h < cache.nKvHeads; h++) {
      const n = cache.length(l, h);
      let keep: Int32Array | null = null;
      if (n > sinks + recent) {
        keep = new Int32Array(sinks + recent);
        for (let i = 0; i < sinks; i++) keep[i] = i;
        for (let i = 0; i < recent; i++) keep[sinks + i] = n - recent + i;
        evicted += n - keep.length;
      }
      const kept = keep ? keep.length : n;
      longest = Math.max(longest, kept);
      let reposition: Reposition[] | undefined;
      if (positions === 'p2') {
        const pos = cache.positions(l, h);
        for (let j = 0; j < kept; j++) {
          const index = keep ? keep[j] : j;
          if (pos[index] !== j) (reposition ??= []).push({ index, pos: j });
        }
        moved += reposition?.length ?? 0;
      }
      if (keep || reposition) {
        changed = true;
        heads.push({ keep: keep ?? Int32Array.from({ length: n }, (_, i) => i), reposition });
      } else {
        heads.push(null);
      }
    }
    layers.push(heads);
  }
  if (positions === 'p1') {
    return changed ? { layers, note: `sinks ${sinks} + recent ${recent}: evicted ${evicted} entries` } : NO_CHANGE;
  }
  // P2: the next token sits right after the (longest) head, even when nothing changed this time.
  const note = changed ? `sinks ${sinks} + recent ${recent}: evicted ${evicted}, re-rotated ${moved} keys (P2)` : undefined;
  return { layers: changed ? layers : null, nextPosition: longest, note };
}

const NEEDS: PolicyNeeds = { attention: false, queries: false, calibration: false };

export const streamingPolicy: PolicyDefinition = {
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
  needs: NEEDS,
  create(params) {
    const sinks = intParam(params, 'sinks');
    const recentValue = budgetValue(params, 'recent');
    const positions = enumParam(params, 'positions') as PositionMode;
    let promptTokens = 0;
    const decide = (cache: CacheView): Decision => {
      if (promptTokens === 0) promptTokens = cache.tokenCount;
      return streamingDecision(cache, sinks, resolveBudget(recentValue, promptTokens), positions);
    };
    return {
      id: 'streaming',
      params,
      needs: NEEDS,
      onAttach: decide,
      afterPrefill(cache) {
        promptTokens = cache.tokenCount;
        return decide(cache);
      },
      afterStep: decide,
      reset() {
        promptTokens = 0;
      },
      getState: (): JsonValue => ({ promptTokens }),
      setState(state) {
        const value = state && typeof state === 'object' && !Array.isArray(state) ? state.promptTokens : 0;
        promptTokens = typeof value === 'number' ? value : 0;
      },
    };
  },
};
