/**
 * The /bench page's parallel evaluation workers: Web Workers started by the engine worker, each
 * loading the same model once (eval.worker.ts) and running evaluation jobs through
 * engine/eval/remote.ts, so that runEval spreads its runs over every core (the engine worker
 * takes runs too). Kept between evaluations (loading a model costs seconds); the engine worker
 * closes them when its model changes or an evaluation fails.
 */
import type { EvalWorker } from '../../../engine/eval/jobs.ts';
import { remoteEvalWorker, type EvalWorkerReply, type EvalWorkerRequest } from '../../../engine/eval/remote.ts';
import type { UploadedModelRef } from './protocol.ts';

/** What an evaluation worker needs to load the engine worker's model (the first message it gets). */
export interface EvalWorkerInit {
  type: 'init';
  /** models/ of the app (its index.json maps the id to a directory) */
  modelsUrl: string;
  modelId: string;
  /** the engine worker's model was uploaded (src/lib/models/): read it from this browser's storage, not the index */
  modelSource?: UploadedModelRef;
  /** onnxruntime-web's .wasm, served by the app */
  wasmUrl: string;
}

/** A worker-like thing (a fake in Node tests). */
export type WorkerLike = Pick<Worker, 'postMessage' | 'terminate' | 'onmessage' | 'onerror'>;

export function createEvalWebWorker(): WorkerLike {
  return new Worker(new URL('./eval.worker.ts', import.meta.url), { type: 'module', name: 'kvscope-eval' });
}

export class EvalWorkerPool {
  private readonly threads: WorkerLike[] = [];
  private readonly workers: EvalWorker[] = [];

  constructor(
    /** the model and runtime these workers load: a pool is reused only for the same */
    readonly init: EvalWorkerInit,
    private readonly create: () => WorkerLike = createEvalWebWorker,
  ) {}

  /** `count` workers, starting those not running yet (their first jobs wait for the model). */
  take(count: number): EvalWorker[] {
    while (this.workers.length < count) {
      const thread = this.create();
      this.threads.push(thread);
      this.workers.push(
        remoteEvalWorker({
          post: (message: EvalWorkerRequest) => thread.postMessage(message),
          listen: (handler: (message: EvalWorkerReply) => void) => {
            thread.onmessage = (event: MessageEvent<EvalWorkerReply>) => handler(event.data);
            thread.onerror = (event: ErrorEvent) => {
              event.preventDefault?.();
              handler({ type: 'failed', error: { name: 'Error', message: `an evaluation worker stopped: ${event.message || 'its script failed'}`, kvscope: false } });
            };
          },
        }),
      );
      thread.postMessage(this.init);
    }
    return this.workers.slice(0, count);
  }

  get size(): number {
    return this.workers.length;
  }

  close(): void {
    for (const thread of this.threads) thread.terminate();
    this.threads.length = 0;
    this.workers.length = 0;
  }
}
