/**
 * The page side of an upload: hands a picked folder to a fresh check worker (check.worker.ts) and
 * resolves with what it stored, or rejects with its one-sentence reason. The worker is ended after
 * each check (its onnxruntime session and the file bytes go with it).
 */
import type { StoredModel } from './db.ts';
import type { CheckProgress, CheckReply, CheckRequest } from './check-protocol.ts';
import type { PickedFolder } from './folder.ts';

export class CheckFailure extends Error {
  override name = 'CheckFailure';
}

export type WorkerLike = Pick<Worker, 'postMessage' | 'terminate' | 'onmessage' | 'onerror'>;

export function createCheckWorker(): WorkerLike {
  return new Worker(new URL('./check.worker.ts', import.meta.url), { type: 'module', name: 'kvscope-model-check' });
}

export function checkFolder(
  folder: PickedFolder,
  wasmUrl: string,
  onProgress: (progress: CheckProgress) => void,
  create: () => WorkerLike = createCheckWorker,
): Promise<{ model: StoredModel; duplicate: boolean }> {
  if (folder.files.length === 0) return Promise.reject(new CheckFailure('The folder is empty: pick the folder that holds manifest.json.'));
  const worker = create();
  return new Promise((resolve, reject) => {
    const finish = () => worker.terminate();
    worker.onmessage = (event: MessageEvent<CheckReply>) => {
      const reply = event.data;
      if (reply.type === 'progress') onProgress(reply.progress);
      else if (reply.type === 'stored') {
        finish();
        resolve({ model: reply.model, duplicate: reply.duplicate });
      } else {
        finish();
        reject(new CheckFailure(reply.message));
      }
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault?.();
      finish();
      reject(new CheckFailure(`The model check stopped: ${event.message || 'its script failed to load'}`));
    };
    const request: CheckRequest = { type: 'check', folder: folder.name, files: folder.files, wasmUrl };
    worker.postMessage(request);
  });
}
