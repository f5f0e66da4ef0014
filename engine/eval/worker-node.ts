/**
 * The body of an evaluation worker thread (threads.ts): loads the model directory it is given
 * and serves evaluation jobs to its parent (remote.ts) until terminated.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadModelFromDirectory } from '../model/load-node.ts';
import { serializeError, serveEvalJobs, type EvalWorkerReply, type EvalWorkerRequest } from './remote.ts';
import { yieldToEventLoop } from './threads.ts';

const port = parentPort;
if (!port) throw new Error('engine/eval/worker-node.ts runs as a worker thread (see threads.ts)');
const { modelDir } = workerData as { modelDir: string };

try {
  const model = await loadModelFromDirectory(modelDir);
  serveEvalJobs(
    model,
    {
      post: (message: EvalWorkerReply) => port.postMessage(message),
      listen: (handler: (message: EvalWorkerRequest) => void) => void port.on('message', handler),
    },
    yieldToEventLoop,
  );
} catch (error) {
  port.postMessage({ type: 'failed', error: serializeError(error) } satisfies EvalWorkerReply);
}
