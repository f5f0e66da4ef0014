/**
 * Where "Add to notebook" gets its cell from: a Svelte context a page provides once.
 *
 * A figure knows how it looks (its snapshot) but not what run it shows; the page does. So each page
 * that can make cells provides a CellSource (the explorer an experiment cell, /compare a comparison,
 * /bench an evaluation) and every <Figure> under it offers "Add to notebook"; a figure on a page
 * without a source offers nothing.
 */
import { getContext, setContext } from 'svelte';
import { notebookStore } from './shared-store.ts';
import type { NotebookStore } from './store.ts';
import type { FigureSnapshot, NewCell } from './types.ts';

/** Builds the cell for a figure the user is adding (the page's current run, with that figure). */
export type CellSource = (figure: FigureSnapshot) => Promise<NewCell>;

export interface CellSourceContext {
  source: CellSource;
  /** the store cells are added to, asked for only when the user opens the popover */
  store: () => NotebookStore;
}

const CELL_SOURCE = Symbol('kvscope.cell-source');

/** Call once in a page's <script>; `store` is for tests (the app's shared store by default). */
export function provideCellSource(source: CellSource, store: () => NotebookStore = notebookStore): void {
  setContext<CellSourceContext>(CELL_SOURCE, { source, store });
}

/** The page's cell source, or undefined on a page that provides none. */
export function cellSource(): CellSourceContext | undefined {
  return getContext<CellSourceContext | undefined>(CELL_SOURCE);
}
