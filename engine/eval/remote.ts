/**
 * Evaluation jobs (jobs.ts) across a message channel: `serveEvalJobs` runs on the side that holds
 * a model (a Node worker thread, worker-node.ts; a Web Worker in the app) and `remoteEvalWorker`
 * is the pool worker (engine/pool.ts) that drives it from the other side. Platform-free: each side
 * adapts its own postMessage to a MessageEndpoint.
 *
 *   → { run, id, job }        ← { progress, id, progress }* then { result, id, figures } | { error, id, … }
 *   → { cancel, id }          the job stops at its next unit and answers { error, id, cancelled: true }
 *   ← { ready }               once, when the model is loaded; { failed } instead when it cannot work
 */
import { ContextFullError, KvscopeError, ModelError, PolicyDecisionError, PolicySpecError, SessionError } from '../errors.ts';
import type { EngineModel } from '../session.ts';
import { EvalSettingsError } from './index.ts';
import { EvalJobCancelled, inThreadWorker, type EvalFigures, type EvalJob, type EvalJobProgress, type EvalWorker } from './jobs.ts';

export type EvalWorkerRequest = { type: 'run'; id: number; job: EvalJob } | { type: 'cancel'; id: number };

export type EvalWorkerReply =
  | { type: 'ready' }
  /** the worker cannot run jobs (its model did not load, it crashed) */
  | { type: 'failed'; error: SerializedError }
  | { type: 'progress'; id: number; progress: EvalJobProgress }
  | { type: 'result'; id: number; figures: EvalFigures }
  | { type: 'error'; id: number; error: SerializedError; cancelled: boolean };

export interface MessageEndpoint<Out, In> {
  post(message: Out): void;
  /** every message from the other side */
  listen(handler: (message: In) => void): void;
}

export interface SerializedError {
  name: string;
  message: string;
  /** an engine error (KvscopeError): the CLI shows it as a runtime failure, not an internal one */
  kvscope: boolean;
  stack?: string;
}

export function serializeError(error: unknown): SerializedError {
  if (!(error instanceof Error)) return { name: 'Error', message: String(error), kvscope: false };
  return { name: error.name, message: error.message, kvscope: error instanceof KvscopeError, stack: error.stack };
}

/** The engine's error classes by name, so that a revived error is caught and classified as the original. */
const ERROR_CLASSES: Record<string, new (message: string) => Error> = {
  ModelError,
  SessionError,
  ContextFullError,
  PolicySpecError,
  PolicyDecisionError,
  EvalSettingsError,
  RangeError,
  TypeError,
};

export function reviveError(serialized: SerializedError): Error {
  const Class = Object.hasOwn(ERROR_CLASSES, serialized.name) ? ERROR_CLASSES[serialized.name] : serialized.kvscope ? KvscopeError : Error;
  const error = new Class(serialized.message);
  // other classes (CalibrationError …) keep their name, which is what the app's classifier reads
  error.name = serialized.name;
  if (serialized.stack) error.stack = serialized.stack;
  return error;
}

/** Progress messages at most this often per job (a ppl job ticks every token). */
const PROGRESS_INTERVAL_MS = 50;

/**
 * Serves jobs on `model`, one at a time in the order they arrive. `yieldToLoop` must let this
 * side's message handler run, so that a cancel reaches a job that is busy.
 */
export function serveEvalJobs(model: EngineModel, endpoint: MessageEndpoint<EvalWorkerReply, EvalWorkerRequest>, yieldToLoop: () => Promise<void>): void {
  const worker = inThreadWorker(model, { yield: yieldToLoop });
  const controllers = new Map<number, AbortController>();
  let queue = Promise.resolve();

  const runOne = async (id: number, job: EvalJob, signal: AbortSignal) => {
    let lastPosted = -Infinity;
    let held: EvalJobProgress | null = null;
    try {
      const figures = await worker.run(
        job,
        (progress) => {
          const now = globalThis.performance.now();
          held = progress;
          if (now - lastPosted < PROGRESS_INTERVAL_MS) return;
          lastPosted = now;
          held = null;
          endpoint.post({ type: 'progress', id, progress });
        },
        signal,
      );
      // the last units' progress, held back by the interval, before the result
      if (held) endpoint.post({ type: 'progress', id, progress: held });
      endpoint.post({ type: 'result', id, figures });
    } catch (error) {
      endpoint.post({ type: 'error', id, error: serializeError(error), cancelled: signal.aborted });
    } finally {
      controllers.delete(id);
    }
  };

  endpoint.listen((message) => {
    if (message.type === 'cancel') {
      controllers.get(message.id)?.abort();
      return;
    }
    const controller = new AbortController();
    controllers.set(message.id, controller);
    queue = queue.then(() => runOne(message.id, message.job, controller.signal));
  });
  endpoint.post({ type: 'ready' });
}

interface PendingJob {
  onProgress: (progress: EvalJobProgress) => void;
  resolve: (figures: EvalFigures) => void;
  reject: (error: Error) => void;
}

/** The pool worker for a serving side at the other end of `endpoint`. */
export function remoteEvalWorker(endpoint: MessageEndpoint<EvalWorkerRequest, EvalWorkerReply>): EvalWorker {
  const pending = new Map<number, PendingJob>();
  let nextId = 1;
  let failure: Error | null = null;
  let markReady: () => void = () => undefined;
  let markFailed: (error: Error) => void = () => undefined;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    markFailed = reject;
  });
  // a worker that fails before any job was asked of it must not be an unhandled rejection
  ready.catch(() => undefined);

  const settle = (id: number): PendingJob | undefined => {
    const job = pending.get(id);
    pending.delete(id);
    return job;
  };

  endpoint.listen((message) => {
    switch (message.type) {
      case 'ready':
        markReady();
        break;
      case 'failed':
        failure = reviveError(message.error);
        markFailed(failure);
        for (const job of pending.values()) job.reject(failure);
        pending.clear();
        break;
      case 'progress':
        pending.get(message.id)?.onProgress(message.progress);
        break;
      case 'result':
        settle(message.id)?.resolve(message.figures);
        break;
      case 'error':
        settle(message.id)?.reject(message.cancelled ? new EvalJobCancelled('cancelled') : reviveError(message.error));
        break;
    }
  });

  return {
    async run(job, onProgress, signal) {
      if (signal.aborted) throw new EvalJobCancelled('cancelled');
      // a cancel while the model is still loading need not wait for it
      const aborted = new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new EvalJobCancelled('cancelled')), { once: true }));
      aborted.catch(() => undefined);
      await Promise.race([ready, aborted]);
      if (failure) throw failure;
      if (signal.aborted) throw new EvalJobCancelled('cancelled');
      const id = nextId++;
      const cancel = () => endpoint.post({ type: 'cancel', id });
      signal.addEventListener('abort', cancel, { once: true });
      try {
        // settles when the other side answers, also after a cancel: the worker is idle again then
        return await new Promise<EvalFigures>((resolve, reject) => {
          pending.set(id, { onProgress, resolve, reject });
          endpoint.post({ type: 'run', id, job });
        });
      } finally {
        signal.removeEventListener('abort', cancel);
      }
    },
  };
}
