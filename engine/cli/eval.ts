/**
 * `kvscope eval`: the evaluations of engine/eval (the app's /bench page runs the same code) —
 * perplexity of held-out text or passkey retrieval, per policy at cache budgets. With --jobs N
 * runs go to this thread and N − 1 worker threads (engine/eval/threads.ts); the report is the
 * same as serial. --task spec evaluates drafters (engine/eval/spec.ts) in this thread only: its
 * figures are wall-clock speed-ups, which runs sharing the cores would distort.
 */
import { writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { DraftSpecError, PolicySpecError } from '../errors.ts';
import { DEFAULT_BUDGETS, EVAL_TASKS, EvalSettingsError, expandRuns, formatEvalReport, inThreadWorker, planEval, runEval } from '../eval/index.ts';
import { startEvalThreads, yieldToEventLoop, type EvalThreads } from '../eval/threads.ts';
import type { SpecSettings, SpecTextSet } from '../eval/spec.ts';
import { loadModelFromDirectory } from '../model/load-node.ts';
import { parsePolicyChain } from '../policies/spec.ts';
import { asInteger, asNumber, integerOption, listOption, noExtraPositionals, numberOption, parse, requireFileName, seedOption, UsageError } from './args.ts';
import { makeProgress, type CliIO } from './io.ts';
import { heldoutPath, readHeldout, resolveModelDir } from './models.ts';

const EVAL_HELP = `Usage: kvscope eval --task ppl|needle --policy SPEC [--policy SPEC …] [options]
       kvscope eval --task spec --draft SPEC [--draft SPEC …] [options]

Evaluates KV-cache policies on the model, each at every budget of --budgets (B = entries a KV
head may hold; each policy's own parameters follow from B, see docs/evaluation.md). A spec that
sets its budget parameters itself (window:size=32) runs once as given; "full" runs once; "all"
stands for every policy. Progress goes to stderr.

  ppl      perplexity of held-out text: prefill --prefix tokens, then score every later token
           and feed it as a decode step (teacher forcing) with the policy evicting
  needle   passkey retrieval over --lengths × --depths, --trials prompts per cell, greedy; the
           policy compresses after the prefill and acts at every answer step
  spec     speculative decoding: per --draft and text set (prose, python-doc held-out prompts)
           acceptance rate, mean accepted length, target calls per token, acceptance by draft
           position, and wall-clock ms per token against plain decoding of the same prompts
           timed in the same run (greedy: also whether the tokens equal plain decoding's)

Options:
  --task ppl|needle|spec
                        what to measure (required)
  --policy SPEC         policy spec, repeatable (required), e.g. full, h2o, h2o:accumulate=mean;
                        spec: the target's own KV-cache policy, once (default full)
  --budgets LIST        comma-separated budgets (default 64,128,256,512)
  --seed S              seed for windows, prompts and keys (default 0)
  --windows N           ppl: held-out windows (default 2)
  --tokens N            ppl: tokens per window, BOS included (default min(1024, context))
  --prefix N            ppl: tokens prefilled before scoring starts (default 32)
  --lengths LIST        needle: prompt lengths in tokens (default 256,512,1000, those that fit)
  --depths LIST         needle: needle depths in [0, 1] (default 0,0.25,0.5,0.75,1)
  --trials N            needle: prompts per length × depth cell (default 1)
  --decode-tokens N     needle: most answer tokens decoded (default 7)
  --draft SPEC          spec: drafter, repeatable (required), e.g. model:gamma=4, lookup,
                        self:gamma=4,policy=streaming(sinks=4,recent=60) (see generate --help)
  --gamma LIST          spec: run each drafter at these γ (a spec that sets its γ runs as given)
  --prompts N           spec: held-out prompts per text set (default 4)
  --prompt-tokens N     spec: tokens per prompt, BOS included (default 128)
  --tokens N            spec: tokens generated per prompt (default 64; EOS does not stop it)
  --temperature T       spec: 0 = greedy (default), else sampled with --seed
  --texts LIST          spec: text sets, prose,python-doc (default both)
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
    draft: { type: 'string', multiple: true },
    gamma: { type: 'string' },
    prompts: { type: 'string' },
    'prompt-tokens': { type: 'string' },
    temperature: { type: 'string' },
    texts: { type: 'string' },
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
  const tasks = [...EVAL_TASKS, 'spec'];
  if (values.task === undefined) throw new UsageError(`missing --task (one of ${tasks.join(', ')})`);
  const task = values.task.trim();
  if (!tasks.includes(task)) throw new UsageError(`--task must be one of ${tasks.join(', ')}, got ${JSON.stringify(values.task)}`);
  const specOnly = ['draft', 'gamma', 'prompts', 'prompt-tokens', 'temperature', 'texts'] as const;
  if (task === 'spec') return evaluateSpec(values, io);
  for (const name of specOnly) if (values[name] !== undefined) throw new UsageError(`--${name} applies to --task spec, not --task ${task}`);
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


type SpecValues = Partial<Record<'budgets' | 'windows' | 'prefix' | 'lengths' | 'depths' | 'trials' | 'decode-tokens' | 'jobs' | 'gamma' | 'prompts' | 'prompt-tokens' | 'tokens' | 'temperature' | 'texts' | 'seed' | 'model' | 'heldout' | 'out', string>> & {
  policy?: string[];
  draft?: string[];
  json?: boolean;
};

/** --task spec: drafters over held-out prompts, one after another in this thread. */
async function evaluateSpec(values: SpecValues, io: CliIO): Promise<number> {
  // loaded here: ppl and needle do not pay for the drafters' modules
  const [{ expandSpecRuns, planSpecEval, runSpecEval, SPEC_TEXT_SETS }, { formatSpecReport }, { readHeldoutDocuments }, { nodeDrafterEnv }] = await Promise.all([
    import('../eval/spec.ts'),
    import('../eval/spec-format.ts'),
    import('../eval/spec-node.ts'),
    import('../spec/env-node.ts'),
  ]);
  for (const name of ['budgets', 'windows', 'prefix', 'lengths', 'depths', 'trials', 'decode-tokens', 'jobs'] as const) {
    if (values[name] !== undefined) throw new UsageError(`--${name} does not apply to --task spec${name === 'jobs' ? ' (it runs in one thread: its speed-ups are wall-clock times)' : ''}`);
  }
  const drafts = values.draft ?? [];
  if (drafts.length === 0) throw new UsageError('missing --draft SPEC (repeatable, e.g. --draft model:gamma=4 --draft lookup)');
  if ((values.policy ?? []).length > 1) throw new UsageError('--task spec takes one --policy: the target\'s KV-cache policy');
  const gammas = listOption('gamma', values.gamma, asInteger, 'integers ≥ 1');
  let policy: string;
  try {
    policy = values.policy?.[0] ?? 'full';
    parsePolicyChain(policy);
    expandSpecRuns(drafts, gammas ?? null);
  } catch (error) {
    if (error instanceof DraftSpecError) throw new UsageError(`invalid --draft or --gamma: ${error.message}`);
    if (error instanceof PolicySpecError) throw new UsageError(`invalid --policy: ${error.message}`);
    throw error;
  }
  let texts: SpecTextSet[] | undefined;
  if (values.texts !== undefined) {
    const given = values.texts.split(',').map((t) => t.trim());
    const known: readonly string[] = SPEC_TEXT_SETS;
    for (const t of given) if (!known.includes(t)) throw new UsageError(`--texts must be a comma-separated list of ${SPEC_TEXT_SETS.join(', ')}, got ${JSON.stringify(values.texts)}`);
    texts = given as SpecTextSet[];
  }
  const optionalInt = (name: 'prompts' | 'prompt-tokens' | 'tokens') => (values[name] === undefined ? undefined : integerOption(name, values[name], 1, 1));
  const given = <T extends object>(o: T) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
  const settings: Partial<SpecSettings> = given({
    prompts: optionalInt('prompts'),
    promptTokens: optionalInt('prompt-tokens'),
    tokens: optionalInt('tokens'),
    temperature: values.temperature === undefined ? undefined : numberOption('temperature', values.temperature, 0, (v) => v >= 0, 'a number ≥ 0 (0 = greedy)'),
    seed: seedOption(values.seed, 0),
    policy,
    texts,
    gammas,
  });
  requireFileName('out', values.out);
  const heldout = heldoutPath(values.heldout);

  const modelDir = resolveModelDir(values.model);
  const model = await loadModelFromDirectory(modelDir);
  const env = nodeDrafterEnv(model, { targetDir: modelDir });
  const progress = makeProgress(io);
  try {
    const config = { drafts, settings };
    try {
      planSpecEval(model, config);
    } catch (error) {
      if (error instanceof EvalSettingsError || error instanceof PolicySpecError) throw new UsageError(error.message);
      throw error;
    }
    const documents = await readHeldoutDocuments(heldout);
    let lastTime = 0;
    const report = await runSpecEval(env, documents, config, {
      onProgress: (p) => {
        const now = performance.now();
        if (now - lastTime < (io.stderrIsTTY ? 250 : 5000) && p.done > 0) return;
        lastTime = now;
        progress(`eval spec: ${p.message} · ${Math.round((100 * p.done) / Math.max(1, p.total))}% of all`);
      },
    });
    progress(null);
    const json = `${JSON.stringify(report, null, 2)}\n`;
    if (values.out !== undefined) await writeFile(values.out, json);
    io.stdout(values.json ? json : `${formatSpecReport(report)}\n`);
    if (!values.json) io.stderr(`[${report.records.reduce((a, r) => a + r.rows.length, 0)} runs in ${report.seconds.toFixed(1)} s${values.out ? ` · JSON → ${values.out}` : ''}]\n`);
    return 0;
  } finally {
    progress(null);
    await env.release();
    await model.release();
  }
}
