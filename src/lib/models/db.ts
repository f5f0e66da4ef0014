/**
 * The uploaded models' IndexedDB database (Dexie), apart from the notebooks' (`kvscope-models`):
 * one `models` row per stored model (what /models lists and the pickers offer) and, where the
 * browser has no Origin Private File System, the model files themselves as Blobs in `blobs`
 * (files.ts). A model's row is written last, after every file: a row means the files are there.
 *
 * version 1: `models` keyed by `key` (the model's sha256: the same model uploaded twice is one
 * row), indexed by `id` and `sha256`; `blobs` keyed by [key+path] (`key`: the row's storageKey).
 */
import { Dexie, type Table } from 'dexie';

export const MODEL_DB_NAME = 'kvscope-models';
export const MODEL_SCHEMA_VERSION = 1;

/** One file of a stored model, as its manifest lists it (plus the unlisted optional files). */
export interface StoredFile {
  path: string;
  bytes: number;
  /** from the manifest; absent for the optional files it does not list (calibration.json, MODEL_CARD.md) */
  sha256?: string;
}

/** Where a stored model's files are. */
export type FileStorage = 'opfs' | 'idb';

/** A `models` row: an uploaded model, checked before it was stored. */
export interface StoredModel {
  /** the storage key: the model's sha256 (engine/model/manifest.ts modelSha256) */
  key: string;
  id: string;
  name: string;
  role: 'target' | 'draft';
  sha256: string;
  /** every stored file's bytes together */
  bytes: number;
  files: StoredFile[];
  /** Date.now() when it was stored */
  added: number;
  storage: FileStorage;
  /**
   * the key its files are stored under (files.ts): one of its own per upload attempt
   * (`<sha256>.<start ms>.<random>`, store.ts), so that two uploads of one model never share files;
   * absent in rows written before there was one, whose files are under `key`
   */
  storageKey?: string;
}

/** A `blobs` row: one file of a model stored in IndexedDB (no OPFS). */
export interface BlobRow {
  key: string;
  path: string;
  blob: Blob;
}

export interface ModelDb extends Dexie {
  models: Table<StoredModel, string>;
  blobs: Table<BlobRow, [string, string]>;
}

export interface ModelDbOptions {
  name?: string;
  indexedDB?: IDBFactory;
  IDBKeyRange?: typeof IDBKeyRange;
}

export const MODEL_SCHEMA_V1 = { models: 'key, id, sha256, added', blobs: '[key+path], key' } as const;

export function openModelDb(options: ModelDbOptions = {}): ModelDb {
  const db = new Dexie(options.name ?? MODEL_DB_NAME, {
    ...(options.indexedDB ? { indexedDB: options.indexedDB } : {}),
    ...(options.IDBKeyRange ? { IDBKeyRange: options.IDBKeyRange } : {}),
  }) as ModelDb;
  db.version(MODEL_SCHEMA_VERSION).stores(MODEL_SCHEMA_V1);
  return db;
}
