/**
 * Notebooks (issue 11): an ordered list of cells kept in IndexedDB (Dexie, db.ts), exchanged as
 * bundles (bundle.ts) and exported as static HTML (html-export.ts). These types are the contract
 * between the store, the /notebooks page, "Add to notebook" on every figure and the bundles.
 *
 * A cell keeps inputs and what was recorded, never anything that runs: markdown is sanitized when
 * it is shown (markdown.ts), figure snapshots are SVG text shown only through <img> (no script
 * runs in an image), every other string is text.
 */

export type CellKind = 'markdown' | 'experiment' | 'comparison' | 'evaluation';

/** A figure as it looked when it was added: the SVG the figure's own export writes (charts/export.ts composeSvg). */
export interface FigureSnapshot {
  /** the figure's file-name stem, e.g. "cache-map" or "head-L3-H2" */
  name: string;
  title: string;
  /** the line under the title in exports (model, step, settings) */
  caption: string;
  svg: string;
}

export interface MarkdownCell {
  kind: 'markdown';
  id: string;
  text: string;
}

/**
 * An explorer experiment: the link that replays it (src/lib/links/, `/?x=…`), the trace it recorded
 * (engine/trace, the JSON the explorer's Export trace writes, re-rendered read-only in the explorer),
 * and the figure that was added.
 */
export interface ExperimentCell {
  kind: 'experiment';
  id: string;
  /** the explorer link, relative: `/?x=…` */
  link: string;
  /** the exported trace JSON (null when the trace was too large to keep: the link still replays it) */
  trace: string | null;
  /** one line: model, policy, steps */
  summary: string;
  /** the prompt and the generated text (plain text) */
  text: string;
  figure: FigureSnapshot | null;
}

/** A /compare run: its link (`/compare?…`), the lanes' summary rows and the figure that was added. */
export interface ComparisonCell {
  kind: 'comparison';
  id: string;
  link: string;
  summary: string;
  table: DataTable;
  figure: FigureSnapshot | null;
}

/** A /bench evaluation: its link (`/bench?…`), the result table and the chart that was added. */
export interface EvaluationCell {
  kind: 'evaluation';
  id: string;
  link: string;
  summary: string;
  table: DataTable;
  figure: FigureSnapshot | null;
}

export type Cell = MarkdownCell | ExperimentCell | ComparisonCell | EvaluationCell;

/** A table of plain text / numbers (shown as text, never as HTML). */
export interface DataTable {
  columns: string[];
  rows: (string | number | null)[][];
}

export interface Notebook {
  id: string;
  title: string;
  /** milliseconds since the epoch */
  created: number;
  updated: number;
  cells: Cell[];
}

/** What a figure hands to "Add to notebook": a cell without its id (the store gives it one). */
export type NewCell = Omit<MarkdownCell, 'id'> | Omit<ExperimentCell, 'id'> | Omit<ComparisonCell, 'id'> | Omit<EvaluationCell, 'id'>;
