/**
 * NotebookStore: every read and write of notebooks, over the Dexie database (db.ts).
 *
 * Each write is one read-write transaction over a notebook and its summary row, so a failure (the
 * browser's storage full, a cell too large) leaves the database as it was. Errors reach the page as a
 * StoreError whose message is the sentence to show; databaseProblem words the errors of the database
 * itself (a newer app's, a full disk) for the reads too. Lists are Dexie live queries: they emit
 * again whenever a write commits, in this tab or another.
 */
import { liveQuery, type Observable } from 'dexie';
import { NewerDatabaseError, NOTEBOOK_SCHEMA_VERSION, summaryRow, type NotebookDb, type NotebookSummary, type SummaryRow } from './db.ts';
import type { Cell, NewCell, Notebook } from './types.ts';
import { TraceCodec } from './stored-trace.ts';
import { checkCell, checkNotebook, FieldError, MAX_CELLS, TITLE_MAX_CHARS } from './validate.ts';

export type { NotebookSummary } from './db.ts';

export const QUOTA_MESSAGE =
  "The browser's storage for this site is full: nothing was saved. Delete notebooks you no longer need or export them as a bundle, then try again.";
const DEFAULT_TITLE = 'Untitled notebook';
const IMPORTED_SUFFIX = ' (imported)';

export class StoreError extends Error {
  override name = 'StoreError';
  /** the refused field's path when a check failed, e.g. "cell.trace" (the explorer then saves the cell without its trace) */
  readonly field: string | undefined;
  /** `cause`: the database's own error this one words (databaseProblem finds it again) */
  constructor(message: string, field?: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.field = field;
  }
}

export interface RemovedCell {
  cell: Cell;
  index: number;
}

export class NotebookStore {
  /** traces are kept deflated in the rows (stored-trace.ts) */
  private readonly traces = new TraceCodec();

  constructor(private readonly db: NotebookDb) {}

  /** Newest updated first; `query` keeps those whose title or cell text contains it (any case). */
  liveList(query = ''): Observable<NotebookSummary[]> {
    const needle = query.trim().toLowerCase();
    return live(async () => {
      const rows = await this.db.summaries.orderBy('updated').reverse().toArray();
      return rows.filter((row) => row.searchText.includes(needle)).map(toSummary);
    });
  }

  liveNotebook(id: string): Observable<Notebook | undefined> {
    return live(() => this.get(id));
  }

  async get(id: string): Promise<Notebook | undefined> {
    const row = await this.db.notebooks.get(id);
    return row && this.traces.unpack(row);
  }

  /**
   * A new notebook holding `cells` (by default one empty markdown cell), in one transaction: other tabs
   * never see it half-made, and a refused cell leaves nothing behind. Without a title it is
   * "Untitled notebook" (2, 3, … if taken).
   */
  create(title?: string, cells: NewCell[] = [{ kind: 'markdown', text: '' }]): Promise<Notebook> {
    return this.write(async () => {
      const now = Date.now();
      const chosen = title === undefined ? await this.untitled() : validTitle(title);
      const id = newId();
      if (cells.length > MAX_CELLS) throw new StoreError(`A notebook can hold at most ${MAX_CELLS} cells; this one would have ${cells.length}.`);
      const checkedCells = cells.map((cell) => checked(() => checkCell({ ...cell, id: newId() }, 'cell', id), 'cell'));
      const notebook: Notebook = { id, title: chosen, created: now, updated: now, cells: checkedCells };
      await this.save(notebook);
      return notebook;
    });
  }

  rename(id: string, title: string): Promise<void> {
    return this.change(id, (notebook) => {
      notebook.title = validTitle(title);
    });
  }

  /** Inserts a cell at `at` (clamped; default: the end) and returns its new id. */
  addCell(id: string, cell: NewCell, at?: number): Promise<string> {
    return this.change(id, (notebook) => {
      if (notebook.cells.length >= MAX_CELLS) throw new StoreError(`This notebook already holds ${MAX_CELLS} cells: start another notebook.`);
      const added = checked(() => checkCell({ ...cell, id: newId() }, 'cell', notebook.id), 'cell');
      notebook.cells.splice(clamp(at ?? notebook.cells.length, notebook.cells.length), 0, added);
      return added.id;
    });
  }

