/**
 * Evaluations shared by `kvscope eval` and the app's /bench page (framework-free: Node and the
 * Web Worker run this same code): perplexity of held-out text and passkey retrieval over a depth ×
 * length grid, for a list of policy specs expanded over budgets (budgets.ts).
 *
 *   const report = await runEval(model, documents, { task: 'ppl', policies: ['window', 'h2o'], budgets: [64, 128] });
 *
 * The report is plain JSON: one record per policy given, one row per budget, each with its figures.
 * Progress is reported in units (scored tokens for ppl, trials for needle); an AbortSignal stops
 * the evaluation between steps and returns what finished (report.cancelled).
 *
 * Runs are independent jobs (jobs.ts): `hooks.workers` spreads them over workers that each hold
 * their own model — worker threads in the CLI (threads.ts), Web Workers in the app — through a
 * pool (engine/pool.ts); the report is the same for any number of workers but for its timings.
 */
import { KvscopeError } from '../errors.ts';
import { fillerSentences, heldoutWindows } from '../metrics/heldout.ts';
import { mapPool } from '../pool.ts';
import { Session, type EngineModel } from '../session.ts';
import { budgetTable, DEFAULT_BUDGETS, expandRuns, type EvalRun } from './budgets.ts';
import { inThreadWorker, type EvalInputs, type EvalJob, type EvalWorker } from './jobs.ts';
import { needlePrompts, type NeedleFigures, type NeedleSettings } from './needle.ts';
import type { PplFigures, PplSettings } from './perplexity.ts';

export * from './budgets.ts';
export { perplexityRun, type PplFigures, type PplSettings } from './perplexity.ts';
export { needlePrompts, needleRun, needleTrial, promptSeed, type NeedleCell, type NeedleFigures, type NeedleSettings, type NeedleTrialResult } from './needle.ts';
export { formatEvalReport } from './format.ts';
export { inThreadWorker, runEvalJob, type EvalFigures, type EvalInputs, type EvalJob, type EvalJobProgress, type EvalWorker } from './jobs.ts';

export type EvalTask = 'ppl' | 'needle';
export const EVAL_TASKS: readonly EvalTask[] = ['ppl', 'needle'];

/** Settings that do not fit the model or each other (exit code 2 in the CLI). */
export class EvalSettingsError extends KvscopeError {}

export interface EvalConfig {
  task: EvalTask;
  /** policy specs; budget parameters left out are filled from `budgets`; "all" = every policy */
  policies: string[];
  /** default 64, 128, 256, 512 */
  budgets?: number[];
  ppl?: Partial<PplSettings>;
  needle?: Partial<NeedleSettings>;
}

export interface EvalRow {
  /** null: evaluated as given (full, or budget parameters named in the spec) */
  budget: number | null;
  spec: string;
  ppl?: PplFigures;
  needle?: NeedleFigures;
}

export interface EvalRecord {
  /** the spec as given */
  policy: string;
  id: string;
  rows: EvalRow[];
}

export interface EvalReport {
  format: 'kvscope-eval';
  version: 1;
  task: EvalTask;
  model: { id: string; name: string; layers: number; kvHeads: number; context: number };
  settings: PplSettings | NeedleSettings;
  budgets: number[];
  /** how each evaluated policy's parameters follow the budget */
  budgetMapping: { id: string; mapping: string; scope: string }[];
  records: EvalRecord[];
  /** stopped by the caller: records hold the rows that finished */
  cancelled: boolean;
  seconds: number;
}

export interface EvalProgress {
  /** units done / in all (scored tokens for ppl, trials for needle) */
  done: number;
  total: number;
  /** index of the run (policy at one budget) in progress, and how many there are */
  run: number;
  runs: number;
  spec: string;
  message: string;
}

export interface EvalHooks {
  onProgress?: (progress: EvalProgress) => void;
  /** a row finished: records[record].rows gained `row` (at its place in run order), from run `run` */
  onRow?: (record: number, row: EvalRow, report: EvalReport, run: number) => void;
  /** stops between steps; the report keeps the rows that finished (report.cancelled) */
  signal?: AbortSignal;
  /** called about every `yieldEvery` units (the worker yields to its event loop here) */
  yield?: () => Promise<void>;
  yieldEvery?: number;
  /**
   * where the runs go, each worker holding its own copy of the model (remote.ts, threads.ts);
   * default: this thread, with `yield` and `yieldEvery`
   */
  workers?: readonly EvalWorker[];
}

const DEFAULT_LENGTHS = [256, 512, 1000];
const DEFAULT_DEPTHS = [0, 0.25, 0.5, 0.75, 1];

function positiveInt(name: string, value: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new EvalSettingsError(`${name} must be an integer in ${min}..${max}, got ${value}`);
  }
  return value;
}

/** Completes and checks perplexity settings for a model of `context` tokens. */
export function pplSettings(context: number, given: Partial<PplSettings> = {}): PplSettings {
  const tokens = positiveInt('tokens per window', given.tokens ?? Math.min(1024, context), 2, context);
  return {
    windows: positiveInt('windows', given.windows ?? 2),
    tokens,
    prefix: positiveInt('prefix', given.prefix ?? Math.min(32, tokens - 1), 1, tokens - 1),
    seed: positiveInt('seed', given.seed ?? 0, 0, 0xffffffff),
  };
}

