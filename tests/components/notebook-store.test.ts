/**
 * NotebookStore over a real Dexie database (fake-indexeddb, one fresh database per test): the edits
 * the /notebooks page makes, with undo; search and live lists; imports all or nothing; a full disk
 * (QuotaExceededError) or a too-large cell leaving the database exactly as it was; and the upgrade
 * from a version-1 database, declared with the same SCHEMA_V1 that db.ts ships.
 */
import { Dexie } from 'dexie';
import { describe, expect, it, vi } from 'vitest';
import { declareSchemaV1, NOTEBOOK_SCHEMA_VERSION, SCHEMA_V2, type NotebookDb } from '../../src/lib/notebooks/db.ts';
import { databaseProblem, NotebookStore, QUOTA_MESSAGE, StoreError, type NotebookSummary } from '../../src/lib/notebooks/store.ts';
import type { Cell, NewCell, Notebook } from '../../src/lib/notebooks/types.ts';
import { TRACE_MAX_CHARS } from '../../src/lib/notebooks/validate.ts';
import { allNotebooks, IDBKeyRange, indexedDB, testDbName, testNotebookDb } from './fake-notebook-db.ts';

function fresh(): { db: NotebookDb; store: NotebookStore; name: string } {
  const name = testDbName();
  const db = testNotebookDb(name);
  return { db, store: new NotebookStore(db), name };
}

const FIGURE = { name: 'cache-map', title: 'Cache map', caption: 'tiny · h2o', svg: '<svg xmlns="http://www.w3.org/2000/svg"/>' };
const TABLE = { columns: ['lane', 'KL'], rows: [['h2o', 0.01], ['tova', null]] };
const EXPERIMENT: NewCell = { kind: 'experiment', link: '/?x=1', trace: '{"steps":[]}', summary: 'tiny · H2O · 8 steps', text: 'The cat sat on the mat', figure: FIGURE };
const COMPARISON: NewCell = { kind: 'comparison', link: '/compare?l=2', summary: 'two lanes', table: TABLE, figure: null };
const EVALUATION: NewCell = { kind: 'evaluation', link: '/bench?c=1', summary: 'needle sweep', table: TABLE, figure: FIGURE };

function v1Notebook(id: string, title: string, updated: number): Notebook {
  const cells: Cell[] = [
    { kind: 'markdown', id: `${id}-m`, text: `Notes about **${title}**` },
    { ...EXPERIMENT, id: `${id}-x` } as Cell,
    { ...COMPARISON, id: `${id}-c` } as Cell,
    { ...EVALUATION, id: `${id}-e` } as Cell,
  ];
  return { id, title, created: Math.max(0, updated - 1000), updated, cells };
}

async function failure(promise: Promise<unknown>): Promise<StoreError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(StoreError);
  return error as StoreError;
}

async function snapshot(db: NotebookDb) {
  return { notebooks: await db.notebooks.toArray(), summaries: await db.summaries.toArray() };
}

const quota = () => new DOMException('The quota has been exceeded.', 'QuotaExceededError');

