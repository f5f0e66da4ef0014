/**
 * LaCache — Shi et al., 2025, "LaCache: Ladder-Shaped KV Caching for Efficient Long-Context
 * Modeling of Large Language Models" (ICML 2025, arXiv:2507.14204). Reference code read before
 * implementing: GATECH-EIC/LaCache `ppl/lacache/kv_cache.py` (LaCache.__call__) and
 * `ppl/lacache/llama_patch.py` (positions), read to understand, not copied.
 *
 * Ladder: with L layers, span S and overlap O,
 *   before = 1 + ⌈(L − S)/(S − O)⌉,   after = min(⌈S/(S − O)⌉, before),   reduce = before − after.
 * Past the ladder cursor, the cache is cut into blocks of `before` tokens; layer i keeps `after`
 * consecutive tokens of each block starting at offset i mod (reduce + 1), so consecutive layers keep
 * shifted tokens (a ladder) and each token survives in about S layers. Every step the cache holds
 * more than C entries (C = cache size), just enough blocks past the cursor are laddered to get
 * back to C, and the cursor moves past them; the first `start` (4) entries and everything after
 * the laddered blocks (the recent tokens) stay. When the room between the cursor and C runs out,
 * the reference "starts over": the whole cache from the sinks on is laddered again, with wider
 * blocks before_t = before + (t − 1)(before − 1) (t = times the cache had to start over), and the
 * cursor returns to just after the sinks — iterative compaction of the old regions.
 *
 * P2 positions (llama_patch.py): keys are re-rotated to their index in the (per-layer) cache and
 * the query sits at the cache length, so after every compaction each kept entry is repositioned to
 * its new index (Reposition; the engine re-rotates the key by the delta) and the decision's
 * nextPosition is the new length. Every layer keeps the same number of entries, so one position
 * serves all layers. Since positions stay below C, generation can continue past the model's
 * context length.
 *
 * Stages: a uniform budget of C, the ladder selector (below) and P2 re-rotation
 * (pipeline/transforms.ts rerotateToIndex).
 *
 * Our readings where the reference is loose or cannot run:
 *  - S ≥ L makes before = 1: no token could be dropped (the reference divides by zero). The
 *    card's default S = 16 is for 32-layer models; we clamp S to L − 1 (for L = 8: before 2,
 *    after 1 — each token in 4 of 8 layers, the same share as S = 16 of 32). O is clamped to
 *    S − 1 and lowered until reduce ≥ 1;
 *  - C is a bound: no head holds more than C entries after a decision. The reference enlarges C
 *    by ⌊reduce/2⌋ ("compensation for match average size"), so its cache peaks above C; we do not
 *    (the same for the default ladders, where reduce = 1). A C below the smallest ladder,
 *    start + L + before + 1, is refused when the policy is created, naming the smallest valid C;
 *  - at a start-over with after > 1 (overlap > 0) the reference's picks, spaced t apart from offset
 *    i mod (reduce_t + 1), can spill into the next block and collide; we cycle the offset over
 *    i mod (before_t − t·(after − 1)) so they stay inside it (identical for after = 1). Indices past
 *    the cache are dropped; the result is always ascending and unique;
 *  - C < 1 is a ratio of the model's context length;
 *  - heads of a layer are laddered alike (the reference gathers the same indices for all heads);
 *    a cache handed over with ragged heads is laddered per head with the shared cursor.
 */
import { PolicySpecError } from '../errors.ts';
import { uniformAllocator } from '../pipeline/allocators.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import type { Selector, StageEnv } from '../pipeline/stages.ts';
import { rerotateToIndex } from '../pipeline/transforms.ts';
import { budgetParam, budgetValue, isRatio, resolveBudget } from './common.ts';
import { intParam } from './types.ts';

export interface LadderShape {
  /** effective span and overlap after clamping */
  span: number;
  overlap: number;
  before: number;
  after: number;
  /** before − after: tokens one block drops */
  reduce: number;
}

