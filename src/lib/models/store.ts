/**
 * The uploaded models (db.ts rows + files.ts bytes): list, add, remove, read. Adding writes every
 * file first and the row last; when a write fails (a full disk) the files written so far are
 * removed again, so nothing half-stored is ever listed or loaded. The same model (same sha256)
 * added twice is kept once.
 *
 * Uploaded models are keyed by their sha256, never by their id: an upload may carry the id of a
 * shipped model (a retrained copy, or the shipped files themselves) or of another upload, and
 * both stay loadable; pickers show uploads apart ("uploaded", with a sha256 prefix).
 */
import { liveQuery, type Observable } from 'dexie';
import type { Manifest } from '../../../engine/model/manifest.ts';
import { openModelDb, type FileStorage, type ModelDb, type StoredFile, type StoredModel } from './db.ts';
import { modelFiles, type ModelFiles } from './files.ts';

export class ModelStoreError extends Error {
  override name = 'ModelStoreError';
}

export const QUOTA_MESSAGE = 'The browser has no room left to store this model (its storage quota is full): delete a stored model, or free disk space, and upload it again.';

/** What add() stores: the checked manifest, the model's sha256 and every file by its relative path. */
export interface ModelUpload {
  manifest: Manifest;
  sha256: string;
  files: readonly { path: string; blob: Blob }[];
}

export interface AddResult {
  model: StoredModel;
  /** true when this model (same sha256) was stored already: nothing was written */
  duplicate: boolean;
}

function isQuota(error: unknown): boolean {
  const name = (error as { name?: string } | null)?.name ?? '';
  const inner = (error as { inner?: { name?: string } } | null)?.inner?.name ?? '';
  return name === 'QuotaExceededError' || inner === 'QuotaExceededError';
}

export class ModelStore {
  constructor(
    readonly db: ModelDb,
    /** the backend new files are written to (default: OPFS where available, else IndexedDB) */
    private readonly backend: (storage?: FileStorage) => Promise<ModelFiles> = (storage) => modelFiles(db, storage),
  ) {}

  /** Every stored model, newest first. */
  async list(): Promise<StoredModel[]> {
    return (await this.db.models.orderBy('added').reverse().toArray());
  }

  /** The list, kept up to date (other tabs and workers included). */
  live(): Observable<StoredModel[]> {
    return liveQuery(() => this.list());
  }

  get(key: string): Promise<StoredModel | undefined> {
    return this.db.models.get(key);
  }

  /** The stored model with this id and sha256 (what an experiment link names), if any. */
  async find(id: string, sha256: string): Promise<StoredModel | undefined> {
    const row = await this.db.models.get(sha256);
    return row && row.id === id ? row : undefined;
  }

  async add(upload: ModelUpload): Promise<AddResult> {
    const existing = await this.db.models.get(upload.sha256);
    if (existing) return { model: existing, duplicate: true };
    const listed = new Map(upload.manifest.files.map((f) => [f.path, f.sha256]));
    const files: StoredFile[] = upload.files.map(({ path, blob }) => {
      const sha256 = listed.get(path);
      return sha256 ? { path, bytes: blob.size, sha256 } : { path, bytes: blob.size };
    });
    const backend = await this.backend();
    const model: StoredModel = {
      key: upload.sha256,
      id: upload.manifest.id,
      name: upload.manifest.name,
      role: upload.manifest.role,
      sha256: upload.sha256,
      bytes: files.reduce((sum, f) => sum + f.bytes, 0),
      files,
      added: Date.now(),
      storage: backend.kind,
    };
    try {
      for (const { path, blob } of upload.files) await backend.write(model.key, path, blob);
      await this.db.models.add(model);
    } catch (error) {
      await backend.remove(model.key).catch(() => undefined);
      if (isQuota(error)) throw new ModelStoreError(QUOTA_MESSAGE);
      throw new ModelStoreError(`The model could not be stored: ${error instanceof Error ? error.message : String(error)}. Nothing was kept.`);
    }
    return { model, duplicate: false };
  }

  /** Deletes a stored model: its row first (it is no longer offered), then its files. */
  async remove(key: string): Promise<void> {
    const row = await this.db.models.get(key);
    if (!row) return;
    await this.db.models.delete(key);
    await (await this.backend(row.storage)).remove(key);
  }

  /** One file of a stored model, or null when the model or the file is not there. */
  async read(model: StoredModel, path: string): Promise<Blob | null> {
    if (!model.files.some((f) => f.path === path)) return null;
    return (await this.backend(model.storage)).read(model.key, path);
  }
}

let shared: ModelStore | null = null;

/** The app's store (one per page or worker). */
export function modelStore(): ModelStore {
  shared ??= new ModelStore(openModelDb());
  return shared;
}