describe('NotebookStore edits', () => {
  it('creates notebooks with one empty markdown cell and unique default titles', async () => {
    const { store, db } = fresh();
    const first = await store.create();
    expect(first.cells).toEqual([{ kind: 'markdown', id: expect.any(String), text: '' }]);
    expect(first.id).toMatch(/^[0-9a-f-]{36}$/);
    expect((await store.create()).title).toBe('Untitled notebook 2');
    expect((await store.create()).title).toBe('Untitled notebook 3');
    expect((await store.create('  Cache notes  ')).title).toBe('Cache notes');
    expect(await store.get(first.id)).toEqual(first);
    expect((await allNotebooks(db)).map((n) => n.title)).toEqual(['Cache notes', 'Untitled notebook 3', 'Untitled notebook 2', 'Untitled notebook']);
  });

  it('renames with a trimmed 1–200 character title, and names the problem otherwise', async () => {
    const { store } = fresh();
    const { id } = await store.create();
    await store.rename(id, '  H2O vs TOVA ');
    expect((await store.get(id))?.title).toBe('H2O vs TOVA');
    expect((await failure(store.rename(id, '   '))).message).toBe('A notebook needs a title: type at least one character.');
    expect((await failure(store.rename(id, 'x'.repeat(201)))).message).toBe('A title can be at most 200 characters; this one has 201.');
    expect((await failure(store.rename('missing', 'x'))).message).toMatch(/no longer exists/);
    expect((await store.get(id))?.title).toBe('H2O vs TOVA');
  });

  it('adds, updates, moves, removes and restores cells', async () => {
    const { store } = fresh();
    const notebook = await store.create('Cells');
    const markdownId = notebook.cells[0].id;
    const x = await store.addCell(notebook.id, EXPERIMENT);
    const c = await store.addCell(notebook.id, COMPARISON, 0);
    const e = await store.addCell(notebook.id, EVALUATION, 99);
    const ids = async () => (await store.get(notebook.id))!.cells.map((cell) => cell.id);
    expect(await ids()).toEqual([c, markdownId, x, e]);

    await store.updateCell(notebook.id, markdownId, { text: '# Findings' });
    const after = (await store.get(notebook.id))!;
    expect(after.cells[1]).toEqual({ kind: 'markdown', id: markdownId, text: '# Findings' });
    expect(after.updated).toBeGreaterThan(notebook.updated);
    expect((await failure(store.updateCell(notebook.id, markdownId, { kind: 'experiment' }))).message).toBe('A markdown cell cannot become a experiment cell.');
    expect((await failure(store.updateCell(notebook.id, 'nope', { text: 'x' }))).message).toMatch(/cell no longer exists/);

    await store.moveCell(notebook.id, c, 3);
    expect(await ids()).toEqual([markdownId, x, e, c]);
    await store.moveCell(notebook.id, e, 0);
    expect(await ids()).toEqual([e, markdownId, x, c]);

    const removed = await store.removeCell(notebook.id, x);
    expect(removed).toEqual({ cell: { ...EXPERIMENT, id: x }, index: 2 });
    expect(await ids()).toEqual([e, markdownId, c]);
    await store.restoreCell(notebook.id, removed);
    expect(await ids()).toEqual([e, markdownId, x, c]);
    expect((await store.get(notebook.id))!.cells[2]).toEqual({ ...EXPERIMENT, id: x });
  });

  it('keeps a trace deflated in its row and hands it back as the same text, through edits and a second store', async () => {
    const { store, db } = fresh();
    const { id } = await store.create();
    // a trace-like JSON of ~2 MB: attention rows as numbers, repetitive the way real traces are
    const rows = Array.from({ length: 400 }, (_, step) => Array.from({ length: 300 }, (_, t) => Number(((step * 31 + t * 7) % 1000) / 1000).toFixed(6)));
    const trace = JSON.stringify({ version: 1, events: rows.map((attention, step) => ({ type: 'step', step, attention })) });
    const cellId = await store.addCell(id, { ...EXPERIMENT, trace });
    const row = (await db.notebooks.get(id))!;
    const stored = row.cells.find((c) => c.id === cellId)!;
    expect(stored.kind === 'experiment' && stored.trace !== null && typeof stored.trace === 'object' && stored.trace.deflated.length).toBeLessThan(trace.length / 2);
    const markdown = row.cells[0].id;
    await store.updateCell(id, markdown, { text: 'edited after the trace came in' });
    const again = await new NotebookStore(db).get(id);
    expect(again!.cells.find((c) => c.id === cellId)).toMatchObject({ kind: 'experiment', trace });
    expect(again!.cells[0]).toMatchObject({ text: 'edited after the trace came in' });
  });

  it('refuses a cell over the size cap and keeps the notebook as it was', async () => {
    const { store, db } = fresh();
    const { id } = await store.create();
    const before = await snapshot(db);
    const huge = { ...EXPERIMENT, trace: 'x'.repeat(TRACE_MAX_CHARS + 1) };
    const tooLarge = await failure(store.addCell(id, huge));
    expect(tooLarge.message).toBe('This cell cannot be saved: cell.trace is 32.1 MB, over the limit of 32 MB.');
    expect(tooLarge.field).toBe('cell.trace');
    expect((await failure(store.addCell(id, { ...COMPARISON, link: 'javascript:alert(1)' }))).message).toMatch(/cell\.link must be a link within kvscope/);
    expect(await snapshot(db)).toEqual(before);
    await store.addCell(id, { ...huge, trace: null });
    expect((await store.get(id))!.cells).toHaveLength(2);
  });

  it('removes a notebook and restores it (undo)', async () => {
    const { store, db } = fresh();
    const kept = await store.create('Kept');
    const gone = await store.create('Gone');
    await store.addCell(gone.id, EVALUATION);
    const full = (await store.get(gone.id))!;
    expect(await store.remove(gone.id)).toEqual(full);
    expect(await store.get(gone.id)).toBeUndefined();
    expect((await allNotebooks(db)).map((n) => n.id)).toEqual([kept.id]);
    expect((await failure(store.restore({ ...full, title: '' }))).message).toMatch(/notebook\.title must be 1 to 200 characters/);
    expect(await store.get(gone.id)).toBeUndefined();
    await store.restore(full);
    expect(await store.get(gone.id)).toEqual(full);
    expect((await failure(store.remove('missing'))).message).toMatch(/no longer exists/);
  });

  it('creates a notebook with given cells in one transaction, and nothing at all when one is refused', async () => {
    const { store, db } = fresh();
    const seen: NotebookSummary[][] = [];
    const subscription = store.liveList().subscribe((list) => seen.push(list));
    await vi.waitFor(() => expect(seen).toHaveLength(1));

    const made = await store.create('Cache map — notes', [EXPERIMENT, COMPARISON]);
    expect(made.cells.map((cell) => cell.kind)).toEqual(['experiment', 'comparison']);
    expect(made.cells[0]).toEqual({ ...EXPERIMENT, id: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    expect(await store.get(made.id)).toEqual(made);
    await vi.waitFor(() => expect(seen.at(-1)?.map((s) => s.cells)).toEqual([2]));
    // another tab sees the notebook appear with its cells: never empty, never with a notes cell first
    expect(seen.map((list) => list.map((s) => s.cells))).toEqual([[], [2]]);
    subscription.unsubscribe();

    const before = await snapshot(db);
    const tooLarge = await failure(store.create('Too large', [COMPARISON, { ...EXPERIMENT, trace: 'x'.repeat(TRACE_MAX_CHARS + 1) }]));
    expect(tooLarge.field).toBe('cell.trace');
    expect(tooLarge.message).toBe('This cell cannot be saved: cell.trace is 32.1 MB, over the limit of 32 MB.');
    expect(await snapshot(db)).toEqual(before);
    expect((await store.create('Empty', [])).cells).toEqual([]);
  });

  it('keeps an experiment without a link (past the link cap) only while it keeps its trace', async () => {
    const { store } = fresh();
    const { id } = await store.create('Long prompt');
    await store.addCell(id, { ...EXPERIMENT, link: '' });
    expect((await store.get(id))!.cells[1]).toMatchObject({ kind: 'experiment', link: '', trace: EXPERIMENT.kind === 'experiment' ? EXPERIMENT.trace : null });
    const neither = await failure(store.addCell(id, { ...EXPERIMENT, link: '', trace: null }));
    expect(neither.field).toBe('cell.link');
    expect(neither.message).toMatch(/cell\.link may be empty only while the cell keeps its trace/);
    expect((await failure(store.addCell(id, { ...COMPARISON, link: '' }))).field).toBe('cell.link');
  });
});

describe('lists and search', () => {
  it('liveList: newest first, counts by kind, search by title or cell text, emits on change', async () => {
    const { store } = fresh();
    const a = await store.create('Attention sinks');
    await store.updateCell(a.id, a.cells[0].id, { text: 'StreamingLLM keeps the FIRST tokens' });
    const b = await store.create('Budgets');
    await store.addCell(b.id, EXPERIMENT);
    await store.addCell(b.id, COMPARISON);

    const seen: NotebookSummary[][] = [];
    const subscription = store.liveList().subscribe((list) => seen.push(list));
    await vi.waitFor(() => expect(seen.length).toBeGreaterThan(0));
    expect(seen.at(-1)).toEqual([
      { id: b.id, title: 'Budgets', updated: expect.any(Number), cells: 3, kinds: { markdown: 1, experiment: 1, comparison: 1, evaluation: 0 } },
      { id: a.id, title: 'Attention sinks', updated: expect.any(Number), cells: 1, kinds: { markdown: 1, experiment: 0, comparison: 0, evaluation: 0 } },
    ]);
    await store.rename(a.id, 'Sinks');
    await vi.waitFor(() => expect(seen.at(-1)!.map((s) => s.title)).toEqual(['Sinks', 'Budgets']));
    subscription.unsubscribe();

    const search = async (query: string) => {
      const list = await new Promise<NotebookSummary[]>((resolve) => {
        const sub = store.liveList(query).subscribe((value) => {
          resolve(value);
          queueMicrotask(() => sub.unsubscribe());
        });
      });
      return list.map((s) => s.title);
    };
    expect(await search('sinks')).toEqual(['Sinks']);
    expect(await search('  first TOKENS ')).toEqual(['Sinks']);
    expect(await search('h2o')).toEqual(['Budgets']); // the experiment cell's summary
    expect(await search('cat sat')).toEqual(['Budgets']); // the experiment cell's text
    expect(await search('steps":')).toEqual([]); // traces are not searched
    expect(await search('')).toEqual(['Sinks', 'Budgets']);
  });

  it('liveNotebook follows one notebook and ends undefined when it is removed', async () => {
    const { store } = fresh();
    const { id } = await store.create('Live');
    const seen: (Notebook | undefined)[] = [];
    const subscription = store.liveNotebook(id).subscribe((n) => seen.push(n));
    await vi.waitFor(() => expect(seen.at(-1)?.title).toBe('Live'));
    await store.addCell(id, COMPARISON);
    await vi.waitFor(() => expect(seen.at(-1)?.cells).toHaveLength(2));
    await store.remove(id);
    await vi.waitFor(() => expect(seen.at(-1)).toBeUndefined());
    subscription.unsubscribe();
  });
});

describe('imports', () => {
  it('adds new notebooks, skips identical ones and copies changed ones', async () => {
    const { store } = fresh();
    const mine = v1Notebook('nb-a', 'Mine', 1_000_000);
    await store.importNotebooks([mine]);
    const changed = { ...mine, cells: mine.cells.slice(1) };
    const other = v1Notebook('nb-b', 'Other', 2_000_000);
    // the same content with keys in another order is still the same notebook
    const reordered = { cells: mine.cells.map((cell) => Object.fromEntries(Object.entries(cell).reverse()) as Cell), updated: 5, created: 1, title: 'Mine', id: 'nb-a' };
    const result = await store.importNotebooks([reordered, changed, other]);
    expect(result.skipped).toEqual(['nb-a']);
    expect(result.added).toHaveLength(2);
    expect(result.added[1]).toBe('nb-b');
    const copy = (await store.get(result.added[0]))!;
    expect(copy).toEqual({ ...changed, id: result.added[0], title: 'Mine (imported)' });
    expect(await store.get('nb-a')).toEqual(mine);
    expect(await store.get('nb-b')).toEqual(other);
  });

  it('is all or nothing: an invalid notebook or a full disk imports none', async () => {
    const { store, db } = fresh();
    await store.create('Before');
    const before = await snapshot(db);
    const bad = { ...v1Notebook('nb-c', 'Bad', 3), cells: [{ kind: 'markdown', id: 'x', text: 5 }] } as unknown as Notebook;
    const error = await failure(store.importNotebooks([v1Notebook('nb-a', 'A', 1), v1Notebook('nb-b', 'B', 2), bad]));
    expect(error.message).toBe('This notebook cannot be saved: notebooks[2].cells[0].text must be text.');
    expect(await snapshot(db)).toEqual(before);

    // the disk fills up on the second notebook's summary: the first, already written, goes too
    let puts = 0;
    db.summaries.hook('creating', () => {
      if (++puts === 2) throw quota();
    });
    expect((await failure(store.importNotebooks([v1Notebook('nb-a', 'A', 1), v1Notebook('nb-b', 'B', 2)]))).message).toBe(QUOTA_MESSAGE);
    expect(puts).toBe(2);
    expect(await snapshot(db)).toEqual(before);
  });
});

describe('a full disk (QuotaExceededError)', () => {
  it('refuses the write with the quota sentence and leaves the database unchanged', async () => {
    const { store, db } = fresh();
    const { id, cells } = await store.create('Full');
    const before = await snapshot(db);

    // a put that fails after the notebook row was written: the summary put, from a Dexie hook
    const fail = () => {
      throw quota();
    };
    db.summaries.hook('creating', fail);
    db.summaries.hook('updating', fail);
    expect((await failure(store.updateCell(id, cells[0].id, { text: 'lost' }))).message).toBe(QUOTA_MESSAGE);
    expect((await failure(store.create('Another'))).message).toBe(QUOTA_MESSAGE);
    expect((await failure(store.addCell(id, EXPERIMENT))).message).toBe(QUOTA_MESSAGE);
    expect(await snapshot(db)).toEqual(before);
    db.summaries.hook('creating').unsubscribe(fail);
    db.summaries.hook('updating').unsubscribe(fail);

    // Dexie wrapping the DOMException as `inner` (an aborted transaction)
    vi.spyOn(db.notebooks, 'put').mockRejectedValueOnce(new Dexie.AbortError('Transaction aborted', quota()));
    expect((await failure(store.rename(id, 'Renamed'))).message).toBe(QUOTA_MESSAGE);
    expect(await snapshot(db)).toEqual(before);
    await store.rename(id, 'Renamed');
    expect((await store.get(id))?.title).toBe('Renamed');
  });
});

describe('schema upgrade', () => {
  it('opens a version-1 database with nothing lost and the version-2 summaries filled', async () => {
    const name = `notebooks-upgrade-${crypto.randomUUID()}`;
    const v1 = new Dexie(name, { indexedDB, IDBKeyRange });
    declareSchemaV1(v1);
    const rows = [v1Notebook('nb-1', 'Sinks and Budgets', 3_000), v1Notebook('nb-2', 'Merging', 1_000), { ...v1Notebook('nb-3', 'Empty', 2_000), cells: [] }];
    await v1.table('notebooks').bulkPut(rows);
    await v1.table('settings').put({ key: 'reserved', value: 'kept' });
    v1.close();

    const db = testNotebookDb(name);
    const store = new NotebookStore(db);
    expect(await allNotebooks(db)).toEqual([rows[0], rows[2], rows[1]]);
    expect(db.verno).toBe(NOTEBOOK_SCHEMA_VERSION);
    expect(await db.settings.get('reserved')).toEqual({ key: 'reserved', value: 'kept' });

    const summaries = await db.summaries.orderBy('updated').reverse().toArray();
    expect(summaries.map((s) => [s.id, s.cells, s.kinds])).toEqual([
      ['nb-1', 4, { markdown: 1, experiment: 1, comparison: 1, evaluation: 1 }],
      ['nb-3', 0, { markdown: 0, experiment: 0, comparison: 0, evaluation: 0 }],
      ['nb-2', 4, { markdown: 1, experiment: 1, comparison: 1, evaluation: 1 }],
    ]);
    expect(summaries[0].searchText).toContain('sinks and budgets');
    expect(summaries[0].searchText).toContain('notes about **sinks and budgets**');
    expect(summaries[0].searchText).toContain('the cat sat on the mat');
    const first = await new Promise<NotebookSummary[]>((resolve) => store.liveList('MERGING').subscribe(resolve));
    expect(first.map((s) => s.id)).toEqual(['nb-2']);

    // the upgraded database takes edits like a new one
    await store.addCell('nb-2', { kind: 'markdown', text: 'after the upgrade' });
    expect((await store.get('nb-2'))!.cells).toHaveLength(5);
    db.close();
  });
});

describe('a database a newer kvscope wrote', () => {
  const NEWER = 'These notebooks were saved by a newer kvscope (database version 3); this app reads version 2. Reload to update the app.';

  /** A version-3 database (one more store than version 2), written by a throwaway Dexie as a newer app would. */
  async function newerDatabase(): Promise<string> {
    const name = testDbName('notebooks-newer');
    const v3 = new Dexie(name, { indexedDB, IDBKeyRange });
    v3.version(3).stores({ ...SCHEMA_V2, tags: 'id' });
    await v3.table('notebooks').put(v1Notebook('nb-new', 'From the future', 1));
    v3.close();
    return name;
  }

  it('is refused at open, reads and writes alike, with one sentence naming both versions', async () => {
    const name = await newerDatabase();
    const db = testNotebookDb(name);
    const store = new NotebookStore(db);
    const read = await store.get('nb-new').then(
      () => null,
      (error: unknown) => error,
    );
    expect(databaseProblem(read)).toBe(NEWER);
    const list = await new Promise<unknown>((resolve) => store.liveList().subscribe({ next: () => resolve('a list'), error: resolve }));
    expect(databaseProblem(list)).toBe(NEWER);
    const write = await failure(store.create('Mine'));
    expect(write.message).toBe(NEWER);

    // nothing was changed: the newer app finds its database as it left it
    const v3 = new Dexie(name, { indexedDB, IDBKeyRange });
    v3.version(3).stores({ ...SCHEMA_V2, tags: 'id' });
    expect((await v3.table('notebooks').toArray()).map((n: Notebook) => n.id)).toEqual(['nb-new']);
    expect(v3.verno).toBe(3);
    v3.close();
  });

  it('words a browser\'s own VersionError too; other errors are not the database\'s', () => {
    const native = new DOMException('The requested version (20) is less than the existing version (40).', 'VersionError');
    expect(databaseProblem(new Dexie.OpenFailedError('open failed', native))).toBe(NEWER.replace('version 3', 'version 4'));
    expect(databaseProblem(new DOMException('newer', 'VersionError'))).toMatch(/^These notebooks were saved by a newer kvscope \(a newer database version\)/);
    expect(databaseProblem(new Dexie.AbortError('aborted', quota()))).toBe(QUOTA_MESSAGE);
    expect(databaseProblem(new Error('ConstraintError'))).toBeNull();
  });
});
