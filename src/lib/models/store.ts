/**
 * The uploaded models (db.ts rows + files.ts bytes): list, add, remove, read. Adding writes every
 * file first and the row last; when a write fails (a full disk) the files written so far are
 * removed again, so nothing half-stored is ever listed or loaded. The same model (same sha256)
 * added twice is kept once.
 *
 * Each upload attempt writes its files under a storage key of its own (`<sha256>.<start ms>.<random>`),
 * so two uploads of one model at once (two tabs) never touch each other's files: the one whose row
 * is written second finds the model stored (a ConstraintError) and removes only its own files. Files
 * no row lists (a tab closed mid-upload) are swept by sweep() once they are older than any upload
 * still being written could be.
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

/** Files no row lists are swept once their upload started this long ago (no upload takes an hour to write). */
export const STALE_UPLOAD_MS = 60 * 60 * 1000;

/** What add() stores: the checked manifest, the model's sha256 and every file by its relative path. */
export interface ModelUpload {
  manifest: Manifest;
  sha256: string;
  files: readonly { path: string; blob: Blob }[];
}

export interface AddResult {
  model: StoredModel;
  /** true when this model (same sha256) was stored already: only `updated` was written */
  duplicate: boolean;
  /**
   * of a duplicate: the files the sha256 does not cover (calibration.json, MODEL_CARD.md,
   * reference.json) that differed from the stored ones and were replaced, or were added
   */
  updated: string[];
}

function named(error: unknown, name: string): boolean {
  const outer = (error as { name?: string } | null)?.name ?? '';
  const inner = (error as { inner?: { name?: string } } | null)?.inner?.name ?? '';
  return outer === name || inner === name;
}

/** Where a stored model's files are (rows from before storageKey: under the row's key). */
const filesKey = (model: StoredModel) => model.storageKey ?? model.key;

/** When the upload that wrote files under `key` started; null for a key of no upload attempt (a bare sha256). */
function uploadStart(key: string): number | null {
  const start = Number(key.split('.')[1]);
  return Number.isSafeInteger(start) ? start : null;
}

async function sameBytes(a: Blob, b: Blob): Promise<boolean> {
  if (a.size !== b.size) return false;
  const [x, y] = await Promise.all([a.arrayBuffer(), b.arrayBuffer()]);
  const [p, q] = [new Uint8Array(x), new Uint8Array(y)];
  for (let i = 0; i < p.length; i++) if (p[i] !== q[i]) return false;
  return true;
}

function storeError(error: unknown): ModelStoreError {
  if (named(error, 'QuotaExceededError')) return new ModelStoreError(QUOTA_MESSAGE);
  return new ModelStoreError(`The model could not be stored: ${error instanceof Error ? error.message : String(error)}. Nothing was kept.`);
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

  async add(upload: ModelUpload, now = Date.now()): Promise<AddResult> {
    const existing = await this.db.models.get(upload.sha256);
    if (existing) return this.refresh(existing, upload);
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
      added: now,
      storage: backend.kind,
      storageKey: `${upload.sha256}.${now}.${crypto.randomUUID().slice(0, 8)}`,
    };
    try {
      for (const { path, blob } of upload.files) await backend.write(filesKey(model), path, blob);
      await this.db.models.add(model);
    } catch (error) {
      // only this attempt's files: another upload of the same model keeps its own
      await backend.remove(filesKey(model)).catch(() => undefined);
      if (named(error, 'ConstraintError')) {
        // the same model was stored meanwhile (another tab)
        const stored = await this.db.models.get(upload.sha256);
        if (stored) return this.refresh(stored, upload);
      }
      throw storeError(error);
    }
    return { model, duplicate: false, updated: [] };
  }

  /**
   * A model stored already: the files its sha256 does not cover (everything but manifest.json and
   * the files it lists) are replaced where this upload's differ, added where it has one more;
   * nothing else changes.
   */
  private async refresh(existing: StoredModel, upload: ModelUpload): Promise<AddResult> {
    const covered = new Set(['manifest.json', ...upload.manifest.files.map((f) => f.path)]);
    const backend = await this.backend(existing.storage);
    const key = filesKey(existing);
    const changed: { path: string; blob: Blob }[] = [];
    for (const file of upload.files) {
      if (covered.has(file.path)) continue;
      const stored = existing.files.some((f) => f.path === file.path) ? await backend.read(key, file.path) : null;
      if (!stored || !(await sameBytes(stored, file.blob))) changed.push(file);
    }
    if (changed.length === 0) return { model: existing, duplicate: true, updated: [] };
    const files = [...existing.files];
    const list = () => ({ files, bytes: files.reduce((sum, f) => sum + f.bytes, 0) });
    try {
      for (const { path, blob } of changed) {
        // a file is replaced whole or not at all (an OPFS writable commits on close, an IndexedDB put is one transaction)
        await backend.write(key, path, blob);
        const at = files.findIndex((f) => f.path === path);
        if (at >= 0) files[at] = { path, bytes: blob.size };
        else files.push({ path, bytes: blob.size });
      }
    } catch (error) {
      // what was written before the failure stays, listed with its size
      await this.db.models.update(existing.key, list()).catch(() => undefined);
      if (named(error, 'QuotaExceededError')) throw new ModelStoreError(QUOTA_MESSAGE);
      throw new ModelStoreError(`The model is stored already, but ${changed.map((f) => f.path).join(', ')} could not be replaced: ${error instanceof Error ? error.message : String(error)}`);
    }
    await this.db.models.update(existing.key, list());
    return { model: { ...existing, ...list() }, duplicate: true, updated: changed.map((f) => f.path) };
  }

  /**
   * Removes the files no row lists (an upload whose tab was closed before its row was written),
   * in every backend this browser has; an upload that started less than STALE_UPLOAD_MS ago may
   * still be writing (another tab) and is left alone. Returns the storage keys removed.
   */
  async sweep(now = Date.now()): Promise<string[]> {
    const listed = new Set((await this.db.models.toArray()).map(filesKey));
    const removed: string[] = [];
    const seen = new Set<FileStorage>();
    for (const kind of ['opfs', 'idb'] as const) {
      let backend: ModelFiles;
      try {
        backend = await this.backend(kind);
      } catch {
        continue; // this browser has no such storage: nothing can be in it
      }
      if (seen.has(backend.kind)) continue;
      seen.add(backend.kind);
      for (const key of await backend.keys()) {
        const start = uploadStart(key);
        if (listed.has(key) || (start !== null && now - start < STALE_UPLOAD_MS)) continue;
        await backend.remove(key);
        removed.push(key);
      }
    }
    return removed;
  }

  /** Deletes a stored model: its row first (it is no longer offered), then its files. */
  async remove(key: string): Promise<void> {
    const row = await this.db.models.get(key);
    if (!row) return;
    await this.db.models.delete(key);
    await (await this.backend(row.storage)).remove(filesKey(row));
  }

  /** One file of a stored model, or null when the model or the file is not there. */
  async read(model: StoredModel, path: string): Promise<Blob | null> {
    if (!model.files.some((f) => f.path === path)) return null;
    return (await this.backend(model.storage)).read(filesKey(model), path);
  }
}

let shared: ModelStore | null = null;

/** The app's store (one per page or worker). */
export function modelStore(): ModelStore {
  shared ??= new ModelStore(openModelDb());
  return shared;
}
