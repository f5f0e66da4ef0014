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
 */
import { KvscopeError } from '../errors.ts';
import { fillerSentences, heldoutWindows } from '../metrics/heldout.ts';
import { POLICIES } from '../policies/index.ts';
import type { PolicyDefinition } from '../policies/types.ts';
import { Session, type EngineModel } from '../session.ts';
import { budgetTable, DEFAULT_BUDGETS, expandRuns, type EvalRun } from './budgets.ts';
import { needlePrompts, needleRun, type NeedleFigures, type NeedleSettings } from './needle.ts';
import { perplexityRun, type PplFigures, type PplSettings } from './perplexity.ts';

export * from './budgets.ts';
export { perplexityRun, type PplFigures, type PplSettings } from './perplexity.ts';
export { needlePrompts, needleRun, needleTrial, promptSeed, type NeedleCell, type NeedleFigures, type NeedleSettings, type NeedleTrialResult } from './needle.ts';
export { formatEvalReport } from './format.ts';

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
  /** a row finished (records[record].rows gained `row`) */
  onRow?: (record: number, row: EvalRow, report: EvalReport) => void;
  signal?: AbortSignal;
  /** called about every `yieldEvery` units (the worker yields to its event loop here) */
  yield?: () => Promise<void>;
  yieldEvery?: number;
  /** policies the specs are resolved against (default: the built-in registry) */
  registry?: readonly PolicyDefinition[];
}

class Cancelled extends Error {}

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
export function planEval(model: EngineModel, config: EvalConfig, registry: readonly PolicyDefinition[] = POLICIES): { runs: EvalRun[]; settings: PplSettings | NeedleSettings; budgets: number[] } {
  const context = model.forward.dims.contextLength;
  const budgets = [...(config.budgets ?? DEFAULT_BUDGETS)];
  const runs = expandRuns(config.policies, budgets, registry);
  const settings = config.task === 'ppl' ? pplSettings(context, config.ppl) : needleSettings(context, config.needle);
  for (const run of runs) new Session(model, { policy: run.spec, registry, trace: { attention: false, fullSteps: 0, topTokens: 0 } });
  return { runs, settings, budgets: [...budgets].sort((a, b) => a - b) };
}

/** Runs an evaluation (see the header). `documents` are the held-out texts (static/data/heldout.json). */
export async function runEval(model: EngineModel, documents: readonly string[], config: EvalConfig, hooks: EvalHooks = {}): Promise<EvalReport> {
  const started = globalThis.performance.now();
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new EvalSettingsError('evaluations need a model with a tokenizer');
  if (config.task !== 'ppl' && config.task !== 'needle') throw new EvalSettingsError(`unknown task ${JSON.stringify(config.task)} (tasks: ${EVAL_TASKS.join(', ')})`);
  const registry = hooks.registry ?? POLICIES;
  const { runs, settings, budgets } = planEval(model, config, registry);
  const dims = model.forward.dims;
  const ids = [...new Set(runs.map((r) => r.id))];
  const report: EvalReport = {
    format: 'kvscope-eval',
    version: 1,
    task: config.task,
    model: { id: model.manifest.id, name: model.manifest.name, layers: dims.nLayers, kvHeads: dims.nKvHeads, context: dims.contextLength },
    settings,
    budgets,
    budgetMapping: budgetTable(registry).filter((row) => ids.includes(row.id)),
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
  let windows: number[][] = [];
  let prompts: ReturnType<typeof needlePrompts> = [];
  let perRun: number;
  if (config.task === 'ppl') {
    const s = settings as PplSettings;
    windows = heldoutWindows(tokenizer, documents, { windows: s.windows, tokens: s.tokens, seed: s.seed });
    perRun = windows.reduce((a, w) => a + w.length - s.prefix, 0);
  } else {
    const s = settings as NeedleSettings;
    hooks.onProgress?.({ done: 0, total: 1, run: 0, runs: runs.length, spec: '', message: 'building passkey prompts…' });
    prompts = needlePrompts(tokenizer, fillerSentences(documents), s);
    perRun = prompts.reduce((a, c) => a + c.length, 0);
  }
  const total = perRun * runs.length;
  const yieldEvery = hooks.yieldEvery ?? (config.task === 'ppl' ? 16 : 1);
  let sinceYield = 0;

  try {
    for (let r = 0; r < runs.length; r++) {
      const run = runs[r];
      const base = r * perRun;
      const tick = async (done: number, message: string) => {
        if (hooks.signal?.aborted) throw new Cancelled();
        hooks.onProgress?.({ done: base + done, total, run: r, runs: runs.length, spec: run.spec, message });
        if (hooks.yield && ++sinceYield >= yieldEvery) {
          sinceYield = 0;
          await hooks.yield();
        }
      };
      const label = `${run.spec} (${r + 1}/${runs.length})`;
      await tick(0, `${label}: starting`);
      const row: EvalRow = { budget: run.budget, spec: run.spec };
      if (config.task === 'ppl') {
        const s = settings as PplSettings;
        row.ppl = await perplexityRun(model, windows, run.spec, s.prefix, {
          onToken: (done, all) => tick(done, `${label}: token ${done}/${all}`),
        });
      } else {
        let correct = 0;
        row.needle = await needleRun(model, prompts, settings as NeedleSettings, run.spec, (done, all, trial) => {
          if (trial.success) correct++;
          return tick(done, `${label}: trial ${done}/${all}, ${correct} correct (key ${trial.key} → ${JSON.stringify(trial.output.trim())})`);
        });
      }
      const index = recordOf.get(run.input)!;
      report.records[index].rows.push(row);
      hooks.onRow?.(index, row, report);
    }
  } catch (error) {
    if (!(error instanceof Cancelled)) throw error;
    report.cancelled = true;
  }
  report.seconds = (globalThis.performance.now() - started) / 1000;
  return report;
}
