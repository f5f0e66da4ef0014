/**
 * The explorer's side of notebooks (issue 11): the experiment cell "Add to notebook" makes from a
 * figure (the link that replays the session, the trace it recorded, the figure), and opening a
 * stored cell's trace read-only (`/?notebook=<id>&cell=<id>`: every view drawn from the trace).
 */
import { experimentQuery, readExperimentQuery } from '../links/codec.ts';
import { describeExperiment } from '../links/experiment.ts';
import type { ExperimentCell, FigureSnapshot, NewCell, Notebook } from '../notebooks/types.ts';
import { databaseProblem, type NotebookStore } from '../notebooks/store.ts';
import { showView } from './open-experiment.ts';
import type { ExplorerState } from './state.svelte.ts';

/** The experiment cell of the session now, with `figure`; throws when there is no live session. */
export async function experimentCell(app: ExplorerState, figure: FigureSnapshot): Promise<NewCell> {
  const experiment = app.experiment;
  if (!experiment) throw new Error(app.replay ? 'a replayed trace is already stored: add figures of a live session' : 'start a session first');
  const query = experimentQuery(experiment);
  const exported = await app.exportTrace();
  if (!exported) throw new Error(app.error?.message ?? 'the trace could not be exported');
  const generated = app.steps.map((s) => s.token.piece).join('');
  const cell: Omit<ExperimentCell, 'id'> = {
    kind: 'experiment',
    // a session past the link cap keeps its trace; the cell then has no link to re-run
    link: query ? `/?${query}` : '',
    trace: exported.json,
    summary: describeExperiment(experiment),
    text: `${experiment.prompt}${generated}`,
    figure,
  };
  return cell;
}

/** The notebook cell a `?notebook=…&cell=…` address names, or null. */
export function notebookCellAddress(search: string): { notebook: string; cell: string } | null {
  const q = new URLSearchParams(search);
  const notebook = q.get('notebook');
  const cell = q.get('cell');
  return notebook && cell ? { notebook, cell } : null;
}

/**
 * Shows a stored experiment cell's trace read-only, at the step and view its link names. Resolves
 * to a message when it cannot (no such notebook or cell, no trace kept, a trace the app cannot read).
 */
export async function openNotebookTrace(app: ExplorerState, store: NotebookStore, at: { notebook: string; cell: string }): Promise<string | null> {
  let notebook: Notebook | undefined;
  try {
    notebook = await store.get(at.notebook);
  } catch (error) {
    return `This notebook link cannot be opened: ${databaseProblem(error) ?? (error instanceof Error ? error.message : String(error))}`;
  }
  if (!notebook) return 'This notebook link cannot be opened: the notebook is not in this browser (import its bundle first).';
  const cell = notebook.cells.find((c) => c.id === at.cell);
  if (!cell || cell.kind !== 'experiment') return `This notebook link cannot be opened: "${notebook.title}" has no such experiment cell.`;
  if (!cell.trace) return `This cell of "${notebook.title}" kept no trace (it was too large): open its link to replay it with the model.`;
  const trace = cell.trace;
  const opened = await app.importTrace({ name: `${notebook.title} (notebook cell)`, text: async () => trace });
  if (!opened) return null; // the explorer shows the trace's own error
  const reading = cell.link ? readExperimentQuery(cell.link.slice(cell.link.indexOf('?'))) : null;
  if (reading?.kind === 'experiment') showView(app, reading.experiment);
  return null;
}
