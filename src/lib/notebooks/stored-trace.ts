/**
 * How an experiment cell's trace is kept in IndexedDB: deflated (fflate). A trace is mostly
 * attention rows written as JSON numbers — 64 steps after a 100-token prompt are ~7 MB of JSON —
 * and deflate keeps about a third of it. The store packs a notebook's traces on the way in and
 * unpacks them on the way out, so a Notebook always holds the trace as the JSON text it was; a
 * version-1 row (the trace inline as text) reads the same.
 *
 * Rows are rewritten whole on every edit (autosave), so the codec remembers the last traces it
 * packed and unpacked, by cell (a cell's trace never changes): an autosave or the open notebook's
 * live query does not deflate or inflate every trace again on every keystroke.
 */
import { deflateSync, inflateSync, strFromU8, strToU8 } from 'fflate';
import type { Cell, Notebook } from './types.ts';

/** a trace as a row holds it: deflated UTF-8 JSON */
export interface DeflatedTrace {
  deflated: Uint8Array;
}

/** A notebook as the `notebooks` table holds it: the same, but an experiment's trace may be deflated. */
export type StoredNotebook = Omit<Notebook, 'cells'> & { cells: StoredCell[] };
export type StoredCell = Exclude<Cell, { kind: 'experiment' }> | (Omit<Extract<Cell, { kind: 'experiment' }>, 'trace'> & { trace: string | DeflatedTrace | null });

const REMEMBERED = 24;

/** Packs and unpacks a store's traces, remembering the last ones both ways (by cell id: a cell's trace never changes). */
export class TraceCodec {
  private known = new Map<string, { text: string; deflated: Uint8Array }>();

  /** The row of a notebook: every trace deflated. */
  pack(notebook: Notebook): StoredNotebook {
    return { ...notebook, cells: notebook.cells.map((cell) => (cell.kind === 'experiment' && cell.trace !== null ? { ...cell, trace: { deflated: this.deflated(cell.id, cell.trace) } } : cell)) };
  }

  /** The notebook of a row: every trace as its JSON text (a version-1 row's inline text as it is). */
  unpack(row: StoredNotebook): Notebook {
    return { ...row, cells: row.cells.map((cell) => (cell.kind === 'experiment' && cell.trace !== null && typeof cell.trace === 'object' ? { ...cell, trace: this.text(cell.id, cell.trace.deflated) } : (cell as Cell))) };
  }

  private deflated(cellId: string, text: string): Uint8Array {
    const known = this.known.get(cellId);
    if (known && known.text === text) return known.deflated;
    const deflated = deflateSync(strToU8(text), { level: 1 });
    this.remember(cellId, text, deflated);
    return deflated;
  }

  private text(cellId: string, deflated: Uint8Array): string {
    const known = this.known.get(cellId);
    if (known && sameBytes(known.deflated, deflated)) return known.text;
    const text = strFromU8(inflateSync(deflated));
    this.remember(cellId, text, deflated);
    return text;
  }

  private remember(cellId: string, text: string, deflated: Uint8Array): void {
    this.known.delete(cellId);
    this.known.set(cellId, { text, deflated });
    if (this.known.size > REMEMBERED) this.known.delete(this.known.keys().next().value as string);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