  /** Changes a cell's fields (its id and kind stay); autosave calls this on every pause in typing. */
  updateCell(id: string, cellId: string, patch: Partial<Cell>): Promise<void> {
    return this.change(id, (notebook) => {
      const index = cellIndex(notebook, cellId);
      const cell = notebook.cells[index];
      if (patch.kind !== undefined && patch.kind !== cell.kind) throw new StoreError(`A ${cell.kind} cell cannot become a ${patch.kind} cell.`);
      notebook.cells[index] = checked(() => checkCell({ ...cell, ...patch, id: cell.id }, 'cell', notebook.id), 'cell');
    });
  }

  moveCell(id: string, cellId: string, to: number): Promise<void> {
    return this.change(id, (notebook) => {
      const [cell] = notebook.cells.splice(cellIndex(notebook, cellId), 1);
      notebook.cells.splice(clamp(to, notebook.cells.length), 0, cell);
    });
  }

  /** Removes a cell and hands back what restoreCell needs to undo it. */
  removeCell(id: string, cellId: string): Promise<RemovedCell> {
    return this.change(id, (notebook) => {
      const index = cellIndex(notebook, cellId);
      const [cell] = notebook.cells.splice(index, 1);
      return { cell, index };
    });
  }

  restoreCell(id: string, removed: RemovedCell): Promise<void> {
    return this.change(id, (notebook) => {
      if (notebook.cells.some((cell) => cell.id === removed.cell.id)) return;
      const cell = checked(() => checkCell(removed.cell, 'cell', notebook.id), 'cell');
      notebook.cells.splice(clamp(removed.index, notebook.cells.length), 0, cell);
    });
  }

  /** Deletes a notebook and hands it back for restore (undo). */
  remove(id: string): Promise<Notebook> {
    return this.write(async () => {
      const notebook = await this.load(id);
      await this.db.notebooks.delete(id);
      await this.db.summaries.delete(id);
      return notebook;
    });
  }

  restore(notebook: Notebook): Promise<void> {
    return this.write(() => this.save(checked(() => checkNotebook(notebook, 'notebook'), 'notebook')));
  }

  /**
   * Adds notebooks from a bundle in one transaction: all of them or none. An id already here with the
   * same title and cells is skipped; with different content it comes in as a copy (new id, " (imported)").
   */
  importNotebooks(notebooks: Notebook[]): Promise<{ added: string[]; skipped: string[] }> {
    return this.write(async () => {
      const added: string[] = [];
      const skipped: string[] = [];
      for (const [i, raw] of notebooks.entries()) {
        const notebook = checked(() => checkNotebook(raw, `notebooks[${i}]`), 'notebook');
        const existing = await this.get(notebook.id);
        if (existing && sameContent(existing, notebook)) {
          skipped.push(notebook.id);
          continue;
        }
        const base = notebook.title.slice(0, TITLE_MAX_CHARS - IMPORTED_SUFFIX.length).trimEnd();
        const copy = existing ? { ...notebook, id: newId(), title: `${base}${IMPORTED_SUFFIX}` } : notebook;
        await this.save(copy);
        added.push(copy.id);
      }
      return { added, skipped };
    });
  }

  /** Reads, edits and saves one notebook in one transaction; `edit` changes it in place. */
  private change<T>(id: string, edit: (notebook: Notebook) => T): Promise<T> {
    return this.write(async () => {
      const notebook = await this.load(id);
      const result = edit(notebook);
      notebook.updated = Math.max(Date.now(), notebook.updated + 1);
      await this.save(notebook);
      return result;
    });
  }

  private async load(id: string): Promise<Notebook> {
    const notebook = await this.get(id);
    if (!notebook) throw new StoreError('This notebook no longer exists (it may have been deleted in another tab).');
    return notebook;
  }

  private async save(notebook: Notebook): Promise<void> {
    await this.db.notebooks.put(this.traces.pack(notebook));
    await this.db.summaries.put(summaryRow(notebook));
  }

  private async untitled(): Promise<string> {
    const titles = new Set(await this.db.summaries.orderBy('title').keys());
    let n = 1;
    while (titles.has(n === 1 ? DEFAULT_TITLE : `${DEFAULT_TITLE} ${n}`)) n++;
    return n === 1 ? DEFAULT_TITLE : `${DEFAULT_TITLE} ${n}`;
  }

  /** Runs `body` in one read-write transaction over the notebooks and their summaries; any failure becomes a StoreError. */
  private async write<T>(body: () => Promise<T>): Promise<T> {
    try {
      return await this.db.transaction('rw', [this.db.notebooks, this.db.summaries], body);
    } catch (error) {
      throw storeError(error);
    }
  }
}

