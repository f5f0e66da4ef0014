/**
 * Node only: evaluation workers on worker threads, each loading the model directory once and
 * serving jobs (remote.ts) until closed. `kvscope eval --jobs N` runs on N − 1 of these plus the
 * main thread, which holds the model already (a thread costs one to two seconds of CPU to start:
 * its own tsx loader and onnxruntime).
 */
import { Worker } from 'node:worker_threads';
import type { EvalWorker } from './jobs.ts';
import { remoteEvalWorker, serializeError, type EvalWorkerReply, type EvalWorkerRequest } from './remote.ts';

/** worker-node.ts behind a tiny .js entry that registers tsx first (worker threads start without it) */
const ENTRY = new URL('./worker-node-entry.js', import.meta.url);

/** A macrotask turn of Node's event loop: messages from (and to) threads are handled there. */
export const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export interface EvalThreads {
  workers: EvalWorker[];
  /** stops every thread (jobs still running are abandoned) */
  close(): Promise<void>;
}

/** Starts `count` threads that load `modelDir`; their first jobs wait until the model is loaded. */
export function startEvalThreads(modelDir: string, count: number): EvalThreads {
  const threads = Array.from({ length: count }, () => new Worker(ENTRY, { workerData: { modelDir } }));
  const workers = threads.map((thread) =>
    remoteEvalWorker({
      post: (message: EvalWorkerRequest) => thread.postMessage(message),
      listen: (handler: (message: EvalWorkerReply) => void) => {
        thread.on('message', handler);
        thread.on('error', (error) => handler({ type: 'failed', error: serializeError(error) }));
        thread.on('exit', (code) => handler({ type: 'failed', error: { name: 'Error', message: `an evaluation thread exited (code ${code})`, kvscope: false } }));
      },
    }),
  );
  return {
    workers,
    async close() {
      await Promise.all(threads.map((thread) => thread.terminate()));
    },
  };
}
