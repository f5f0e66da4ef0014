/**
 * Sink ablation (Xiao et al. 2024, StreamingLLM, §3.1 and Table 1): does a window that drops the
 * first tokens lose more than one that keeps them? Teacher-forced perplexity over held-out windows
 * (engine/eval/perplexity.ts, the same protocol as `kvscope eval --task ppl`) for the full cache,
 * `streaming` (4 sinks + recent) and `window` (no sinks) at the same budgets (engine/eval/budgets.ts
 * maps B to each policy's parameters), scored at "late" positions ≥ lateFrom, where every budget is
 * full and evicting. The ratio window / streaming > 1 says the sinks carry weight.
 *
 * A budget B holds B entries between steps (engine/policies/window.ts), so position p is predicted
 * by the forward of token p − 1 over tokens 0..p − 2 (held) and itself: the first position whose
 * prediction misses an evicted token is B + 2. lateFrom is therefore at least max(B) + 2; a budget
 * that would leave fewer than a quarter of the window late (or start evicting after a lateFrom the
 * caller fixed) is left out, and the report says so — a small model gets fewer rows, never an error.
 *
 * The full cache's perplexity over every scored token is the held-out perplexity that
 * docs/evaluation.md's "full cache" row reports for the same windows.
 */
import { specForBudget } from '../eval/budgets.ts';
import { perplexityRun, type PplFigures } from '../eval/perplexity.ts';
import type { EngineModel } from '../session.ts';

export interface SinkAblationOptions {
  /** budgets B (entries per KV head) to try, default 64 and 128; those that do not fit are left out */
  budgets?: readonly number[];
  /** tokens prefilled before scoring (default 32, as `kvscope eval`; a quarter of a window below 128) */
  prefix?: number;
  /** late positions start here (default: half the window, or later where a budget evicts later) */
  lateFrom?: number;
  onProgress?: (spec: string, done: number, total: number) => void;
}

export interface PolicyPerplexity {
  spec: string;
  /** over every scored token */
  perplexity: number;
  /** over scored positions ≥ lateFrom */
  latePerplexity: number;
  /** mean entries held per KV head over the scored steps */
  entries: number;
}

export interface SinkAblationReport {
  windows: number;
  windowTokens: number;
  prefix: number;
  lateFrom: number;
  /** scored tokens per run (all windows), and of them late */
  scored: number;
  lateScored: number;
  full: PolicyPerplexity & { meanNll: number };
  budgets: {
    budget: number;
    /** 4 sinks + recent */
    withSinks: PolicyPerplexity;
    /** recent only */
    withoutSinks: PolicyPerplexity;
    /** late perplexity without sinks / with sinks */
    ratio: number;
  }[];
  /** budgets asked for but not run, and why */
  leftOut: LeftOutBudget[];
}

export interface LeftOutBudget {
  budget: number;
  reason: string;
}

export interface SinkAblationPlan {
  prefix: number;
  lateFrom: number;
  /** the budgets that run, ascending */
  budgets: number[];
  leftOut: LeftOutBudget[];
}

const DEFAULT_BUDGETS: readonly number[] = [64, 128];
/** streaming at B keeps 4 sinks + B − 4 recent entries (engine/policies/streaming.ts budget.min) */
const MIN_BUDGET = 5;

/** The first scored position whose prediction has lost a token under budget B (see the header). */
export function firstEvictingPosition(budget: number): number {
  return budget + 2;
}

/**
 * Prefix, lateFrom and the budgets that fit a window of `windowTokens`. Throws only for a prefix
 * or lateFrom the caller gave that cannot work; the defaults fit any window of 3 tokens or more.
 */