/** Completes and checks needle settings for a model of `context` tokens. */
export function needleSettings(context: number, given: Partial<NeedleSettings> = {}): NeedleSettings {
  const decodeTokens = positiveInt('decode tokens', given.decodeTokens ?? 7, 1, 64);
  const maxLength = context - decodeTokens - 1;
  let lengths = given.lengths;
  if (lengths === undefined) {
    lengths = DEFAULT_LENGTHS.filter((l) => l <= maxLength);
    if (lengths.length === 0) lengths = [maxLength];
  }
  if (lengths.length === 0) throw new EvalSettingsError('no prompt lengths given');
  for (const l of lengths) positiveInt(`prompt length`, l, 16, maxLength);
  const depths = given.depths ?? DEFAULT_DEPTHS;
  if (depths.length === 0) throw new EvalSettingsError('no needle depths given');
  for (const d of depths) if (!(d >= 0 && d <= 1)) throw new EvalSettingsError(`needle depths must be in [0, 1], got ${d}`);
  const unique = <T>(xs: readonly T[], what: string) => {
    if (new Set(xs).size !== xs.length) throw new EvalSettingsError(`a ${what} is listed twice`);
  };
  unique(lengths, 'prompt length');
  unique(depths, 'needle depth');
  return {
    depths: [...depths],
    lengths: [...lengths],
    trials: positiveInt('trials', given.trials ?? 1, 1, 1000),
    seed: positiveInt('seed', given.seed ?? 0, 0, 0xffffffff),
    decodeTokens,
  };
}

/**
 * Expands and checks everything that can fail before any model time is spent: specs, budgets,
 * settings, and that every policy can be created for this model (calibration present …).
 */
export function planEval(model: EngineModel, config: EvalConfig): { runs: EvalRun[]; settings: PplSettings | NeedleSettings; budgets: number[] } {
  const context = model.forward.dims.contextLength;
  const budgets = [...(config.budgets ?? DEFAULT_BUDGETS)];
  const runs = expandRuns(config.policies, budgets);
  const settings = config.task === 'ppl' ? pplSettings(context, config.ppl) : needleSettings(context, config.needle);
  for (const run of runs) new Session(model, { policy: run.spec, trace: { attention: false, fullSteps: 0, topTokens: 0 } });
  return { runs, settings, budgets: [...budgets].sort((a, b) => a - b) };
}

/**
 * Runs an evaluation (see the header). `documents` are the held-out texts (static/data/heldout.json).
 * Runs go to `hooks.workers` (default: this thread, one run after another); rows land in the
 * report in run order whatever order they finish in, so every worker count reports the same.
 */
export async function runEval(model: EngineModel, documents: readonly string[], config: EvalConfig, hooks: EvalHooks = {}): Promise<EvalReport> {
  const started = globalThis.performance.now();
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new EvalSettingsError('evaluations need a model with a tokenizer');
  if (config.task !== 'ppl' && config.task !== 'needle') throw new EvalSettingsError(`unknown task ${JSON.stringify(config.task)} (tasks: ${EVAL_TASKS.join(', ')})`);
  const { runs, settings, budgets } = planEval(model, config);
  const dims = model.forward.dims;
  const ids = [...new Set(runs.map((r) => r.id))];
  const report: EvalReport = {
    format: 'kvscope-eval',
    version: 1,
    task: config.task,
    model: { id: model.manifest.id, name: model.manifest.name, layers: dims.nLayers, kvHeads: dims.nKvHeads, context: dims.contextLength },
    settings,
    budgets,
    budgetMapping: budgetTable().filter((row) => ids.includes(row.id)),
    records: [],
    cancelled: false,
    seconds: 0,
  };
  const recordOf = new Map<string, number>();
  for (const run of runs) {
    if (!recordOf.has(run.input)) {
      recordOf.set(run.input, report.records.length);
      report.records.push({ policy: run.input, id: run.id, rows: [] });
    }
  }

  // inputs shared by every run
  let inputs: EvalInputs;
  let perRun: number;
  if (config.task === 'ppl') {
    const s = settings as PplSettings;
    const windows = heldoutWindows(tokenizer, documents, { windows: s.windows, tokens: s.tokens, seed: s.seed });
    inputs = { task: 'ppl', settings: s, windows };
    perRun = windows.reduce((a, w) => a + w.length - s.prefix, 0);
  } else {
    const s = settings as NeedleSettings;
    hooks.onProgress?.({ done: 0, total: 1, run: 0, runs: runs.length, spec: '', message: 'building passkey prompts…' });
    const prompts = needlePrompts(tokenizer, fillerSentences(documents), s);
    inputs = { task: 'needle', settings: s, prompts };
    perRun = prompts.reduce((a, c) => a + c.length, 0);
  }
  const jobs: EvalJob[] = runs.map((run, r) => ({ inputs, spec: run.spec, label: `${run.spec} (${r + 1}/${runs.length})` }));
  const total = perRun * runs.length;

  // progress over all runs: the units each run has done, summed (serially: finished runs + this one)
  const doneByRun = runs.map(() => 0);
  let done = 0;
  // each record's rows with the index of the run they came from, kept sorted by it
  const rowRuns: number[][] = report.records.map(() => []);
  const workers = hooks.workers ?? [inThreadWorker(model, { yield: hooks.yield, yieldEvery: hooks.yieldEvery })];
  const results = await mapPool(jobs, workers, {
    signal: hooks.signal,
    onProgress: (r, progress) => {
      done += progress.done - doneByRun[r];
      doneByRun[r] = progress.done;
      hooks.onProgress?.({ done, total, run: r, runs: runs.length, spec: runs[r].spec, message: progress.message });
    },
    onResult: (r, figures) => {
      const run = runs[r];
      const row: EvalRow = { budget: run.budget, spec: run.spec, ...figures };
      const index = recordOf.get(run.input)!;
      const at = rowRuns[index].filter((other) => other < r).length;
      rowRuns[index].splice(at, 0, r);
      report.records[index].rows.splice(at, 0, row);
      hooks.onRow?.(index, row, report, r);
    },
  });
  report.cancelled = results.some((result) => result === undefined);
  report.seconds = (globalThis.performance.now() - started) / 1000;
  return report;
}