/** The ladder of a model with `layers` layers (span clamped to L − 1, overlap lowered until reduce ≥ 1). */
export function ladderShape(layers: number, span: number, overlap: number): LadderShape {
  if (layers < 2) throw new PolicySpecError(`lacache needs at least 2 layers to form a ladder (the model has ${layers})`);
  const S = Math.max(1, Math.min(span, layers - 1));
  for (let O = Math.max(0, Math.min(overlap, S - 1)); O >= 0; O--) {
    const before = 1 + Math.ceil((layers - S) / (S - O));
    const after = Math.min(Math.ceil(S / (S - O)), before);
    if (before - after >= 1) return { span: S, overlap: O, before, after, reduce: before - after };
  }
  // unreachable: with O = 0 and S ≤ L − 1, before ≥ 2 and after = 1
  throw new PolicySpecError(`lacache: no ladder for L=${layers}, S=${span}, O=${overlap}`);
}

export interface LadderPlan {
  /** ascending kept indices per layer */
  keep: (layer: number) => number[];
  cursor: number;
  startover: boolean;
}

/**
 * Which entries layer i keeps when the cache holds n > C entries (C already includes the
 * ⌊reduce/2⌋ enlargement), following LaCache.__call__.
 */
export function ladderPlan(n: number, cacheSize: number, cursor: number, start: number, layers: number, shape: LadderShape): LadderPlan {
  const { before: B, after: A, reduce: R } = shape;
  const toReduce = n - cacheSize;
  const room = Math.max(0, cacheSize - cursor - layers);
  const reducibleBefore = Math.floor(room / A) * R;
  const startover = toReduce > reducibleBefore;
  const blocks = startover ? Math.floor(room / A) : Math.ceil(toReduce / R);
  const firstLevel = (i: number): number[] => {
    const out: number[] = [];
    for (let j = 0; j < cursor; j++) out.push(j);
    const offset = i % (R + 1);
    for (let b = 0; b < blocks; b++) for (let k = 0; k < A; k++) out.push(cursor + offset + B * b + k);
    for (let j = cursor + B * blocks; j < n; j++) out.push(j);
    return out;
  };
  if (!startover) return { keep: firstLevel, cursor: cursor + blocks * A, startover };

  const perStartover = Math.floor((cacheSize - start - layers) / A) * R;
  const remaining = toReduce - reducibleBefore;
  const times = Math.max(1, Math.ceil(remaining / Math.max(1, perStartover)));
  const Bt = B + (times - 1) * (B - 1);
  const Rt = Bt - A;
  const blocksT = Math.ceil(remaining / Rt);
  const keep = (i: number): number[] => {
    const list = firstLevel(i);
    const picks: number[] = [];
    for (let j = 0; j < start; j++) picks.push(j);
    // the reference's offset is i mod (reduce_t + 1); with after > 1 its picks, spaced `times` apart,
    // can spill into the next block — cycle the offset over the positions where they fit (same for after = 1)
    const offset = i % (Bt - times * (A - 1));
    for (let b = 0; b < blocksT; b++) for (let k = 0; k < A; k++) picks.push(start + offset + Bt * b + times * k);
    for (let j = start + Bt * blocksT; j < list.length; j++) picks.push(j);
    const chosen = new Set<number>();
    for (const p of picks) if (p < list.length) chosen.add(list[p]);
    return [...chosen].sort((a, b) => a - b);
  };
  return { keep, cursor: start + blocksT * A, startover };
}

/** The smallest C a ladder fits in: the sinks, one entry per layer's offset, one block and the newest token. */
export function smallestLadder(start: number, layers: number, shape: LadderShape): number {
  return start + layers + shape.before + 1;
}

interface Planned {
  plan: LadderPlan;
  /** the length the plan was made for, and the cursor before it */
  length: number;
  cursor: number;
}

const PLAN = 'lacache-plan';
const plannedFor = (env: StageEnv) => env.shared.get(PLAN) as Planned | undefined;

/**
 * The ladder selector: one plan per decision, made from the first head's length and the cursor,
 * which then moves past the laddered blocks; a head of another length (a ragged cache handed
 * over) is laddered on its own from the same cursor.
 */
