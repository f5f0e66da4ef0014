/**
 * The notebooks' IndexedDB database (Dexie), with a versioned schema and a tested upgrade path.
 *
 * version 1: `notebooks` (whole notebooks, cells and traces inline) and `settings` (a key/value
 * table nothing uses yet: a version can add stores but not drop one without its own bump).
 * version 2: adds `summaries`, one small row per notebook (title, updated, cell counts by kind and a
 * lower-cased search text). The list and the search read only these rows, so they never load the
 * cells' traces and figures (a notebook can hold megabytes of them). The store writes a notebook and
 * its summary in one transaction; the upgrade fills a summary for every version-1 notebook.
 *
 * A database a newer kvscope wrote (a higher version) is refused at open with NewerDatabaseError:
 * Dexie would open it as it is, and this app would read and write a format it does not know.
 */
import { Dexie, type Table, type Transaction } from 'dexie';
import type { Cell, CellKind, Notebook } from './types.ts';
import type { StoredNotebook } from './stored-trace.ts';

export const NOTEBOOK_DB_NAME = 'kvscope-notebooks';
export const NOTEBOOK_SCHEMA_VERSION = 2;

/** What the notebook list shows for one notebook. */
export interface NotebookSummary {
  id: string;
  title: string;
  updated: number;
  cells: number;
  kinds: Record<CellKind, number>;
}

/** A `summaries` row: the summary plus the text a search matches (title and cell text, lower-cased). */
export interface SummaryRow extends NotebookSummary {
  searchText: string;
}

export interface Setting {
  key: string;
  value: string;
}

/** The version-1 stores, exactly as first shipped: the upgrade test declares a database with these. */
// `settings` is reserved (no reader or writer): dropping it would take a version bump of its own
export const SCHEMA_V1 = { notebooks: 'id, updated, title', settings: 'key' } as const;
/** Version 2 adds the summaries (ordered by `updated`, the list's order). */
export const SCHEMA_V2 = { ...SCHEMA_V1, summaries: 'id, updated, title' } as const;

export function declareSchemaV1(db: Dexie): void {
  db.version(1).stores(SCHEMA_V1);
}

export interface NotebookDb extends Dexie {
  /** traces deflated (stored-trace.ts); the store hands out Notebooks */
  notebooks: Table<StoredNotebook, string>;
  summaries: Table<SummaryRow, string>;
  settings: Table<Setting, string>;
}

export interface NotebookDbOptions {
  name?: string;
  indexedDB?: IDBFactory;
  IDBKeyRange?: typeof IDBKeyRange;
}

/** The database was written by a newer kvscope: its schema `version` is above NOTEBOOK_SCHEMA_VERSION. */
export class NewerDatabaseError extends Error {
  override name = 'NewerDatabaseError';
  constructor(readonly version: number) {
    super(`the notebook database has version ${version}, newer than version ${NOTEBOOK_SCHEMA_VERSION}`);
  }
}

export function openNotebookDb(options: NotebookDbOptions = {}): NotebookDb {
  const db = new Dexie(options.name ?? NOTEBOOK_DB_NAME, {
    ...(options.indexedDB ? { indexedDB: options.indexedDB } : {}),
    ...(options.IDBKeyRange ? { IDBKeyRange: options.IDBKeyRange } : {}),
  }) as NotebookDb;
  declareSchemaV1(db);
  db.version(2).stores(SCHEMA_V2).upgrade(fillSummaries);
  db.on('ready', refuseNewer);
  return db;
}

/** Fails the open (every query then rejects with it) when a newer app wrote this database. */
function refuseNewer(db: Dexie): void {
  // Dexie stores version n as native version 10·n (plus small patch steps it may add itself)
  const installed = Math.floor(db.backendDB().version / 10);
  if (installed > NOTEBOOK_SCHEMA_VERSION) throw new NewerDatabaseError(installed);
}

async function fillSummaries(tx: Transaction): Promise<void> {
  const summaries = tx.table<SummaryRow, string>('summaries');
  await tx
    .table<Notebook, string>('notebooks')
    .toCollection()
    .each((notebook) => summaries.put(summaryRow(notebook)));
}

export function summaryRow(notebook: Notebook): SummaryRow {
  const kinds: Record<CellKind, number> = { markdown: 0, experiment: 0, comparison: 0, evaluation: 0 };
  for (const cell of notebook.cells) kinds[cell.kind]++;
  const searchText = [notebook.title, ...notebook.cells.map(cellText)].join('\n').toLowerCase();
  return { id: notebook.id, title: notebook.title, updated: notebook.updated, cells: notebook.cells.length, kinds, searchText };
}

/** The words a search should find in a cell: what a reader sees, never the trace or the SVG. */
function cellText(cell: Cell): string {
  if (cell.kind === 'markdown') return cell.text;
  const figure = cell.figure ? [cell.figure.title, cell.figure.caption] : [];
  const text = cell.kind === 'experiment' ? [cell.text] : cell.table.columns;
  return [cell.summary, ...text, ...figure].join('\n');
}
