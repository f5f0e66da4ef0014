/**
 * The /notebooks page's state (NotebooksState, runes) over the real NotebookStore on fake-indexeddb
 * (one fresh database per test): a new notebook opens with one empty markdown cell to focus; typing
 * is written after the autosave pause (or at once on flush) and the save status says so, or says
 * why not; cells move, delete and come back with Undo; notebooks delete and come back; the search
 * filters the live list by title and cell text; a bad bundle changes nothing and names the problem,
 * a good one adds its notebook. The markdown cell edits in a textarea and shows sanitized HTML.
 */
import { Dexie } from 'dexie';
import { strToU8, zipSync } from 'fflate';
import { flushSync } from 'svelte';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SCHEMA_V2, type NotebookDb } from '../../src/lib/notebooks/db.ts';
import { NotebookStore } from '../../src/lib/notebooks/store.ts';
import { encodeBundle } from '../../src/lib/notebooks/bundle.ts';
import { AUTOSAVE_MS, NotebooksState } from '../../src/lib/notebooks/notebooks.svelte.ts';
import MarkdownCellView from '../../src/lib/notebooks/components/MarkdownCell.svelte';
import type { MarkdownCell, Notebook } from '../../src/lib/notebooks/types.ts';
import { render, unmountAll } from './render.ts';
import { allNotebooks, IDBKeyRange, indexedDB, testDbName, testNotebookDb } from './fake-notebook-db.ts';

const states: NotebooksState[] = [];
const dbs = new WeakMap<NotebooksState, NotebookDb>();

function fresh(db: NotebookDb = testNotebookDb(testDbName('notebooks-page'))): NotebooksState {
  const state = new NotebooksState(new NotebookStore(db));
  dbs.set(state, db);
  states.push(state);
  state.start();
  return state;
}

