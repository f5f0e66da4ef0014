/**
 * The page side of an upload: hands a picked folder to a fresh check worker (check.worker.ts) and
 * resolves with what it stored, or rejects with its one-sentence reason. The worker is ended after
 * each check (its onnxruntime session and the file bytes go with it). A worker can also stop
 * answering without an `error` event (killed for memory) or send a reply that cannot be
 * deserialised (`messageerror`): the second rejects, and `signal` (the page's Cancel) ends the
 * check in either case, so a check never waits forever.
 */
import type { StoredModel } from './db.ts';
import type { CheckProgress, CheckReply, CheckRequest } from './check-protocol.ts';
import type { PickedFolder } from './folder.ts';

export class CheckFailure extends Error {
  override name = 'CheckFailure';
}

export const CANCELLED_MESSAGE = 'the check was cancelled';

export type WorkerLike = Pick<Worker, 'postMessage' | 'terminate' | 'onmessage' | 'onerror' | 'onmessageerror'>;

export interface CheckResult {
  model: StoredModel;
  duplicate: boolean;
  /** optional files of a model stored already that this upload replaced */
  updated: string[];
}

export function createCheckWorker(): WorkerLike {
  return new Worker(new URL('./check.worker.ts', import.meta.url), { type: 'module', name: 'kvscope-model-check' });
}

export function checkFolder(
  folder: PickedFolder,
  wasmUrl: string,
  onProgress: (progress: CheckProgress) => void,
  create: () => WorkerLike = createCheckWorker,
  signal?: AbortSignal,
): Promise<CheckResult> {
  if (folder.files.length === 0) return Promise.reject(new CheckFailure('The folder is empty: pick the folder that holds manifest.json.'));
  if (signal?.aborted) return Promise.reject(new CheckFailure(CANCELLED_MESSAGE));
  const worker = create();
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (settle: () => void) => {
      if (done) return;
      done = true;
      signal?.removeEventListener('abort', cancelled);
      worker.terminate();
      settle();
    };
    const fail = (message: string) => finish(() => reject(new CheckFailure(message)));
    const cancelled = () => fail(CANCELLED_MESSAGE);
    signal?.addEventListener('abort', cancelled);
    worker.onmessage = (event: MessageEvent<CheckReply>) => {
      const reply = event.data;
      if (reply.type === 'progress') {
        if (!done) onProgress(reply.progress);
      } else if (reply.type === 'stored') finish(() => resolve({ model: reply.model, duplicate: reply.duplicate, updated: reply.updated }));
      else fail(reply.message);
    };
    worker.onmessageerror = () => fail('The model check stopped: a reply from its worker could not be read');
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault?.();
      fail(`The model check stopped: ${event.message || 'its script failed to load'}`);
    };
    const request: CheckRequest = { type: 'check', folder: folder.name, files: folder.files, wasmUrl };
    worker.postMessage(request);
  });
}
