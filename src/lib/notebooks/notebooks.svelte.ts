/**
 * The /notebooks page's state (Svelte 5 runes): the notebook list (searched by title and cell
 * text), the open notebook, autosave of markdown edits, undo of deletes, and the errors on screen.
 *
 * Everything the page shows comes from the store's live queries (Dexie liveQuery), so two tabs on
 * the same notebooks stay consistent; this class only writes through the store and keeps what is
 * not in the db yet: markdown text typed in the last ~400 ms, deletes that may still be undone.
 * All writes go through one queue, so a text save, a move and a delete land in the order the
 * user made them.
 *
 * The store is passed in (tests build one on fake-indexeddb); the page and "Add to notebook" on
 * every figure share `notebookStore()`, opened on first use.
 */
import type { Observable } from 'dexie';
import { databaseProblem, NotebookStore, type NotebookSummary } from './store.ts';
import { decodeBundle, encodeBundle, bundleFileName } from './bundle.ts';
import { notebookHtml, notebookHtmlFileName } from './html-export.ts';
import type { Cell, Notebook } from './types.ts';

/** How long typing may pause before the text is written (per cell). */
export const AUTOSAVE_MS = 400;
/** How long the "deleted — Undo" toast stays. */
export const UNDO_TOAST_MS = 10_000;
/** Deletes Ctrl/Cmd+Z can still undo, newest last. */
const UNDO_DEPTH = 20;

export type SaveStatus = { state: 'idle' } | { state: 'saving' } | { state: 'saved' } | { state: 'failed'; reason: string };

/** An error kept on screen until the user dismisses it. */
export interface NotebookProblem {
  id: number;
  message: string;
}

export type DeletedThing =
  | { what: 'cell'; notebookId: string; removed: { cell: Cell; index: number } }
  | { what: 'notebook'; notebook: Notebook };

export interface UndoToast {
  message: string;
  deleted: DeletedThing;
}