afterEach(() => {
  for (const state of states.splice(0)) state.dispose();
  unmountAll();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits for a live query to deliver what `ready` looks for (they answer asynchronously). */
async function until(ready: () => boolean, what: string, timeoutMs = 3_000): Promise<void> {
  const started = Date.now();
  while (!ready()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

async function openNew(state: NotebooksState): Promise<Notebook> {
  const id = await state.createNotebook();
  expect(id).not.toBeNull();
  state.open(id);
  await until(() => state.notebook?.id === id, 'the new notebook');
  return state.notebook!;
}

async function notebookWithCells(state: NotebooksState, texts: string[]): Promise<{ id: string; cells: string[] }> {
  const notebook = await openNew(state);
  const first = notebook.cells[0].id;
  await state.store.updateCell(notebook.id, first, { text: texts[0] });
  const cells = [first];
  for (const text of texts.slice(1)) cells.push(await state.store.addCell(notebook.id, { kind: 'markdown', text }));
  await until(() => state.notebook?.cells.length === texts.length, 'the cells');
  return { id: notebook.id, cells };
}

const textsOf = (notebook: Notebook | undefined) => (notebook?.cells ?? []).map((c) => (c as MarkdownCell).text);

describe('NotebooksState', () => {
  it('creates a notebook that opens with one empty markdown cell to focus, and lists it', async () => {
    const state = fresh();
    await until(() => state.listLoaded, 'the empty list');
    expect(state.summaries).toEqual([]);
    const notebook = await openNew(state);
    expect(notebook.cells).toHaveLength(1);
    expect(notebook.cells[0]).toMatchObject({ kind: 'markdown', text: '' });
    expect(state.focusCellId).toBe(notebook.cells[0].id);
    await until(() => state.summaries.length === 1, 'the list entry');
    expect(state.summaries[0]).toMatchObject({ id: notebook.id, title: 'Untitled notebook', cells: 1 });

    expect(await state.rename('  Findings  ')).toBe(true);
    await until(() => state.notebook?.title === 'Findings' && state.summaries[0]?.title === 'Findings', 'the new title');
    // an empty title is refused with a reason, and nothing changes
    expect(await state.rename('   ')).toBe(false);
    expect(state.problems.map((p) => p.message)).toEqual(['The title was not saved: A notebook needs a title: type at least one character.']);
    expect((await state.store.get(notebook.id))?.title).toBe('Findings');
    state.dismissProblem(state.problems[0].id);
    expect(state.problems).toEqual([]);
  });

  it('autosaves markdown after the typing pause, and at once on flush', async () => {
    const state = fresh();
    const notebook = await openNew(state);
    const cellId = notebook.cells[0].id;
    state.editText(cellId, '# Find');
    state.editText(cellId, '# Findings');
    expect(state.saveStatus).toEqual({ state: 'saving' });
    await sleep(AUTOSAVE_MS / 2);
    expect(textsOf(await state.store.get(notebook.id))).toEqual(['']);
    await until(() => state.saveStatus.state === 'saved', 'the autosave', AUTOSAVE_MS * 5);
    expect(textsOf(await state.store.get(notebook.id))).toEqual(['# Findings']);
    await until(() => textsOf(state.notebook)[0] === '# Findings', 'the live notebook');

    state.editText(cellId, '# Findings\n\nH2O keeps *heavy hitters*.');
    await state.flush();
    expect(state.saveStatus).toEqual({ state: 'saved' });
    expect(textsOf(await state.store.get(notebook.id))).toEqual(['# Findings\n\nH2O keeps *heavy hitters*.']);
  });

  it('says why a text was not saved and keeps it for the next try', async () => {
    const state = fresh();
    const notebook = await openNew(state);
    await state.store.remove(notebook.id);
    state.editText(notebook.cells[0].id, 'lost?');
    await state.flush();
    expect(state.saveStatus).toEqual({ state: 'failed', reason: 'This notebook no longer exists (it may have been deleted in another tab).' });
    await state.store.restore(notebook);
    await state.flush();
    expect(state.saveStatus).toEqual({ state: 'saved' });
    expect(textsOf(await state.store.get(notebook.id))).toEqual(['lost?']);
  });

  it('adds cells where asked and moves them, in the page at once and in the db', async () => {
    const state = fresh();
    const { id, cells } = await notebookWithCells(state, ['one', 'two', 'three']);
    const moving = state.moveCell(cells[2], -1);
    expect(textsOf(state.notebook)).toEqual(['one', 'three', 'two']);
    await moving;
    expect(textsOf(await state.store.get(id))).toEqual(['one', 'three', 'two']);
    await sleep(50);
    expect(textsOf(state.notebook)).toEqual(['one', 'three', 'two']);
    await state.moveCell(cells[0], 1);
    expect(textsOf(await state.store.get(id))).toEqual(['three', 'one', 'two']);
    // past either end: nothing moves
    await state.moveCell(cells[2], -1);
    await state.moveCell(cells[1], 1);
    await state.moveCell(cells[0], -5);
    expect(textsOf(await state.store.get(id))).toEqual(['three', 'one', 'two']);

    const added = await state.addMarkdownCell(1);
    expect(state.focusCellId).toBe(added);
    expect((await state.store.get(id))?.cells.map((c) => c.id)).toEqual([cells[2], added, cells[0], cells[1]]);
  });

  it('deletes a cell with its latest text and brings it back with Undo', async () => {
    const state = fresh();
    const { id, cells } = await notebookWithCells(state, ['one', 'two', 'three']);
    state.editText(cells[1], 'two, edited');
    expect(await state.deleteCell(cells[1])).toBe(true);
    expect(textsOf(state.notebook)).toEqual(['one', 'three']);
    expect(textsOf(await state.store.get(id))).toEqual(['one', 'three']);
    expect(state.toast?.message).toBe('Deleted a cell.');
    expect(state.canUndo).toBe(true);

    const restored = await state.undo();
    expect(restored?.what).toBe('cell');
    expect(state.toast).toBeNull();
    expect(textsOf(await state.store.get(id))).toEqual(['one', 'two, edited', 'three']);
    await until(() => textsOf(state.notebook).length === 3, 'the restored cell');
    expect(state.canUndo).toBe(false);
    expect(await state.undo()).toBeNull();
  });

  it('deletes a notebook and brings it back with Undo', async () => {
    const state = fresh();
    const { id } = await notebookWithCells(state, ['kept']);
    await until(() => state.summaries.length === 1, 'the list');
    expect(await state.deleteNotebook()).toBe(true);
    expect(state.toast?.message).toBe('Deleted “Untitled notebook”.');
    await until(() => state.summaries.length === 0 && state.notebook === undefined && state.notebookLoaded, 'the notebook gone');
    expect(await state.store.get(id)).toBeUndefined();

    const restored = await state.undo();
    expect(restored).toMatchObject({ what: 'notebook', notebook: { id } });
    await until(() => state.summaries.length === 1 && state.notebook?.id === id, 'the notebook back');
    expect(textsOf(state.notebook)).toEqual(['kept']);
  });

  it('filters the list by title and by cell text', async () => {
    const state = fresh();
    const a = await notebookWithCells(state, ['H2O keeps *heavy hitters*.']);
    await state.rename('Eviction notes');
    const b = await notebookWithCells(state, ['Quantization at 2 bits']);
    await state.rename('KIVI');
    await until(() => state.summaries.length === 2, 'both notebooks');

    state.setQuery('HEAVY');
    await until(() => state.summaries.length === 1, 'the text match');
    expect(state.summaries.map((s) => s.id)).toEqual([a.id]);
    state.setQuery('kivi');
    await until(() => state.summaries[0]?.id === b.id && state.summaries.length === 1, 'the title match');
    state.setQuery('nothing like this');
    await until(() => state.summaries.length === 0, 'no match');
    state.setQuery('');
    await until(() => state.summaries.length === 2, 'everything again');
  });

  it('imports nothing from a bad bundle and says what is wrong; a good bundle adds its notebook', async () => {
    const state = fresh();
    const { id } = await notebookWithCells(state, ['here already']);
    const updated = (await state.store.get(id))?.updated;
    await until(() => state.summaries[0]?.updated === updated, 'the list');
    const before = state.summaries;

    expect(await state.importBundle(strToU8('not a zip at all'), 'junk.zip')).toEqual([]);
    expect(state.problems).toHaveLength(1);
    expect(state.problems[0].message).toBe('Nothing was imported: junk.zip is not a kvscope bundle (not a zip file).');
    expect(await state.importBundle(zipSync({ 'notes.txt': strToU8('hello') }), 'notes.zip')).toEqual([]);
    expect(state.problems[1].message).toBe('Nothing was imported: notes.zip is not a kvscope bundle (it has no bundle.json).');
    expect(state.notice).toBeNull();
    expect(await allNotebooks(dbs.get(state)!)).toHaveLength(1);
    await sleep(50);
    expect(state.summaries).toEqual(before);

    const other: Notebook = { id: 'other-notebook', title: 'From elsewhere', created: 1, updated: 2, cells: [{ kind: 'markdown', id: 'm1', text: 'Hello *there*' }] };
    expect(await state.importBundle(encodeBundle([other]), 'other.zip')).toEqual(['other-notebook']);
    expect(state.notice).toBe('Imported 1 notebook.');
    await until(() => state.summaries.length === 2, 'the imported notebook listed');
    expect(await state.store.get('other-notebook')).toEqual(other);
    // the same bundle again: already here
    expect(await state.importBundle(encodeBundle([other]), 'other.zip')).toEqual([]);
    expect(state.notice).toBe('Imported 0 notebooks; 1 already here (skipped).');
    expect((await state.store.get(id))?.cells).toHaveLength(1);
  });

  it('exports the open notebook with its unsaved text', async () => {
    const state = fresh();
    const { cells } = await notebookWithCells(state, ['first']);
    state.editText(cells[0], '# Findings <script>alert(1)</script>');
    const html = await state.htmlOfOpen('https://example.org');
    expect(html?.fileName).toBe('Untitled-notebook.html');
    expect(html?.html).toContain('Findings');
    expect(html?.html).not.toContain('<script');
    const bundle = await state.bundleOfOpen();
    expect(bundle?.fileName).toMatch(/\.zip$/);
    expect(bundle?.bytes.length).toBeGreaterThan(0);
  });
});

describe('a database a newer kvscope wrote', () => {
  it('shows one polite sentence, not the raw error, for the list and the open notebook', async () => {
    const name = testDbName('notebooks-page-newer');
    const v3 = new Dexie(name, { indexedDB, IDBKeyRange });
    v3.version(3).stores({ ...SCHEMA_V2, tags: 'id' });
    await v3.open();
    v3.close();

    const state = fresh(testNotebookDb(name));
    state.open('some-notebook');
    await until(() => state.problems.length > 0, 'the error');
    await sleep(50);
    expect(state.problems.map((p) => p.message)).toEqual([
      'These notebooks were saved by a newer kvscope (database version 3); this app reads version 2. Reload to update the app.',
    ]);
    expect(await state.createNotebook()).toBeNull();
    expect(state.problems).toHaveLength(1);
  });
});

describe('MarkdownCell', () => {
  const handlers = () => ({ onfocused: vi.fn(), onedit: vi.fn(), onflush: vi.fn() });

  it('starts an empty cell in edit mode with the editor focused; typing reports the text; Escape shows the rendering', async () => {
    const on = handlers();
    const root = render(MarkdownCellView, { cell: { kind: 'markdown', id: 'c1', text: '' }, focusRequested: true, ...on });
    const editor = root.querySelector<HTMLTextAreaElement>('[data-testid="cell-editor"]')!;
    expect(editor).not.toBeNull();
    expect(document.activeElement).toBe(editor);
    expect(on.onfocused).toHaveBeenCalledOnce();

    editor.value = '# Findings\n\nH2O keeps *heavy hitters*.';
    editor.dispatchEvent(new Event('input', { bubbles: true }));
    expect(on.onedit).toHaveBeenLastCalledWith('# Findings\n\nH2O keeps *heavy hitters*.');
    editor.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }));
    flushSync();
    expect(on.onflush).toHaveBeenCalled();
    expect(root.querySelector('[data-testid="cell-editor"]')).toBeNull();
    const rendered = root.querySelector('[data-testid="cell-rendered"]')!;
    // (happy-dom's DOMPurify drops the <h1> element and keeps its text; the e2e test checks the heading in Chromium)
    expect(rendered.textContent).toContain('Findings');
    expect(rendered.querySelector('em')?.textContent).toBe('heavy hitters');
  });

  it('shows a written cell rendered and sanitized; Enter opens the editor with its text', () => {
    const on = handlers();
    const text = 'Hello <script>window.hacked = 1</script><img src="x" onerror="window.hacked = 1">';
    const root = render(MarkdownCellView, { cell: { kind: 'markdown', id: 'c2', text }, focusRequested: false, ...on });
    const rendered = root.querySelector<HTMLElement>('[data-testid="cell-rendered"]')!;
    expect(rendered.textContent).toContain('Hello');
    expect(rendered.querySelector('script')).toBeNull();
    expect(rendered.querySelector('img')?.getAttribute('onerror') ?? null).toBeNull();
    rendered.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
    flushSync();
    expect(root.querySelector<HTMLTextAreaElement>('[data-testid="cell-editor"]')?.value).toBe(text);
    expect(on.onfocused).not.toHaveBeenCalled();
  });
});
