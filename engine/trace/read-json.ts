/**
 * The small checkers the trace reader (read.ts, read-decision.ts) builds on: each takes a parsed
 * JSON value and the path of the field it came from, and returns the value typed or throws
 * TraceFormatError naming that path.
 */

/** A file that is not a trace this kvscope can read; the message says why. */
export class TraceFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TraceFormatError';
  }
}

export type Json = Record<string, unknown>;

export function fail(path: string, problem: string): never {
  throw new TraceFormatError(`${path}: ${problem}`);
}

export function object(value: unknown, path: string): Json {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) fail(path, 'expected an object');
  return value as Json;
}

export function list(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) fail(path, 'expected a list');
  return value;
}

export function number(value: unknown, path: string): number {
  // JSON writes NaN and ±Infinity as null: a number field may legitimately hold one
  if (value === null) return Number.NaN;
  if (typeof value !== 'number') fail(path, `expected a number, got ${JSON.stringify(value)?.slice(0, 40)}`);
  return value;
}

export function integer(value: unknown, path: string, min = 0): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) fail(path, `expected an integer ≥ ${min}, got ${JSON.stringify(value)?.slice(0, 40)}`);
  return value;
}

export function string(value: unknown, path: string): string {
  if (typeof value !== 'string') fail(path, 'expected a string');
  return value;
}

export function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') fail(path, 'expected true or false');
  return value;
}

export function integers(value: unknown, path: string, length?: number): number[] {
  const items = list(value, path);
  if (length !== undefined && items.length !== length) fail(path, `expected ${length} values, got ${items.length}`);
  for (let i = 0; i < items.length; i++) {
    const v = items[i];
    // −1 pads top-k summaries
    if (typeof v !== 'number' || !Number.isInteger(v) || v < -1) fail(`${path}[${i}]`, `expected a token index, got ${JSON.stringify(v)?.slice(0, 40)}`);
  }
  return items as number[];
}

export function int32s(value: unknown, path: string, length?: number): Int32Array {
  return Int32Array.from(integers(value, path, length));
}

export function float32s(value: unknown, path: string, length?: number): Float32Array {
  const items = list(value, path);
  if (length !== undefined && items.length !== length) fail(path, `expected ${length} values, got ${items.length}`);
  const out = new Float32Array(items.length);
  for (let i = 0; i < items.length; i++) out[i] = number(items[i], `${path}[${i}]`);
  return out;
}

export interface Dims {
  layers: number;
  heads: number;
  kvHeads: number;
}

export function grid<T>(value: unknown, path: string, rows: number, cols: number, cell: (v: unknown, p: string) => T): T[][] {
  const outer = list(value, path);
  if (outer.length !== rows) fail(path, `expected ${rows} rows, got ${outer.length}`);
  return outer.map((row, r) => {
    const inner = list(row, `${path}[${r}]`);
    if (inner.length !== cols) fail(`${path}[${r}]`, `expected ${cols} values, got ${inner.length}`);
    return inner.map((v, c) => cell(v, `${path}[${r}][${c}]`));
  });
}