interface PendingText {
  notebookId: string;
  text: string;
  /** the autosave timer; none for a text kept after a failed write */
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class NotebooksState {
  /** the search box: filters the list by title and cell text */
  query = $state('');
  summaries = $state.raw<NotebookSummary[]>([]);
  /** false until the list's first answer (the page shows no "empty" message before it) */
  listLoaded = $state(false);
  openId = $state<string | null>(null);
  /** the open notebook as the db has it; undefined while loading or when it does not exist */
  notebook = $state.raw<Notebook | undefined>(undefined);
  /** true once the open notebook's query answered (so "not found" can be told from "loading") */
  notebookLoaded = $state(false);
  saveStatus = $state.raw<SaveStatus>({ state: 'idle' });
  problems = $state.raw<NotebookProblem[]>([]);
  /** a line about what just happened (an import), not an error */
  notice = $state<string | null>(null);
  toast = $state.raw<UndoToast | null>(null);
  /** the markdown cell whose editor takes focus once shown (a cell just added); the cell clears it */
  focusCellId = $state<string | null>(null);

  private listSubscription: { unsubscribe(): void } | null = null;
  private notebookSubscription: { unsubscribe(): void } | null = null;
  private pending = new Map<string, PendingText>();
  private writes: Promise<unknown> = Promise.resolve();
  /** markdown text writes queued and not finished (the save status says "Saved" at 0) */
  private textWrites = 0;
  private undoStack: DeletedThing[] = [];
  private toastTimer: ReturnType<typeof setTimeout> | undefined;
  private nextProblemId = 1;
  /** `updated` of the notebook a change was shown on before the db had it: older answers are stale */
  private optimisticBase: number | null = null;

  constructor(readonly store: NotebookStore) {}

  /** Starts the live list (call once the page is mounted). */
  start(): void {
    this.subscribeList();
  }

  dispose(): void {
    void this.flush();
    this.listSubscription?.unsubscribe();
    this.notebookSubscription?.unsubscribe();
    this.listSubscription = this.notebookSubscription = null;
    clearTimeout(this.toastTimer);
  }

  setQuery(query: string): void {
    this.query = query;
    this.subscribeList();
  }

  /** Shows the notebook `id` (null: none); edits to the one shown before are written first. */
  open(id: string | null): void {
    if (id === this.openId) return;
    void this.flush();
    this.notebookSubscription?.unsubscribe();
    this.notebookSubscription = null;
    this.openId = id;
    this.notebook = undefined;
    this.notebookLoaded = false;
    this.optimisticBase = null;
    if (id === null) return;
    this.notebookSubscription = this.watch(this.store.liveNotebook(id), 'The notebook could not be read', (notebook) => {
      if (this.openId !== id) return;
      // an answer to a query started before the page's own move / delete would undo it on screen
      if (notebook && this.optimisticBase !== null && notebook.updated <= this.optimisticBase) return;
      this.optimisticBase = null;
      this.notebook = notebook;
      this.notebookLoaded = true;
    });
  }

  // ---- notebooks ------------------------------------------------------------------------------

  /** Creates a notebook with one empty markdown cell (its editor focused once shown); returns its id. */
  async createNotebook(): Promise<string | null> {
    return this.attempt('The notebook could not be created', async () => {
      // the store starts every notebook with one empty markdown cell
      const notebook = await this.queue(() => this.store.create());
      this.focusCellId = notebook.cells[0]?.id ?? null;
      return notebook.id;
    });
  }

  /** Saves the open notebook's title; false when it was refused (the error says why). */
  async rename(title: string): Promise<boolean> {
    const id = this.openId;
    if (id === null) return false;
    if (title === this.notebook?.title) return true;
    return (await this.attempt('The title was not saved', () => this.queue(() => this.store.rename(id, title)).then(() => true))) ?? false;
  }

  /** Deletes the open notebook (undoable); true when it was deleted. */
  async deleteNotebook(): Promise<boolean> {
    const id = this.openId;
    if (id === null) return false;
    await this.flush();
    const notebook = await this.attempt('The notebook could not be deleted', () => this.queue(() => this.store.remove(id)));
    if (!notebook) return false;
    this.remember({ what: 'notebook', notebook }, `Deleted “${notebook.title}”.`);
    return true;
  }

  // ---- cells ----------------------------------------------------------------------------------

  /** Adds an empty markdown cell at `at` (the end when absent) and asks for its editor's focus. */
  async addMarkdownCell(at?: number): Promise<string | null> {
    const id = this.openId;
    if (id === null) return null;
    const cellId = await this.attempt('The cell could not be added', () => this.queue(() => this.store.addCell(id, { kind: 'markdown', text: '' }, at)));
    if (cellId) this.focusCellId = cellId;
    return cellId;
  }

  /** A markdown cell's text as typed: written AUTOSAVE_MS after the last keystroke, or on flush(). */
  editText(cellId: string, text: string): void {
    const notebookId = this.openId;
    if (notebookId === null) return;
    const before = this.pending.get(cellId);
    if (before) clearTimeout(before.timer);
    const timer = setTimeout(() => void this.writeText(cellId), AUTOSAVE_MS);
    this.pending.set(cellId, { notebookId, text, timer });
    this.saveStatus = { state: 'saving' };
  }

  /** Writes every edit not written yet (blur, tab hidden, page left, before an export). */
  async flush(): Promise<void> {
    await Promise.all([...this.pending.keys()].map((cellId) => this.writeText(cellId)));
    await this.writes;
  }

  /** Moves a cell by `delta` places; the list is reordered at once and then written. */
  async moveCell(cellId: string, delta: number): Promise<void> {
    const notebook = this.notebook;
    if (!notebook) return;
    const from = notebook.cells.findIndex((c) => c.id === cellId);
    const to = from + delta;
    if (from < 0 || to < 0 || to >= notebook.cells.length) return;
    const cells = [...notebook.cells];
    cells.splice(to, 0, ...cells.splice(from, 1));
    this.showAhead({ ...notebook, cells });
    const moved = await this.attempt('The cell could not be moved', () => this.queue(() => this.store.moveCell(notebook.id, cellId, to)).then(() => true));
    if (!moved) await this.reload(notebook.id);
  }

  /** Deletes a cell (its latest text written first, so Undo brings that back). */
  async deleteCell(cellId: string): Promise<boolean> {
    const notebookId = this.openId;
    if (notebookId === null) return false;
    await this.flush();
    const removed = await this.attempt('The cell could not be deleted', () => this.queue(() => this.store.removeCell(notebookId, cellId)));
    if (!removed) return false;
    // gone from the page at once (the live query follows), so focus can move to its neighbour
    const notebook = this.notebook;
    if (notebook?.id === notebookId) this.showAhead({ ...notebook, cells: notebook.cells.filter((c) => c.id !== cellId) });
    this.remember({ what: 'cell', notebookId, removed }, 'Deleted a cell.');
    return true;
  }

  // ---- undo -----------------------------------------------------------------------------------

  /** Whether Ctrl/Cmd+Z has a delete to undo (the toast may have gone: the last UNDO_DEPTH are kept). */
  get canUndo(): boolean {
    return this.toast !== null || this.undoStack.length > 0;
  }

  /** Brings back the last thing deleted; returns it (the page opens a restored notebook), or null. */
  async undo(): Promise<DeletedThing | null> {
    const deleted = this.undoStack.pop();
    if (!deleted) return null;
    if (this.toast?.deleted === deleted) this.hideToast();
    const restored = await this.attempt(deleted.what === 'cell' ? 'The cell could not be restored' : 'The notebook could not be restored', async () => {
      if (deleted.what === 'cell') await this.queue(() => this.store.restoreCell(deleted.notebookId, deleted.removed));
      else await this.queue(() => this.store.restore(deleted.notebook));
      return deleted;
    });
    return restored;
  }

  hideToast(): void {
    clearTimeout(this.toastTimer);
    this.toast = null;
  }

  // ---- bundles and exports --------------------------------------------------------------------

  /**
   * Reads a bundle (.zip) and adds its notebooks; a bad file changes nothing and the error names
   * the problem (`fileName` words it). Returns the ids added.
   */
  async importBundle(bytes: Uint8Array, fileName?: string): Promise<string[]> {
    this.notice = null;
    const result = await this.attempt('Nothing was imported', async () => {
      const notebooks = decodeBundle(bytes, fileName);
      return this.queue(() => this.store.importNotebooks(notebooks));
    });
    if (!result) return [];
    const { added, skipped } = result;
    const parts = [`Imported ${added.length} notebook${added.length === 1 ? '' : 's'}`];
    if (skipped.length) parts.push(`${skipped.length} already here (skipped)`);
    this.notice = `${parts.join('; ')}.`;
    return added;
  }

  /** The open notebook as a bundle, with every edit written first (null when it cannot be read). */
  async bundleOfOpen(): Promise<{ bytes: Uint8Array; fileName: string } | null> {
    const notebook = await this.savedOpenNotebook('The bundle could not be written');
    if (!notebook) return null;
    return this.attempt('The bundle could not be written', async () => ({ bytes: encodeBundle([notebook]), fileName: bundleFileName([notebook]) }));
  }

  /** The open notebook as a standalone HTML page (links absolute against `origin`). */
  async htmlOfOpen(origin?: string): Promise<{ html: string; fileName: string } | null> {
    const notebook = await this.savedOpenNotebook('The HTML page could not be written');
    if (!notebook) return null;
    return this.attempt('The HTML page could not be written', async () => ({ html: notebookHtml(notebook, { origin }), fileName: notebookHtmlFileName(notebook) }));
  }

  // ---- errors ---------------------------------------------------------------------------------

  /** Shows "<what>: <reason>"; an error of the database itself (a newer app's, a full disk) is its own sentence. */
  report(what: string, error: unknown): void {
    const reason = error instanceof Error ? error.message : String(error);
    const message = databaseProblem(error) ?? `${what}: ${reason}`;
    if (this.problems.some((problem) => problem.message === message)) return; // the list and the open notebook fail alike
    this.problems = [...this.problems, { id: this.nextProblemId++, message }];
  }

  dismissProblem(id: number): void {
    this.problems = this.problems.filter((p) => p.id !== id);
  }

  dismissNotice(): void {
    this.notice = null;
  }

  // ---- internals ------------------------------------------------------------------------------

  private subscribeList(): void {
    this.listSubscription?.unsubscribe();
    const query = this.query.trim();
    this.listSubscription = this.watch(this.store.liveList(query || undefined), 'The notebook list could not be read', (summaries) => {
      if (this.query.trim() !== query) return;
      this.summaries = summaries;
      this.listLoaded = true;
    });
  }

  private watch<T>(observable: Observable<T>, what: string, next: (value: T) => void): { unsubscribe(): void } {
    return observable.subscribe({ next, error: (error) => this.report(what, error) });
  }

  /** Runs one write after every write queued before it. */
  private queue<T>(write: () => Promise<T>): Promise<T> {
    const done = this.writes.then(write);
    this.writes = done.catch(() => undefined);
    return done;
  }

  /** Runs `job`; a failure is reported as "<what>: <reason>" and gives null. */
  private async attempt<T>(what: string, job: () => Promise<T>): Promise<T | null> {
    try {
      return await job();
    } catch (error) {
      this.report(what, error);
      return null;
    }
  }

  private async writeText(cellId: string): Promise<void> {
    const entry = this.pending.get(cellId);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.pending.delete(cellId);
    this.textWrites++;
    try {
      await this.queue(() => this.store.updateCell(entry.notebookId, cellId, { text: entry.text }));
      this.textWrites--;
      if (this.pending.size === 0 && this.textWrites === 0) this.saveStatus = { state: 'saved' };
    } catch (error) {
      this.textWrites--;
      // keep the text for the next try (a later keystroke replaces it, a flush retries it)
      if (!this.pending.has(cellId)) this.pending.set(cellId, { ...entry, timer: undefined });
      this.saveStatus = { state: 'failed', reason: error instanceof Error ? error.message : String(error) };
    }
  }

  private async savedOpenNotebook(what: string): Promise<Notebook | null> {
    const id = this.openId;
    if (id === null) return null;
    await this.flush();
    const notebook = await this.attempt(what, () => this.store.get(id));
    if (notebook === undefined) this.report(what, new Error('the notebook no longer exists'));
    return notebook ?? null;
  }

  /** Shows a change before the live query brings it (so focus can follow at once). */
  private showAhead(notebook: Notebook): void {
    this.optimisticBase = Math.max(this.optimisticBase ?? 0, notebook.updated);
    this.notebook = notebook;
  }

  /** After a refused change shown ahead: what the db has. */
  private async reload(id: string): Promise<void> {
    this.optimisticBase = null;
    const notebook = await this.attempt('The notebook could not be read', () => this.store.get(id));
    if (this.openId === id && notebook !== null) this.notebook = notebook;
  }

  private remember(deleted: DeletedThing, message: string): void {
    this.undoStack.push(deleted);
    if (this.undoStack.length > UNDO_DEPTH) this.undoStack.shift();
    clearTimeout(this.toastTimer);
    this.toast = { message, deleted };
    this.toastTimer = setTimeout(() => (this.toast = null), UNDO_TOAST_MS);
  }
}
