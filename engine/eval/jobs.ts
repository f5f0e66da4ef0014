/**
 * The unit of work of an evaluation: one run — a policy spec at one budget — over the inputs every
 * run shares (held-out windows or passkey prompts, built once from the tokenizer). A job is plain
 * data, so the same job runs in this thread or is posted to a worker thread / Web Worker holding
 * its own copy of the model (remote.ts), with the same figures either way.
 */
import type { NeedlePrompt } from '../metrics/needle.ts';
import type { PoolWorker } from '../pool.ts';
import type { EngineModel } from '../session.ts';
import { needleRun, type NeedleFigures, type NeedleSettings } from './needle.ts';
import { perplexityRun, type PplFigures, type PplSettings } from './perplexity.ts';

/** What every run of one evaluation shares. */
export type EvalInputs =
  | { task: 'ppl'; settings: PplSettings; windows: number[][] }
  | { task: 'needle'; settings: NeedleSettings; prompts: NeedlePrompt[][] };

export interface EvalJob {
  inputs: EvalInputs;
  spec: string;
  /** prefix of the progress messages, e.g. "h2o:heavy=32,recent=32 (2/4)" */
  label: string;
}

/** Units done within the job (scored tokens for ppl, trials for needle) and what is happening. */
export interface EvalJobProgress {
  done: number;
  message: string;
}

/** A job's figures: exactly one of the two, the key its task names. */
export type EvalFigures = { ppl: PplFigures } | { needle: NeedleFigures };

export type EvalWorker = PoolWorker<EvalJob, EvalFigures, EvalJobProgress>;

/** Thrown out of a job whose signal aborted (the pool ignores it). */
export class EvalJobCancelled extends Error {}

/**
 * Runs one job on `model`. `tick(done, message)` comes before the first unit (done 0) and after
 * every unit; it may throw to stop the job and may be async to yield.
 */
export async function runEvalJob(model: EngineModel, job: EvalJob, tick: (done: number, message: string) => void | Promise<void>): Promise<EvalFigures> {
  const { inputs, spec, label } = job;
  await tick(0, `${label}: starting`);
  if (inputs.task === 'ppl') {
    const ppl = await perplexityRun(model, inputs.windows, spec, inputs.settings.prefix, {
      onToken: (done, all) => tick(done, `${label}: token ${done}/${all}`),
    });
    return { ppl };
  }
  let correct = 0;
  const needle = await needleRun(model, inputs.prompts, inputs.settings, spec, (done, all, trial) => {
    if (trial.success) correct++;
    return tick(done, `${label}: trial ${done}/${all}, ${correct} correct (key ${trial.key} → ${JSON.stringify(trial.output.trim())})`);
  });
  return { needle };
}

export interface InThreadOptions {
  /** called about every `yieldEvery` units, so that messages (cancel) reach a busy worker */
  yield?: () => Promise<void>;
  /** default: 16 for ppl (tokens are cheap), 1 for needle */
  yieldEvery?: number;
}

/** The worker that runs jobs here, on this thread's model. */
export function inThreadWorker(model: EngineModel, options: InThreadOptions = {}): EvalWorker {
  let sinceYield = 0;
  return {
    run(job, onProgress, signal) {
      const every = options.yieldEvery ?? (job.inputs.task === 'ppl' ? 16 : 1);
      return runEvalJob(model, job, async (done, message) => {
        if (signal.aborted) throw new EvalJobCancelled('cancelled');
        onProgress({ done, message });
        if (options.yield && ++sinceYield >= every) {
          sinceYield = 0;
          await options.yield();
        }
      });
    },
  };
}
