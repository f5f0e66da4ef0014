/**
 * What a notebook and its cells may hold, checked field by field. One set of limits for the store
 * (what it agrees to keep) and for bundles (what they may bring in), so an exported notebook always
 * imports again. A check returns a fresh object with only the known fields, or throws a FieldError
 * naming the field's path (`notebooks[0].cells[2].table.rows[1]`) and the problem.
 */
import type { Cell, DataTable, FigureSnapshot, Notebook } from './types.ts';

const MB = 1024 * 1024;
/** an exported trace past this is not kept (the cell's link still replays the run) */
export const TRACE_MAX_CHARS = 32 * MB;
export const SVG_MAX_CHARS = 2 * MB;
export const TITLE_MAX_CHARS = 200;
export const MAX_CELLS = 1_000;
const TEXT_MAX_CHARS = 1 * MB;
const LINK_MAX_CHARS = 1 * MB;
const LINE_MAX_CHARS = 10_000;
const MAX_COLUMNS = 200;
const MAX_ROWS = 100_000;
/** ids become zip entry names (traces/<notebook>/<cell>.json): no slashes, no dots */
const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export class FieldError extends Error {
  override name = 'FieldError';
  constructor(
    readonly path: string,
    readonly problem: string,
  ) {
    super(`${path} ${problem}`);
  }
}

/** Reads a cell's `trace` field (a bundle resolves `{ file }` entries; the store takes text or null). */
export type TraceReader = (raw: unknown, path: string, where: { notebook: string; cell: string }) => string | null;

const inlineTrace: TraceReader = (raw, path) => (raw === null ? null : text(raw, path, TRACE_MAX_CHARS));

export function checkNotebook(value: unknown, path: string, readTrace: TraceReader = inlineTrace): Notebook {
  const o = record(value, path);
  const id = identifier(o.id, `${path}.id`);
  const cells = list(o.cells, `${path}.cells`, MAX_CELLS);
  const seen = new Set<string>();
  return {
    id,
    title: checkTitle(o.title, `${path}.title`),
    created: time(o.created, `${path}.created`),
    updated: time(o.updated, `${path}.updated`),
    cells: cells.map((raw, i) => {
      const cell = checkCell(raw, `${path}.cells[${i}]`, id, readTrace);
      if (seen.has(cell.id)) throw new FieldError(`${path}.cells[${i}].id`, `repeats the cell id ${cell.id}`);
      seen.add(cell.id);
      return cell;
    }),
  };
}

export function checkCell(value: unknown, path: string, notebookId: string, readTrace: TraceReader = inlineTrace): Cell {
  const o = record(value, path);
  const id = identifier(o.id, `${path}.id`);
  const kind = o.kind;
  if (kind === 'markdown') return { kind, id, text: text(o.text, `${path}.text`, TEXT_MAX_CHARS) };
  // an experiment past the link cap has no link ("") and keeps only its trace
  const link = kind === 'experiment' && o.link === '' ? '' : checkLink(o.link, `${path}.link`);
  const summary = text(o.summary, `${path}.summary`, LINE_MAX_CHARS);
  const figure = checkFigure(o.figure, `${path}.figure`);
  if (kind === 'experiment') {
    const trace = readTrace(o.trace, `${path}.trace`, { notebook: notebookId, cell: id });
    if (trace !== null) text(trace, `${path}.trace`, TRACE_MAX_CHARS);
    if (link === '' && trace === null) throw new FieldError(`${path}.link`, 'may be empty only while the cell keeps its trace (without both it can neither replay nor show the run)');
    return { kind, id, link, trace, summary, text: text(o.text, `${path}.text`, TEXT_MAX_CHARS), figure };
  }
  if (kind === 'comparison' || kind === 'evaluation') return { kind, id, link, summary, table: checkTable(o.table, `${path}.table`), figure };
  throw new FieldError(`${path}.kind`, `must be markdown, experiment, comparison or evaluation, not ${JSON.stringify(kind) ?? 'missing'}`);
}

/** A title is trimmed text of 1 to 200 characters. */
export function checkTitle(value: unknown, path: string): string {
  const title = text(value, path, TITLE_MAX_CHARS);
  if (title.trim() !== title || title === '') throw new FieldError(path, 'must be 1 to 200 characters with no spaces around it');
  return title;
}

/** Links stay relative to the app (`/?x=…`, `/compare?…`): anything else could point a click anywhere. */
function checkLink(value: unknown, path: string): string {
  const link = text(value, path, LINK_MAX_CHARS);
  if (!link.startsWith('/') || link.startsWith('//') || link.startsWith('/\\')) throw new FieldError(path, 'must be a link within kvscope, starting with one "/"');
  return link;
}

function checkFigure(value: unknown, path: string): FigureSnapshot | null {
  if (value === null) return null;
  const o = record(value, path);
  return {
    name: text(o.name, `${path}.name`, TITLE_MAX_CHARS),
    title: text(o.title, `${path}.title`, LINE_MAX_CHARS),
    caption: text(o.caption, `${path}.caption`, LINE_MAX_CHARS),
    svg: text(o.svg, `${path}.svg`, SVG_MAX_CHARS),
  };
}

function checkTable(value: unknown, path: string): DataTable {
  const o = record(value, path);
  const columns = list(o.columns, `${path}.columns`, MAX_COLUMNS).map((c, i) => text(c, `${path}.columns[${i}]`, LINE_MAX_CHARS));
  const rows = list(o.rows, `${path}.rows`, MAX_ROWS).map((raw, r) => {
    const row = list(raw, `${path}.rows[${r}]`, MAX_COLUMNS);
    if (row.length !== columns.length) throw new FieldError(`${path}.rows[${r}]`, `must have ${columns.length} values (one per column), not ${row.length}`);
    return row.map((v, c) => {
      if (v === null || (typeof v === 'number' && Number.isFinite(v))) return v;
      if (typeof v === 'string') return text(v, `${path}.rows[${r}][${c}]`, LINE_MAX_CHARS);
      throw new FieldError(`${path}.rows[${r}][${c}]`, 'must be text, a finite number or null');
    });
  });
  return { columns, rows };
}

function record(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FieldError(path, 'must be an object');
  return value as Record<string, unknown>;
}

function list(value: unknown, path: string, max: number): unknown[] {
  if (!Array.isArray(value)) throw new FieldError(path, 'must be a list');
  if (value.length > max) throw new FieldError(path, `holds ${value.length} items, more than ${max}`);
  return value;
}

function text(value: unknown, path: string, max: number): string {
  if (typeof value !== 'string') throw new FieldError(path, 'must be text');
  if (value.length > max) throw new FieldError(path, `is ${size(value.length)}, over the limit of ${size(max)}`);
  return value;
}

function identifier(value: unknown, path: string): string {
  if (typeof value !== 'string' || !ID_PATTERN.test(value)) throw new FieldError(path, 'must be an id of 1 to 64 letters, digits, "-" or "_"');
  return value;
}

function time(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new FieldError(path, 'must be a time in milliseconds since 1970');
  return value;
}

/** Rounded up, so a text just over a limit never reads as equal to it. */
function size(chars: number): string {
  return chars >= MB ? `${Math.ceil((chars / MB) * 10) / 10} MB` : `${chars.toLocaleString('en-US')} characters`;
}
