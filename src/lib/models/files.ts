/**
 * Where an uploaded model's files live: the Origin Private File System when the browser has it
 * (one directory per model under `kvscope-models/`, files named by their encoded relative path),
 * else IndexedDB Blobs (db.ts `blobs`). The page and the workers use the same backends: OPFS and
 * IndexedDB both work in a dedicated worker, which is where files are written and read for a load.
 */
import type { FileStorage, ModelDb } from './db.ts';

export interface ModelFiles {
  readonly kind: FileStorage;
  write(key: string, path: string, blob: Blob): Promise<void>;
  /** the file, or null when it is not there */
  read(key: string, path: string): Promise<Blob | null>;
  /** every file of the model (nothing when there are none) */
  remove(key: string): Promise<void>;
  /** the keys that have files here (store.ts sweeps those no row lists) */
  keys(): Promise<string[]>;
}

const OPFS_ROOT = 'kvscope-models';

/** A relative path (which may hold folders) as one file name. */
const fileName = (path: string) => encodeURIComponent(path);

/** The part of the OPFS API used here (FileSystemDirectoryHandle). */
export interface DirectoryLike {
  getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<DirectoryLike>;
  getFileHandle(name: string, options?: { create?: boolean }): Promise<{ getFile(): Promise<Blob>; createWritable(): Promise<WritableLike> }>;
  removeEntry(name: string, options?: { recursive?: boolean }): Promise<void>;
  keys(): AsyncIterable<string>;
}

/** The part of FileSystemWritableFileStream used here. */
export interface WritableLike {
  write(data: Blob): Promise<void>;
  close(): Promise<void>;
  abort(reason?: unknown): Promise<void>;
}

function isNotFound(error: unknown): boolean {
  return error instanceof Error && (error.name === 'NotFoundError' || error.name === 'TypeMismatchError');
}

export function opfsFiles(root: DirectoryLike): ModelFiles {
  const models = () => root.getDirectoryHandle(OPFS_ROOT, { create: true });
  return {
    kind: 'opfs',
    async write(key, path, blob) {
      const dir = await (await models()).getDirectoryHandle(key, { create: true });
      const writable = await (await dir.getFileHandle(fileName(path), { create: true })).createWritable();
      try {
        await writable.write(blob);
        await writable.close();
      } catch (error) {
        // an open writable keeps the file locked (removeEntry would fail): discard what was written
        await writable.abort(error).catch(() => undefined);
        throw error;
      }
    },
    async read(key, path) {
      try {
        const dir = await (await models()).getDirectoryHandle(key);
        return await (await dir.getFileHandle(fileName(path))).getFile();
      } catch (error) {
        if (isNotFound(error)) return null;
        throw error;
      }
    },
    async remove(key) {
      try {
        await (await models()).removeEntry(key, { recursive: true });
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
    },
    async keys() {
      const keys: string[] = [];
      for await (const key of (await models()).keys()) keys.push(key);
      return keys;
    },
  };
}

export function idbFiles(db: ModelDb): ModelFiles {
  return {
    kind: 'idb',
    async write(key, path, blob) {
      await db.blobs.put({ key, path, blob });
    },
    async read(key, path) {
      return (await db.blobs.get([key, path]))?.blob ?? null;
    },
    async remove(key) {
      await db.blobs.where('key').equals(key).delete();
    },
    async keys() {
      return (await db.blobs.orderBy('key').uniqueKeys()) as string[];
    },
  };
}

/**
 * OPFS where it can be written here (createWritable: Chromium and Firefox, in pages and workers),
 * else IndexedDB. `storage` picks the backend a stored model was written to.
 */
export async function modelFiles(db: ModelDb, storage?: FileStorage): Promise<ModelFiles> {
  if (storage === 'idb') return idbFiles(db);
  const storageManager = (globalThis.navigator as Navigator | undefined)?.storage;
  const writable = typeof FileSystemFileHandle === 'function' && 'createWritable' in FileSystemFileHandle.prototype;
  if (storageManager && typeof storageManager.getDirectory === 'function' && (writable || storage === 'opfs')) {
    try {
      return opfsFiles((await storageManager.getDirectory()) as unknown as DirectoryLike);
    } catch {
      // OPFS refused (private browsing in some browsers): IndexedDB
    }
  }
  if (storage === 'opfs') throw new Error('this browser no longer gives access to the Origin Private File System the model was stored in');
  return idbFiles(db);
}
