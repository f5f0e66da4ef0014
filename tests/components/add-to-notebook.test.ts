/** "Add to notebook" on a figure: the popover, the cell the page's source builds, and what lands in the store. */
import { flushSync } from 'svelte';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Dexie } from 'dexie';
import { render, unmountAll } from './render.ts';
import AddToNotebookHarness from './AddToNotebookHarness.svelte';
import Figure from '../../src/lib/components/Figure.svelte';
import { SCHEMA_V2, type NotebookDb } from '../../src/lib/notebooks/db.ts';
import { QUOTA_MESSAGE, type NotebookStore } from '../../src/lib/notebooks/store.ts';
import { TRACE_MAX_CHARS } from '../../src/lib/notebooks/validate.ts';
import type { CellSource } from '../../src/lib/notebooks/cell-source.ts';
import type { FigureSnapshot } from '../../src/lib/notebooks/types.ts';
import { allNotebooks, IDBKeyRange, indexedDB, testDbName, testNotebookDb, testNotebookStore } from './fake-notebook-db.ts';

// the app's base path is SvelteKit's; in a component test links are the plain paths
vi.mock('$app/paths', () => ({ resolve: (path: string) => path }));

let db: NotebookDb;
let store: NotebookStore;

beforeEach(() => {
  db = testNotebookDb(testDbName('add-to-notebook'));
  store = testNotebookStore(db);
  // happy-dom lays nothing out: give every element a box so composeSvg keeps the figure's SVG
  vi.spyOn(Element.prototype, 'getBoundingClientRect').mockReturnValue({ x: 0, y: 0, left: 0, top: 0, width: 120, height: 40, right: 120, bottom: 40, toJSON: () => ({}) } as DOMRect);
});

afterEach(() => {
  unmountAll();
  vi.restoreAllMocks();
});

/** A source building an experiment cell around the snapshot, remembering the snapshots it got. */
function experimentSource(trace: string | null = '{"version":1}', link = '/?x=abc'): { source: CellSource; seen: FigureSnapshot[] } {
  const seen: FigureSnapshot[] = [];
  const source: CellSource = async (figure) => {
    seen.push(figure);
    return { kind: 'experiment', link, trace, summary: 'tiny-model · h2o · 3 steps', text: 'Hello world', figure };
  };
  return { source, seen };
}

function query<T extends HTMLElement = HTMLElement>(root: ParentNode, testid: string): T | null {
  return root.querySelector<T>(`[data-testid="${testid}"]`);
}

async function until<T>(find: () => T | null | undefined | false): Promise<T> {
  return vi.waitFor(
    () => {
      flushSync();
      const found = find();
      if (!found) throw new Error('not yet');
      return found;
    },
    { timeout: 5_000, interval: 10 },
  );
}

/** The next millisecond: notebooks created one after another get distinct times (the list's order). */
const later = () => new Promise((done) => setTimeout(done, 2));

/** Opens the popover and waits for its notebook list. */
async function openPopover(el: HTMLElement): Promise<HTMLElement> {
  query<HTMLButtonElement>(el, 'add-to-notebook-cache-map')!.click();
  const dialog = await until(() => query(el, 'add-to-notebook-dialog-cache-map'));
  await until(() => !dialog.textContent?.includes('Loading notebooks'));
  return dialog;
}

