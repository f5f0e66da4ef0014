/**
 * What "Add to notebook" (AddToNotebook.svelte) writes: a figure's cell appended to a notebook, or a
 * new notebook titled after the figure holding just that cell, made in one transaction (other tabs
 * never see it half-made; a refusal leaves nothing behind).
 *
 * An experiment whose trace the store refuses as too large is kept without it when its link can
 * still replay the run; any other refusal (a full disk, a bad field) is the error the popover shows.
 */
import { StoreError, type NotebookStore } from './store.ts';
import type { NewCell } from './types.ts';
import { TITLE_MAX_CHARS } from './validate.ts';

export interface Added {
  id: string;
  title: string;
  /** the experiment's trace was refused (too large): the cell keeps its link only */
  traceDropped: boolean;
}

const NOTES_SUFFIX = ' — notes';
/** an experiment whose trace is too large and whose prompt is too long for a link: a cell could neither replay nor show it */
const NO_TRACE_NO_LINK =
  'This experiment cannot be added: its trace is too large for a notebook and its prompt too long for a link, so the cell could neither replay nor show the run. Nothing was added.';

/** The title of a notebook made for a figure: "Cache map — notes". */
export function notebookTitleFor(figureTitle: string): string {
  const base = figureTitle.trim().slice(0, TITLE_MAX_CHARS - NOTES_SUFFIX.length).trimEnd() || 'Figure';
  return `${base}${NOTES_SUFFIX}`;
}

/** A new notebook titled after the figure, holding just this cell (no empty notes cell). */
export async function addToNewNotebook(store: NotebookStore, figureTitle: string, cell: NewCell): Promise<Added> {
  const { saved, traceDropped } = await withoutRefusedTrace(cell, (kept) => store.create(notebookTitleFor(figureTitle), [kept]));
  return { id: saved.id, title: saved.title, traceDropped };
}

/** The cell appended to an existing notebook. */
export async function addToNotebook(store: NotebookStore, notebook: { id: string; title: string }, cell: NewCell): Promise<Added> {
  const { traceDropped } = await withoutRefusedTrace(cell, (kept) => store.addCell(notebook.id, kept));
  return { id: notebook.id, title: notebook.title, traceDropped };
}

/** Saves the cell; once more without its trace when the store refused that (`field` "cell.trace") and the link can replay the run. */
async function withoutRefusedTrace<T>(cell: NewCell, save: (cell: NewCell) => Promise<T>): Promise<{ saved: T; traceDropped: boolean }> {
  try {
    return { saved: await save(cell), traceDropped: false };
  } catch (error) {
    if (!(error instanceof StoreError) || error.field !== 'cell.trace' || cell.kind !== 'experiment') throw error;
    if (cell.link === '') throw new StoreError(NO_TRACE_NO_LINK);
    return { saved: await save({ ...cell, trace: null }), traceDropped: true };
  }
}