/**
 * The sentence for an error of the database itself, whatever was being read or written: one a newer
 * kvscope wrote, or the browser's storage full. Null for any other error.
 */
export function databaseProblem(error: unknown): string | null {
  const newer = innerError(error, (e) => e instanceof NewerDatabaseError || e.name === 'VersionError');
  if (newer) {
    const version = newer instanceof NewerDatabaseError ? newer.version : nativeVersion(newer);
    const which = version === null ? 'a newer database version' : `database version ${version}`;
    return `These notebooks were saved by a newer kvscope (${which}); this app reads version ${NOTEBOOK_SCHEMA_VERSION}. Reload to update the app.`;
  }
  if (innerError(error, (e) => e.name === 'QuotaExceededError')) return QUOTA_MESSAGE;
  return null;
}

/**
 * A Dexie live query whose open failure for a newer database reaches the subscriber: Dexie reports it
 * as DatabaseClosedError, which a live query swallows (it waits for a reopen that never comes).
 */
function live<T>(query: () => Promise<T>): Observable<T> {
  return liveQuery(async () => {
    try {
      return await query();
    } catch (error) {
      throw innerError(error, (e) => e instanceof NewerDatabaseError) ?? error;
    }
  });
}

function storeError(error: unknown): StoreError {
  if (error instanceof StoreError) return error;
  const problem = databaseProblem(error);
  if (problem !== null) return new StoreError(problem, undefined, error);
  const detail = error instanceof Error ? error.message : String(error);
  return new StoreError(`The notebook could not be saved: ${detail}`);
}

interface NamedError {
  name: string;
  message?: unknown;
}

/** The error, or one wrapped in it (Dexie's `inner`: a failed open, an abort; `failures`: bulk writes; a StoreError's `cause`), that passes `test`. */
function innerError(error: unknown, test: (error: NamedError) => boolean, depth = 0): NamedError | null {
  if (typeof error !== 'object' || error === null || depth > 4) return null;
  const { name, inner, failures, cause } = error as { name?: unknown; inner?: unknown; failures?: unknown; cause?: unknown };
  if (typeof name === 'string' && test(error as NamedError)) return error as NamedError;
  for (const wrapped of [...(Array.isArray(failures) ? failures : []), inner, cause]) {
    const found = innerError(wrapped, test, depth + 1);
    if (found) return found;
  }
  return null;
}

/** A browser's own VersionError names the stored native version (Dexie's 10·n) in Chromium and fake-indexeddb. */
function nativeVersion(error: NamedError): number | null {
  const match = /existing version \((\d+)\)/.exec(String(error.message ?? ''));
  return match ? Math.floor(Number(match[1]) / 10) : null;
}

/** Runs a validate.ts check; its FieldError becomes a StoreError naming the field. */
function checked<T>(check: () => T, what: 'cell' | 'notebook'): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof FieldError) throw new StoreError(`This ${what} cannot be saved: ${error.message}.`, error.path);
    throw error;
  }
}

function cellIndex(notebook: Notebook, cellId: string): number {
  const index = notebook.cells.findIndex((cell) => cell.id === cellId);
  if (index < 0) throw new StoreError('This cell no longer exists (it may have been removed in another tab).');
  return index;
}

function sameContent(a: Notebook, b: Notebook): boolean {
  return a.title === b.title && sameJson(a.cells, b.cells);
}

/** Deep equality of JSON-like values, whatever order their keys were written in. */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  return ka.length === kb.length && ka.every((key) => Object.hasOwn(rb, key) && sameJson(ra[key], rb[key]));
}

/** Titles are trimmed; 1 to 200 characters. */
function validTitle(title: string): string {
  const trimmed = title.trim();
  if (trimmed === '') throw new StoreError('A notebook needs a title: type at least one character.');
  if (trimmed.length > TITLE_MAX_CHARS) throw new StoreError(`A title can be at most ${TITLE_MAX_CHARS} characters; this one has ${trimmed.length}.`);
  return trimmed;
}

const clamp = (index: number, length: number): number => Math.min(Math.max(0, Math.trunc(index) || 0), length);
const newId = (): string => crypto.randomUUID();
const toSummary = ({ id, title, updated, cells, kinds }: SummaryRow): NotebookSummary => ({ id, title, updated, cells, kinds });