describe('Add to notebook', () => {
  it('is not offered on a page without a cell source', () => {
    const el = render(Figure, { title: 'Cache map', name: 'cache-map', children: () => {} });
    expect(query(el, 'export-svg-cache-map')).not.toBeNull();
    expect(el.querySelector('[data-testid^="add-to-notebook"]')).toBeNull();
  });

  it('"New notebook…" makes a notebook titled after the figure holding exactly the built cell', async () => {
    const { source, seen } = experimentSource();
    const el = render(AddToNotebookHarness, { source, store });
    const button = query<HTMLButtonElement>(el, 'add-to-notebook-cache-map')!;
    expect(button.textContent).toBe('+ Notebook');
    expect(button.className).toContain('small');
    expect(button.title).toBe('Add this figure to a notebook');

    const dialog = await openPopover(el);
    expect(dialog.getAttribute('role')).toBe('dialog');
    expect(dialog.contains(document.activeElement)).toBe(true);
    expect(dialog.querySelectorAll('[data-testid="add-to-notebook-choice"]')).toHaveLength(0);
    query<HTMLButtonElement>(dialog, 'add-to-notebook-new')!.click();

    const note = await until(() => query(el, 'add-to-notebook-added'));
    const [summary] = await allNotebooks(db);
    expect(summary.title).toBe('Cache map — notes');
    expect(note.textContent).toContain('Added to Cache map — notes');
    expect(query<HTMLAnchorElement>(note, 'add-to-notebook-open')!.getAttribute('href')).toBe(`/notebooks?id=${encodeURIComponent(summary.id)}`);
    expect(query(el, 'add-to-notebook-dialog-cache-map')).toBeNull();
    await until(() => document.activeElement === button);

    const notebook = (await store.get(summary.id))!;
    expect(notebook.cells).toHaveLength(1);
    const { id, ...cell } = notebook.cells[0];
    expect(id).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(seen).toHaveLength(1);
    expect(cell).toEqual({ kind: 'experiment', link: '/?x=abc', trace: '{"version":1}', summary: 'tiny-model · h2o · 3 steps', text: 'Hello world', figure: seen[0] });
    expect(seen[0]).toMatchObject({ name: 'cache-map', title: 'Cache map', caption: 'tiny-model · step 3' });
    expect(seen[0].svg).toContain('class="kept-entry"');
    expect(seen[0].svg).toContain('Cache map');
  });

  it('a text view (no export of its own) is added with an svg-less snapshot', async () => {
    const { source, seen } = experimentSource();
    const el = render(AddToNotebookHarness, { source, store, textView: true });
    expect(query(el, 'export-svg-cache-map')).toBeNull();

    query<HTMLButtonElement>(await openPopover(el), 'add-to-notebook-new')!.click();
    await until(() => query(el, 'add-to-notebook-added'));
    expect(seen).toEqual([{ name: 'cache-map', title: 'Cache map', caption: 'tiny-model · step 3', svg: '' }]);
    const [notebook] = await allNotebooks(db);
    expect(notebook.cells[0]).toMatchObject({ kind: 'experiment', figure: { svg: '' } });
  });

  it('choosing an existing notebook appends the cell to it', async () => {
    const existing = await store.create('Reading notes');
    await store.updateCell(existing.id, existing.cells[0].id, { text: 'What H2O keeps' });
    const { source } = experimentSource();
    const el = render(AddToNotebookHarness, { source, store });

    const dialog = await openPopover(el);
    const choice = await until(() => query<HTMLButtonElement>(dialog, 'add-to-notebook-choice'));
    expect(choice.textContent).toContain('Reading notes');
    expect(choice.dataset.notebookId).toBe(existing.id);
    choice.click();

    const note = await until(() => query(el, 'add-to-notebook-added'));
    expect(note.textContent).toContain('Added to Reading notes');
    const notebook = (await store.get(existing.id))!;
    expect(notebook.cells.map((c) => c.kind)).toEqual(['markdown', 'experiment']);
    expect(notebook.cells[0]).toMatchObject({ text: 'What H2O keeps' });
    expect(notebook.cells[1]).toMatchObject({ kind: 'experiment', link: '/?x=abc', figure: { name: 'cache-map' } });
    expect(await allNotebooks(db)).toHaveLength(1);
  });

  it('a source that throws shows the error until dismissed and writes nothing', async () => {
    const existing = await store.create('Reading notes');
    const source: CellSource = async () => {
      throw new Error('there is no run to add yet');
    };
    const el = render(AddToNotebookHarness, { source, store });

    const dialog = await openPopover(el);
    query<HTMLButtonElement>(dialog, 'add-to-notebook-new')!.click();
    const error = await until(() => query(dialog, 'add-to-notebook-error'));
    expect(error.getAttribute('role')).toBe('alert');
    expect(error.textContent).toContain('Could not add the figure: there is no run to add yet');

    query<HTMLButtonElement>(dialog, 'add-to-notebook-choice')!.click();
    await until(() => query<HTMLButtonElement>(el, 'add-to-notebook-cache-map')?.disabled === false && query(dialog, 'add-to-notebook-error'));
    expect(await allNotebooks(db)).toEqual([existing]);
    expect(query(el, 'add-to-notebook-added')).toBeNull();

    // the error stays (a press outside does not close it) until Dismiss
    document.body.dispatchEvent(new PointerEvent('pointerdown', { bubbles: true }));
    flushSync();
    const shown = query(el, 'add-to-notebook-error')!;
    expect(shown.textContent).toContain('Could not add the figure');
    [...shown.querySelectorAll('button')].find((b) => b.textContent === 'Dismiss')!.click();
    flushSync();
    expect(query(el, 'add-to-notebook-error')).toBeNull();
    expect(query(el, 'add-to-notebook-dialog-cache-map')).not.toBeNull();
    await until(() => dialog.contains(document.activeElement) && document.activeElement !== dialog);
  });

  it('keeps an experiment without its trace when the store refuses the trace, and says so', async () => {
    const { source } = experimentSource('x'.repeat(TRACE_MAX_CHARS + 1));
    const el = render(AddToNotebookHarness, { source, store });

    query<HTMLButtonElement>((await openPopover(el)), 'add-to-notebook-new')!.click();
    const note = await until(() => query(el, 'add-to-notebook-added'));
    expect(note.textContent).toContain('The trace was too large to keep; the link still replays the run.');
    const [notebook] = await allNotebooks(db);
    expect(notebook.cells).toHaveLength(1);
    expect(notebook.cells[0]).toMatchObject({ kind: 'experiment', trace: null, link: '/?x=abc' });
  });

  it('a new notebook and its cell are written in one transaction, with no empty notes cell in between', async () => {
    const transactions = vi.spyOn(db, 'transaction');
    const removeCell = vi.spyOn(store, 'removeCell');
    const remove = vi.spyOn(store, 'remove');
    const { source } = experimentSource();
    const el = render(AddToNotebookHarness, { source, store });

    query<HTMLButtonElement>(await openPopover(el), 'add-to-notebook-new')!.click();
    await until(() => query(el, 'add-to-notebook-added'));
    expect(transactions).toHaveBeenCalledTimes(1);
    expect(removeCell).not.toHaveBeenCalled();
    expect(remove).not.toHaveBeenCalled();
    const [notebook] = await allNotebooks(db);
    expect(notebook.cells.map((c) => c.kind)).toEqual(['experiment']);
  });

  it('a full disk shows the quota sentence, not "the trace was too large", and saves nothing', async () => {
    const existing = await store.create('Reading notes');
    // the disk is full for this write only: a retry without the trace would have gone through
    const quota = new DOMException('The quota has been exceeded.', 'QuotaExceededError');
    vi.spyOn(db.notebooks, 'put').mockRejectedValueOnce(new Dexie.AbortError('Transaction aborted', quota));
    const { source } = experimentSource();
    const el = render(AddToNotebookHarness, { source, store });

    const dialog = await openPopover(el);
    (await until(() => query<HTMLButtonElement>(dialog, 'add-to-notebook-choice'))).click();
    const error = await until(() => query(dialog, 'add-to-notebook-error'));
    expect(error.querySelector('span')!.textContent).toBe(QUOTA_MESSAGE);
    expect(query(el, 'add-to-notebook-added')).toBeNull();
    expect(await allNotebooks(db)).toEqual([existing]);
  });

  it('an experiment past the link cap keeps its trace, and is refused when the trace is too large too', async () => {
    const { source } = experimentSource('{"version":1}', '');
    const el = render(AddToNotebookHarness, { source, store });
    query<HTMLButtonElement>(await openPopover(el), 'add-to-notebook-new')!.click();
    await until(() => query(el, 'add-to-notebook-added'));
    const [kept] = await allNotebooks(db);
    expect(kept.cells[0]).toMatchObject({ kind: 'experiment', link: '', trace: '{"version":1}' });
    unmountAll();

    const neither = experimentSource('x'.repeat(TRACE_MAX_CHARS + 1), '');
    const again = render(AddToNotebookHarness, { source: neither.source, store });
    const dialog = await openPopover(again);
    query<HTMLButtonElement>(dialog, 'add-to-notebook-new')!.click();
    const error = await until(() => query(dialog, 'add-to-notebook-error'));
    expect(error.querySelector('span')!.textContent).toBe(
      'This experiment cannot be added: its trace is too large for a notebook and its prompt too long for a link, so the cell could neither replay nor show the run. Nothing was added.',
    );
    expect(await allNotebooks(db)).toEqual([kept]);
  });

  it('a database a newer kvscope wrote is named as such, not as a raw error', async () => {
    const name = testDbName('add-to-notebook-newer');
    const v3 = new Dexie(name, { indexedDB, IDBKeyRange });
    v3.version(3).stores({ ...SCHEMA_V2, tags: 'id' });
    await v3.open();
    v3.close();
    const { source } = experimentSource();
    const el = render(AddToNotebookHarness, { source, store: testNotebookStore(testNotebookDb(name)) });

    query<HTMLButtonElement>(el, 'add-to-notebook-cache-map')!.click();
    const error = await until(() => query(el, 'add-to-notebook-error'));
    expect(error.querySelector('span')!.textContent).toBe(
      'These notebooks were saved by a newer kvscope (database version 3); this app reads version 2. Reload to update the app.',
    );
  });

  it('a store error is shown as the store words it, and no notebook is left behind', async () => {
    const source: CellSource = async (figure) => ({ kind: 'comparison', link: 'https://elsewhere.example/', summary: 's', table: { columns: [], rows: [] }, figure });
    // the sentence the store itself gives for this cell
    const scratch = await store.create('scratch');
    const refusal = await store.addCell(scratch.id, await source({ name: 'x', title: 'x', caption: '', svg: '' })).then(
      () => 'accepted',
      (error: Error) => error.message,
    );
    await store.remove(scratch.id);
    expect(refusal).toMatch(/link/);
    const el = render(AddToNotebookHarness, { source, store });

    const dialog = await openPopover(el);
    query<HTMLButtonElement>(dialog, 'add-to-notebook-new')!.click();
    const error = await until(() => query(dialog, 'add-to-notebook-error'));
    expect(error.querySelector('span')!.textContent).toBe(refusal);
    expect(await allNotebooks(db)).toEqual([]);
  });

  it('is keyboard-friendly: arrows move through the choices, Escape closes and gives focus back', async () => {
    await store.create('First');
    await later();
    await store.create('Second');
    const { source } = experimentSource();
    const el = render(AddToNotebookHarness, { source, store });
    const button = query<HTMLButtonElement>(el, 'add-to-notebook-cache-map')!;

    const dialog = await openPopover(el);
    expect(button.getAttribute('aria-expanded')).toBe('true');
    const choices = await until(() => {
      const found = [...dialog.querySelectorAll<HTMLButtonElement>('[data-testid="add-to-notebook-choice"]')];
      return found.length === 2 && found;
    });
    expect(choices.map((c) => c.querySelector('.title')!.textContent)).toEqual(['Second', 'First']); // newest first
    await until(() => document.activeElement === choices[0]);
    const key = (k: string) => (document.activeElement as HTMLElement).dispatchEvent(new KeyboardEvent('keydown', { key: k, bubbles: true }));
    key('ArrowDown');
    expect(document.activeElement).toBe(choices[1]);
    key('ArrowDown');
    expect(document.activeElement).toBe(query(dialog, 'add-to-notebook-new'));
    key('ArrowDown');
    expect(document.activeElement).toBe(choices[0]);
    key('ArrowUp');
    expect(document.activeElement).toBe(query(dialog, 'add-to-notebook-new'));

    key('Escape');
    flushSync();
    expect(query(el, 'add-to-notebook-dialog-cache-map')).toBeNull();
    expect(button.getAttribute('aria-expanded')).toBe('false');
    await until(() => document.activeElement === button);

    // a press outside closes it too (with no error shown)
    await openPopover(el);
    document.body.dispatchEvent(new PointerEvent('pointerdown', { bubbles: true }));
    flushSync();
    expect(query(el, 'add-to-notebook-dialog-cache-map')).toBeNull();
  });

  it('lists the newest 8 notebooks and a title filter when there are more', async () => {
    for (let i = 1; i <= 10; i++) {
      await store.create(`Notebook ${i}`);
      await later();
    }
    const { source } = experimentSource();
    const el = render(AddToNotebookHarness, { source, store });

    const dialog = await openPopover(el);
    const titles = () => [...dialog.querySelectorAll('[data-testid="add-to-notebook-choice"] .title')].map((t) => t.textContent);
    await until(() => titles().length > 0);
    expect(titles()).toEqual(['Notebook 10', 'Notebook 9', 'Notebook 8', 'Notebook 7', 'Notebook 6', 'Notebook 5', 'Notebook 4', 'Notebook 3']);
    expect(dialog.textContent).toContain('2 more: type to filter');

    const filter = query<HTMLInputElement>(dialog, 'add-to-notebook-filter')!;
    filter.value = 'notebook 1';
    filter.dispatchEvent(new Event('input', { bubbles: true }));
    flushSync();
    expect(titles()).toEqual(['Notebook 10', 'Notebook 1']);
    filter.value = 'nothing like it';
    filter.dispatchEvent(new Event('input', { bubbles: true }));
    flushSync();
    expect(titles()).toEqual([]);
    expect(dialog.textContent).toContain('No notebook title contains “nothing like it”.');
  });
});