export function sinkAblationPlan(windowTokens: number, options: Pick<SinkAblationOptions, 'budgets' | 'prefix' | 'lateFrom'> = {}): SinkAblationPlan {
  if (!Number.isInteger(windowTokens) || windowTokens < 3) throw new RangeError(`the sink ablation needs windows of at least 3 tokens, got ${windowTokens}`);
  const prefix = options.prefix ?? Math.max(1, Math.min(32, Math.floor(windowTokens / 4)));
  if (!Number.isInteger(prefix) || prefix < 1 || prefix >= windowTokens - 1) {
    throw new RangeError(`the prefix must be an integer from 1 to ${windowTokens - 2} (the window is ${windowTokens} tokens), got ${prefix}`);
  }
  const budgets: number[] = [];
  const leftOut: LeftOutBudget[] = [];
  const asked = [...new Set(options.budgets ?? DEFAULT_BUDGETS)]
    .sort((a, b) => a - b)
    .filter((budget) => {
      const fits = Number.isInteger(budget) && budget >= MIN_BUDGET;
      if (!fits) leftOut.push({ budget, reason: `not an integer ≥ ${MIN_BUDGET} (streaming keeps 4 sinks + at least 1 recent entry)` });
      return fits;
    });
  if (options.lateFrom !== undefined) {
    const lateFrom = options.lateFrom;
    if (!(Number.isInteger(lateFrom) && lateFrom > prefix && lateFrom < windowTokens)) {
      throw new RangeError(`late positions must start after the prefix (${prefix}) and inside the window (${windowTokens}), got ${lateFrom}`);
    }
    for (const budget of asked) {
      if (firstEvictingPosition(budget) <= lateFrom) budgets.push(budget);
      else leftOut.push({ budget, reason: `first evicts at position ${firstEvictingPosition(budget)}, after the late positions start (${lateFrom})` });
    }
    return { prefix, lateFrom, budgets, leftOut };
  }
  // at least a quarter of the window stays late, so the late figures average over enough positions
  const latest = windowTokens - Math.max(1, Math.floor(windowTokens / 4));
  for (const budget of asked) {
    if (firstEvictingPosition(budget) <= latest) budgets.push(budget);
    else leftOut.push({ budget, reason: `first evicts at position ${firstEvictingPosition(budget)}, too late in a window of ${windowTokens} tokens (at most ${latest})` });
  }
  const lateFrom = Math.max(prefix + 1, Math.floor(windowTokens / 2), ...budgets.map(firstEvictingPosition));
  return { prefix, lateFrom, budgets, leftOut };
}

/**
 * exp(mean NLL) over scored positions ≥ lateFrom, from per-position blocks (blockSize 1: each
 * block holds one position of every window, so the blocks weigh equally when windows are equally long).
 */
export function latePerplexity(byPosition: PplFigures['nllByPosition'], lateFrom: number): { perplexity: number; blocks: number } {
  if (byPosition.blockSize !== 1) throw new RangeError(`late perplexity needs per-position NLL (block size 1), got ${byPosition.blockSize}`);
  let sum = 0;
  let blocks = 0;
  byPosition.from.forEach((position, b) => {
    if (position >= lateFrom) {
      sum += byPosition.meanNll[b];
      blocks++;
    }
  });
  return { perplexity: blocks ? Math.exp(sum / blocks) : NaN, blocks };
}

/** Runs the full cache, then streaming and window at each budget, over `windows` (equal lengths). */
export async function sinkAblation(model: EngineModel, windows: readonly (readonly number[])[], options: SinkAblationOptions = {}): Promise<SinkAblationReport> {
  const windowTokens = windows[0]?.length ?? 0;
  if (windows.length === 0 || windows.some((w) => w.length !== windowTokens)) throw new RangeError('the sink ablation needs one or more windows of equal length');
  const { prefix, lateFrom, budgets, leftOut } = sinkAblationPlan(windowTokens, options);

  let late = 0;
  const run = async (spec: string): Promise<PolicyPerplexity & { meanNll: number; scored: number }> => {
    const figures = await perplexityRun(model, windows, spec, prefix, { blockSize: 1, onToken: (done, total) => options.onProgress?.(spec, done, total) });
    const tail = latePerplexity(figures.nllByPosition, lateFrom);
    late = tail.blocks * windows.length;
    return { spec, perplexity: figures.perplexity, latePerplexity: tail.perplexity, entries: figures.entries.mean, meanNll: figures.meanNll, scored: figures.scored };
  };
  const { scored, ...full } = await run('full');
  const rows: SinkAblationReport['budgets'] = [];
  for (const budget of budgets) {
    const strip = ({ spec, perplexity, latePerplexity, entries }: PolicyPerplexity): PolicyPerplexity => ({ spec, perplexity, latePerplexity, entries });
    const withSinks = strip(await run(specForBudget('streaming', budget)));
    const withoutSinks = strip(await run(specForBudget('window', budget)));
    rows.push({ budget, withSinks, withoutSinks, ratio: withoutSinks.latePerplexity / withSinks.latePerplexity });
  }
  return { windows: windows.length, windowTokens, prefix, lateFrom, scored, lateScored: late, full, budgets: rows, leftOut };
}
