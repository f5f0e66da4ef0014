/**
 * Shared allocators (stages.ts Allocator): budgets per layer × KV head. Budget parameter values
 * follow policies/common.ts: v ≥ 1 is entries, 0 < v < 1 a ratio of the prompt length (tokens fed
 * when the method last saw a prompt, or the cache's tokens when attached), so a budget stays fixed
 * while decoding and memory is bounded.
 */
import { resolveBudget } from '../policies/common.ts';
import type { BudgetRule } from '../policies/types.ts';
import type { Allocator, HeadBudget, StageEnv } from './stages.ts';

/** Every head gets the same budget, computed per decision from the environment. */
export function uniformAllocator(budget: (env: StageEnv) => HeadBudget): Allocator {
  // decode steps ask for the same budgets every time: reuse the grid (selectors and the store only
  // read budgets; the store copies what it records)
  let last: { total: number; recent: number; grid: HeadBudget[][] } | null = null;
  return {
    allocate(env) {
      const b = budget(env);
      if (last && last.total === b.total && last.recent === b.recent && last.grid.length === env.cache.nLayers) return last.grid;
      const grid = Array.from({ length: env.cache.nLayers }, () => Array.from({ length: env.cache.nKvHeads }, () => b));
      last = { total: b.total, recent: b.recent, grid };
      return grid;
    },
  };
}

/** Per-layer budgets (PyramidKV, D2O, CompressKV): every KV head of layer l gets `perLayer(env)[l]`. */
export function layerAllocator(perLayer: (env: StageEnv) => readonly HeadBudget[]): Allocator {
  return {
    allocate(env) {
      const layers = perLayer(env);
      return layers.map((b) => Array.from({ length: env.cache.nKvHeads }, () => b));
    },
  };
}

/** A budget value resolved against a prompt length (entries if ≥ 1, else a ratio; at least 1). */
export function promptBudget(promptTokens: number, value: number): number {
  return resolveBudget(value, promptTokens);
}

/** The prompt length budgets resolve against: the method's prompt, else the tokens fed so far. */
export function promptLength(env: StageEnv): number {
  return env.promptTokens || env.cache.tokenCount;
}

/** The evaluation budget rule of a method that compresses the prompt once (`budget` = B; decoding appends). */
export function prefillBudgetRule(windowNote: string): BudgetRule {
  return {
    params: ['budget'],
    map: (b) => ({ budget: b }),
    text: `budget = B (${windowNote})`,
    scope: 'the prompt, once after prefill; decoded tokens are appended',
    min: 1,
  };
}

/** B split in two halves, e.g. H2O's heavy = ⌊B/2⌋ and recent = B − ⌊B/2⌋ (heavy + recent, centres + recent). */
export function halvedBudgetRule(first: string, second: string, scope = 'every head'): BudgetRule {
  return {
    params: [first, second],
    map: (b) => ({ [first]: Math.floor(b / 2), [second]: b - Math.floor(b / 2) }),
    text: `${first} = ⌊B/2⌋, ${second} = B − ⌊B/2⌋`,
    scope,
    min: 2,
  };
}
