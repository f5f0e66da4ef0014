/**
 * Notebook databases for tests: Dexie over fake-indexeddb, one fresh database per call.
 *
 * Dexie's live queries watch for changes only when its global dependencies hold an indexedDB; Node
 * (and happy-dom) has none, so this lends them fake-indexeddb's once, as a browser's would be.
 */
import { Dexie } from 'dexie';
import { IDBKeyRange, indexedDB } from 'fake-indexeddb';
import { openNotebookDb, type NotebookDb } from '../../src/lib/notebooks/db.ts';
import { TraceCodec } from '../../src/lib/notebooks/stored-trace.ts';
import { NotebookStore } from '../../src/lib/notebooks/store.ts';
import type { Notebook } from '../../src/lib/notebooks/types.ts';

if (!Dexie.dependencies.indexedDB) {
  Dexie.dependencies.indexedDB = indexedDB;
  Dexie.dependencies.IDBKeyRange = IDBKeyRange;
}

let count = 0;

/** A database name no other test uses. */
export function testDbName(prefix = 'notebooks-test'): string {
  return `${prefix}-${++count}-${crypto.randomUUID()}`;
}

/** openNotebookDb on fake-indexeddb (a fresh database unless `name` is one made before). */
export function testNotebookDb(name = testDbName()): NotebookDb {
  return openNotebookDb({ name, indexedDB, IDBKeyRange });
}

export function testNotebookStore(db: NotebookDb = testNotebookDb()): NotebookStore {
  return new NotebookStore(db);
}

/** Every notebook in the database, newest updated first, traces inflated (what a test checks was written). */
export async function allNotebooks(db: NotebookDb): Promise<Notebook[]> {
  const rows = await db.notebooks.orderBy('updated').reverse().toArray();
  return rows.map((row) => new TraceCodec().unpack(row));
}

export { IDBKeyRange, indexedDB };