function ladderSelector(cacheSize: number, start: number, layers: number, shape: LadderShape, cursor: { value: number }): Selector {
  const planNow = (env: StageEnv): Planned => {
    const from = Math.min(cursor.value, cacheSize);
    const length = env.cache.length(0, 0);
    // a cache whose first head is within C still moves the cursor as if it held C + 1
    const planned: Planned = { plan: ladderPlan(Math.max(length, cacheSize + 1), cacheSize, from, start, layers, shape), length, cursor: from };
    env.shared.set(PLAN, planned);
    cursor.value = planned.plan.cursor;
    return planned;
  };
  return {
    select(env, head) {
      const planned = plannedFor(env) ?? planNow(env);
      const plan = head.length === planned.length ? planned.plan : ladderPlan(head.length, cacheSize, planned.cursor, start, layers, shape);
      return Int32Array.from(plan.keep(head.layer));
    },
  };
}

export const laCachePolicy = defineMethod({
  id: 'lacache',
  label: 'LaCache',
  description:
    'Ladder-shaped cache: past a cursor, each layer keeps a different, shifted slice of every block of tokens, so each token survives in some layers; old regions are re-laddered when full. Positions are cache indices (P2).',
  paper: {
    short: 'Shi et al., 2025 (LaCache, ICML)',
    title: 'LaCache: Ladder-Shaped KV Caching for Efficient Long-Context Modeling of Large Language Models',
    url: 'https://arxiv.org/abs/2507.14204',
    code: 'https://github.com/GATECH-EIC/LaCache',
  },
  params: [
    budgetParam('cache_size', 256, 'cache size C per layer (a ratio is of the model’s context length)'),
    { name: 'start', kind: 'int', default: 4, min: 0, description: 'first entries (sinks) never laddered' },
    { name: 'span', kind: 'int', default: 16, min: 1, description: 'S: layers a token survives in (clamped to layers − 1)' },
    { name: 'overlap', kind: 'int', default: 0, min: 0, description: 'O: overlap between the ladders of neighbouring blocks (< S)' },
  ],
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: { params: ['cache_size'], map: (b) => ({ cache_size: b }), text: 'cache_size = B', scope: 'every head (ladder across layers)', min: 1 },
  needs: { attention: false, queries: false, calibration: false },
  build(params, context) {
    const { nLayers, contextLength } = context.dims;
    const shape = ladderShape(nLayers, intParam(params, 'span'), intParam(params, 'overlap'));
    const start = intParam(params, 'start');
    const value = budgetValue(params, 'cache_size');
    const cacheSize = resolveBudget(value, contextLength);
    const smallest = smallestLadder(start, nLayers, shape);
    if (cacheSize < smallest) {
      const given = isRatio(value) ? `${value} (${cacheSize} of the ${contextLength}-token context)` : String(value);
      throw new PolicySpecError(
        `lacache: cache_size ${given} is below the smallest ladder for ${nLayers} layers (${smallest} = start ${start} + ${nLayers} layers + a block of ${shape.before} + 1); use cache_size ≥ ${smallest}`,
      );
    }
    const cursor = { value: start };
    return {
      allocator: uniformAllocator(() => ({ total: cacheSize, recent: 0 })),
      selector: ladderSelector(cacheSize, start, nLayers, shape, cursor),
      transforms: [rerotateToIndex()],
      // its state format predates the pipeline (links and notebooks store it)
      state: {
        get: () => ({ cursor: cursor.value }),
        set(state) {
          const value = state !== null && typeof state === 'object' && !Array.isArray(state) ? state.cursor : undefined;
          cursor.value = typeof value === 'number' && Number.isInteger(value) ? value : start;
        },
        reset() {
          cursor.value = start;
        },
      },
      note: (summary, env) =>
        summary.evicted > 0 || summary.repositioned > 0
          ? `lacache: C=${cacheSize}, ladder ${shape.before}→${shape.after} (S=${shape.span}, O=${shape.overlap})${plannedFor(env)?.plan.startover ? ', start-over' : ''}, cursor ${cursor.value}; evicted ${summary.evicted}, repositioned ${summary.repositioned}`
          : undefined,
    };
  },
});
