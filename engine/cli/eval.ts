/**
 * `kvscope eval`: the evaluations of engine/eval (the app's /bench page runs the same code) —
 * perplexity of held-out text or passkey retrieval, per policy at cache budgets. With --jobs N
 * runs go to this thread and N − 1 worker threads (engine/eval/threads.ts); the report is the
 * same as serial.
 */
import { writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { PolicySpecError } from '../errors.ts';
import { DEFAULT_BUDGETS, EVAL_TASKS, EvalSettingsError, expandRuns, formatEvalReport, inThreadWorker, planEval, runEval } from '../eval/index.ts';
import { startEvalThreads, yieldToEventLoop, type EvalThreads } from '../eval/threads.ts';
import { loadModelFromDirectory } from '../model/load-node.ts';
import { asInteger, asNumber, integerOption, listOption, noExtraPositionals, parse, requireFileName, seedOption, UsageError } from './args.ts';
import { makeProgress, type CliIO } from './io.ts';
import { heldoutPath, readHeldout, resolveModelDir } from './models.ts';

const EVAL_HELP = `Usage: kvscope eval --task ppl|needle --policy SPEC [--policy SPEC …] [options]

Evaluates KV-cache policies on the model, each at every budget of --budgets (B = entries a KV
head may hold; each policy's own parameters follow from B, see docs/evaluation.md). A spec that
sets its budget parameters itself (window:size=32) runs once as given; "full" runs once; "all"
stands for every policy. Progress goes to stderr.

  ppl      perplexity of held-out text: prefill --prefix tokens, then score every later token
           and feed it as a decode step (teacher forcing) with the policy evicting
  needle   passkey retrieval over --lengths × --depths, --trials prompts per cell, greedy; the
           policy compresses after the prefill and acts at every answer step

Options:
  --task ppl|needle     what to measure (required)
  --policy SPEC         policy spec, repeatable (required), e.g. full, h2o, h2o:accumulate=mean
  --budgets LIST        comma-separated budgets (default 64,128,256,512)
  --seed S              seed for windows, prompts and keys (default 0)
  --windows N           ppl: held-out windows (default 2)
  --tokens N            ppl: tokens per window, BOS included (default min(1024, context))
  --prefix N            ppl: tokens prefilled before scoring starts (default 32)
  --lengths LIST        needle: prompt lengths in tokens (default 256,512,1000, those that fit)
  --depths LIST         needle: needle depths in [0, 1] (default 0,0.25,0.5,0.75,1)
  --trials N            needle: prompts per length × depth cell (default 1)
  --decode-tokens N     needle: most answer tokens decoded (default 7)
  --model DIR           model directory or id (default: the index's default model)
  --heldout FILE        held-out documents (default static/data/heldout.json)
  --jobs N              runs evaluated at once, each on its own thread with its own copy of
                        the model (default: the number of CPUs; 1 = one after another here)
  --json                print the report as JSON (one record per --policy, one row per budget)
  --out FILE            also write the JSON report to FILE
  -h, --help            this help
`;

export async function evaluate(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse('eval', args, {
    task: { type: 'string' },
    policy: { type: 'string', multiple: true },
    budgets: { type: 'string' },
    seed: { type: 'string' },
    windows: { type: 'string' },
    tokens: { type: 'string' },
    prefix: { type: 'string' },
    lengths: { type: 'string' },
    depths: { type: 'string' },
    trials: { type: 'string' },
    'decode-tokens': { type: 'string' },
    model: { type: 'string' },
    heldout: { type: 'string' },
    jobs: { type: 'string' },
    json: { type: 'boolean' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout(EVAL_HELP);
    return 0;
  }
  noExtraPositionals('eval', positionals, 0, '--policy h2o');
  if (values.task === undefined) throw new UsageError(`missing --task (one of ${EVAL_TASKS.join(', ')})`);
  const task = values.task.trim();
  if (!(EVAL_TASKS as readonly string[]).includes(task)) throw new UsageError(`--task must be one of ${EVAL_TASKS.join(', ')}, got ${JSON.stringify(values.task)}`);
  const policies = values.policy ?? [];
  if (policies.length === 0) throw new UsageError('missing --policy SPEC (repeatable, e.g. --policy full --policy h2o)');
  const budgets = listOption('budgets', values.budgets, asInteger, 'positive integers');
  try {
    expandRuns(policies, budgets ?? DEFAULT_BUDGETS);
  } catch (error) {
    if (error instanceof PolicySpecError) throw new UsageError(`invalid --policy or --budgets: ${error.message}`);
    throw error;
  }
  const seed = seedOption(values.seed, 0);
  const pplOnly = ['windows', 'tokens', 'prefix'] as const;
  const needleOnly = ['lengths', 'depths', 'trials', 'decode-tokens'] as const;
  for (const name of task === 'ppl' ? needleOnly : pplOnly) {
    if (values[name] !== undefined) throw new UsageError(`--${name} applies to --task ${task === 'ppl' ? 'needle' : 'ppl'}, not --task ${task}`);
  }
  const optionalInt = (name: 'windows' | 'tokens' | 'prefix' | 'trials' | 'decode-tokens') =>
    values[name] === undefined ? undefined : integerOption(name, values[name], 1, 1);
  // options not given stay out, so that the engine's defaults apply
  const given = <T extends object>(o: T) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
  const evalConfig = {
    task: task as 'ppl' | 'needle',
    policies,
    budgets,
    ppl: given({ windows: optionalInt('windows'), tokens: optionalInt('tokens'), prefix: optionalInt('prefix'), seed }),
    needle: given({
      lengths: listOption('lengths', values.lengths, asInteger, 'integers'),
      depths: listOption('depths', values.depths, asNumber, 'numbers in [0, 1]'),
      trials: optionalInt('trials'),
      decodeTokens: optionalInt('decode-tokens'),
      seed,
    }),
  };
  requireFileName('out', values.out);
  const heldout = heldoutPath(values.heldout);
  const jobs = integerOption('jobs', values.jobs, availableParallelism(), 1);

  const modelDir = resolveModelDir(values.model);
  const model = await loadModelFromDirectory(modelDir);
  const progress = makeProgress(io);
  let threads: EvalThreads | null = null;
  try {
    let runs: number;
    try {
      runs = planEval(model, evalConfig).runs.length;
    } catch (error) {
      if (error instanceof EvalSettingsError || error instanceof PolicySpecError) throw new UsageError(error.message);
      throw error;
    }
    // this thread is one worker (its model is loaded), threads are the others; they load their
    // models while the held-out text is read and tokenized here
    const parallel = Math.min(jobs, runs);
    if (parallel > 1) threads = startEvalThreads(modelDir, parallel - 1);
    const documents = await readHeldout(heldout);
    // a line when a run starts, else at most one per interval (runs in parallel interleave)
    const started = new Set<number>();
    let lastTime = 0;
    const report = await runEval(model, documents, evalConfig, {
      // yielding lets the threads' messages through while this thread runs a job too
      workers: threads ? [inThreadWorker(model, { yield: yieldToEventLoop }), ...threads.workers] : undefined,
      onProgress: (p) => {
        const now = performance.now();
        if (started.has(p.run) && now - lastTime < (io.stderrIsTTY ? 250 : 5000)) return;
        started.add(p.run);
        lastTime = now;
        progress(`eval ${task}: ${p.message} · ${Math.round((100 * p.done) / Math.max(1, p.total))}% of all`);
      },
    });
    progress(null);
    const json = `${JSON.stringify(report, null, 2)}\n`;
    if (values.out !== undefined) await writeFile(values.out, json);
    io.stdout(values.json ? json : `${formatEvalReport(report)}\n`);
    if (!values.json) io.stderr(`[${report.records.reduce((a, r) => a + r.rows.length, 0)} runs in ${report.seconds.toFixed(1)} s${values.out ? ` · JSON → ${values.out}` : ''}]\n`);
    return 0;
  } finally {
    progress(null);
    await threads?.close();
    await model.release();
  }
}

