/**
 * Sink ablation (Xiao et al. 2024, StreamingLLM, §3.1 and Table 1): does a window that drops the
 * first tokens lose more than one that keeps them? Teacher-forced perplexity over held-out windows
 * (engine/eval/perplexity.ts, the same protocol as `kvscope eval --task ppl`) for the full cache,
 * `streaming` (4 sinks + recent) and `window` (no sinks) at the same budgets (engine/eval/budgets.ts
 * maps B to each policy's parameters), scored at "late" positions ≥ lateFrom, where every budget is
 * full and evicting. The ratio window / streaming > 1 says the sinks carry weight.
 *
 * The full cache's perplexity over every scored token is the held-out perplexity that
 * docs/evaluation.md's "full cache" row reports for the same windows.
 */
import { specForBudget } from '../eval/budgets.ts';
import { perplexityRun, type PplFigures } from '../eval/perplexity.ts';
import type { EngineModel } from '../session.ts';

export interface SinkAblationOptions {
  /** budgets B (entries per KV head), default 64 and 128 */
  budgets?: readonly number[];
  /** tokens prefilled before scoring (default 32, as `kvscope eval`) */
  prefix?: number;
  /** late positions start here (default: half the window) */
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
  const prefix = options.prefix ?? Math.min(32, windowTokens - 1);
  const lateFrom = options.lateFrom ?? Math.floor(windowTokens / 2);
  if (!(lateFrom > prefix && lateFrom < windowTokens)) throw new RangeError(`late positions must start after the prefix (${prefix}) and inside the window (${windowTokens}), got ${lateFrom}`);
  const budgets = [...(options.budgets ?? [64, 128])];

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
  return { windows: windows.length, windowTokens, prefix, lateFrom, scored, lateScored: late, full, budgets: rows };
}
