/**
 * The app's one notebook store (IndexedDB via Dexie), opened the first time something asks for it:
 * the /notebooks page, "Add to notebook" on any page's figures, the explorer showing a cell's trace.
 * Its own module so that pages with figures load the store, not the notebooks page's state.
 */
import { openNotebookDb } from './db.ts';
import { NotebookStore } from './store.ts';

let shared: NotebookStore | null = null;

export function notebookStore(): NotebookStore {
  shared ??= new NotebookStore(openNotebookDb());
  return shared;
}
