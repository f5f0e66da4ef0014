/**
 * ModelSources (engine/model/load.ts) over Blobs: the files of a folder being uploaded (checked by
 * check.worker.ts before anything is stored) and the files of a stored model (what the engine
 * worker, the evaluation workers and /bench's links load an uploaded model from). Reads stream the
 * Blob so that a large graph part reports its progress.
 */
import { ModelError } from '../../../engine/errors.ts';
import { fileTooLarge, readStream, type ModelSource } from '../../../engine/model/load.ts';
import { checkModelPath } from '../../../engine/model/paths.ts';
import type { StoredModel } from './db.ts';
import type { ModelStore } from './store.ts';

/**
 * A Blob's bytes; refused before anything is read when it is larger than the loader's `maxBytes`
 * (Blob.size costs nothing, reading a 3 GB file listed at 3 bytes costs 3 GB).
 */
async function blobBytes(path: string, blob: Blob, onBytes?: (loaded: number, total: number) => void, maxBytes?: number): Promise<Uint8Array> {
  if (maxBytes !== undefined && blob.size > maxBytes) throw fileTooLarge(path, blob.size, maxBytes);
  if (!onBytes || typeof blob.stream !== 'function') {
    const bytes = new Uint8Array(await blob.arrayBuffer());
    onBytes?.(bytes.length, blob.size);
    return bytes;
  }
  return readStream(path, blob.stream(), blob.size, onBytes);
}

/**
 * The files of a picked or dropped folder, by path relative to it. Only the files the loader asks
 * for are looked up, and only by a plain relative path (engine/model/paths.ts; the manifest's paths
 * are checked by validateManifest): other files of the folder, whatever their names (macOS
 * `Icon\r`, `notes #1.md`), are never read, and check.worker.ts does not store them.
 */
export function folderSource(files: ReadonlyMap<string, Blob>, folder: string): ModelSource {
  return {
    location: folder,
    async read(path, onBytes, maxBytes) {
      checkModelPath(path);
      const blob = files.get(path);
      if (!blob) throw new ModelError(`${path}: file is missing (not in the folder ${folder})`);
      return blobBytes(path, blob, onBytes, maxBytes);
    },
  };
}

/** A stored model's files (ModelStore). */
export function storedModelSource(store: ModelStore, model: StoredModel): ModelSource {
  return {
    location: `uploaded model ${model.id} (sha256 ${model.sha256.slice(0, 12)}…)`,
    async read(path, onBytes, maxBytes) {
      const blob = await store.read(model, path);
      if (!blob) throw new ModelError(`${path}: file is missing (not stored with the uploaded model ${model.id})`);
      return blobBytes(path, blob, onBytes, maxBytes);
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
