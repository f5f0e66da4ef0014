/**
 * ModelSources (engine/model/load.ts) over Blobs: the files of a folder being uploaded (checked by
 * check.worker.ts before anything is stored) and the files of a stored model (what the engine
 * worker, the evaluation workers and /bench's links load an uploaded model from). Reads stream the
 * Blob so that a large graph part reports its progress.
 */
import { ModelError } from '../../../engine/errors.ts';
import type { ModelSource } from '../../../engine/model/load.ts';
import { checkModelPath, modelPathProblem, quote } from '../../../engine/model/paths.ts';
import type { StoredModel } from './db.ts';
import type { ModelStore } from './store.ts';

async function blobBytes(blob: Blob, onBytes?: (loaded: number, total: number) => void): Promise<Uint8Array> {
  if (!onBytes || typeof blob.stream !== 'function') {
    const bytes = new Uint8Array(await blob.arrayBuffer());
    onBytes?.(bytes.length, blob.size);
    return bytes;
  }
  const chunks: Uint8Array[] = [];
  const reader = blob.stream().getReader();
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onBytes(loaded, blob.size);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/**
 * The files of a picked or dropped folder, by path relative to it. Every path must be a plain
 * relative path inside the folder (engine/model/paths.ts), as the manifest's are: a folder holding
 * one that is not (`../x`, `a//b`, `%2e%2e`, a control character) is refused here, the message
 * naming the file, before any file is read.
 */
export function folderSource(files: ReadonlyMap<string, Blob>, folder: string): ModelSource {
  for (const path of files.keys()) {
    const problem = modelPathProblem(path);
    if (problem) throw new ModelError(`${quote(path)}: not a plain file path inside the folder ${folder} (${problem}); remove or rename that file`);
  }
  return {
    location: folder,
    async read(path, onBytes) {
      checkModelPath(path);
      const blob = files.get(path);
      if (!blob) throw new ModelError(`${path}: file is missing (not in the folder ${folder})`);
      return blobBytes(blob, onBytes);
    },
  };
}

/** A stored model's files (ModelStore). */
export function storedModelSource(store: ModelStore, model: StoredModel): ModelSource {
  return {
    location: `uploaded model ${model.id} (sha256 ${model.sha256.slice(0, 12)}…)`,
    async read(path, onBytes) {
      const blob = await store.read(model, path);
      if (!blob) throw new ModelError(`${path}: file is missing (not stored with the uploaded model ${model.id})`);
      return blobBytes(blob, onBytes);
    },
  };
}

/** The stored model under `key`, as a ModelSource; a ModelError when it is not stored (any more). */
export async function uploadedModelSource(store: ModelStore, key: string): Promise<UploadedSource> {
  const model = await store.get(key);
  if (!model) throw new ModelError(`the uploaded model ${key.slice(0, 12)}… is not stored in this browser (deleted, or uploaded in another browser): upload it again at /models`);
  const files = model.files.flatMap((f) => (f.sha256 ? [{ path: f.path, bytes: f.bytes, sha256: f.sha256 }] : []));
  return { ...storedModelSource(store, model), model, files };
}

export interface UploadedSource extends ModelSource {
  model: StoredModel;
  /** the files its manifest lists (load progress counts these) */
  files: { path: string; bytes: number; sha256: string }[];
}
