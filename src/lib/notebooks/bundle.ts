/**
 * Notebook bundles: the zip file notebooks are exchanged in (export, import, sharing by hand).
 *
 *   bundle.json                       { format, version, exported, app?, notebooks: [...] }
 *   traces/<notebookId>/<cellId>.json one experiment cell's trace (its cell says { "file": … })
 *
 * Traces live in their own entries so bundle.json stays readable and small. A bundle is untrusted
 * input: sizes are checked from the zip's directory before anything is inflated (zip bombs), and every
 * field is validated (validate.ts) with the path of the bad one in the error.
 */
import { unzipSync, zipSync, type Zippable } from 'fflate';
import { safeFileName } from '../charts/export.ts';
import type { Notebook } from './types.ts';
import { checkNotebook, FieldError, type TraceReader } from './validate.ts';

export const BUNDLE_FORMAT = 'kvscope-notebook-bundle';
export const BUNDLE_VERSION = 1;
/** refused before inflating: more than a bundle of real notebooks ever holds */
export const BUNDLE_MAX_UNPACKED_BYTES = 200 * 1024 * 1024;
export const BUNDLE_MAX_ENTRIES = 10_000;
const BUNDLE_JSON = 'bundle.json';
const MAX_NOTEBOOKS = 1_000;

export class BundleError extends Error {
  override name = 'BundleError';
}

const traceFile = (notebookId: string, cellId: string): string => `traces/${notebookId}/${cellId}.json`;

export function encodeBundle(notebooks: Notebook[], meta: { app?: string } = {}): Uint8Array {
  // TextEncoder writes well-formed UTF-8 whatever the string holds, so decodeBundle's strict read accepts it
  const utf8Bytes = (text: string) => new TextEncoder().encode(text);
  const files: Zippable = {};
  const written = notebooks.map((notebook) => ({
    ...notebook,
    cells: notebook.cells.map((cell) => {
      if (cell.kind !== 'experiment' || cell.trace === null) return cell;
      const file = traceFile(notebook.id, cell.id);
      files[file] = utf8Bytes(cell.trace);
      return { ...cell, trace: { file } };
    }),
  }));
  const header = { format: BUNDLE_FORMAT, version: BUNDLE_VERSION, exported: new Date().toISOString(), ...meta };
  const json = JSON.stringify({ ...header, notebooks: written }, null, 2);
  // level 1: traces are megabytes of JSON numbers; level 6 takes ~1.8× as long for a zip ~8 % smaller (npm run bench:links)
  return zipSync({ [BUNDLE_JSON]: utf8Bytes(json), ...files }, { level: 1 });
}

/** Reads a bundle; `fileName` only words the errors ("notes.zip is not a kvscope bundle …"). */
export function decodeBundle(bytes: Uint8Array, fileName = 'This file'): Notebook[] {
  const entries = unpack(bytes, fileName);
  const json = entries.get(BUNDLE_JSON);
  if (!json) throw new BundleError(`${fileName} is not a kvscope bundle (it has no ${BUNDLE_JSON}).`);
  const header = parseJson(json, fileName);
  checkHeader(header, fileName);
  const readTrace: TraceReader = (raw, path, where) => {
    if (raw === null || typeof raw === 'string') return raw;
    const file = isObject(raw) ? raw.file : undefined;
    const expected = traceFile(where.notebook, where.cell);
    if (file !== expected) throw new FieldError(path, `must be null or { "file": "${expected}" }`);
    const trace = entries.get(expected);
    if (!trace) throw new FieldError(path, `names ${expected}, which is not in the bundle`);
    return utf8(trace, expected, fileName);
  };
  try {
    const list = header.notebooks;
    if (!Array.isArray(list)) throw new FieldError('notebooks', 'must be a list');
    if (list.length > MAX_NOTEBOOKS) throw new FieldError('notebooks', `holds ${list.length} notebooks, more than ${MAX_NOTEBOOKS}`);
    const seen = new Set<string>();
    return list.map((raw: unknown, i) => {
      const notebook = checkNotebook(raw, `notebooks[${i}]`, readTrace);
      if (seen.has(notebook.id)) throw new FieldError(`notebooks[${i}].id`, `repeats the id ${notebook.id}`);
      seen.add(notebook.id);
      return notebook;
    });
  } catch (error) {
    if (error instanceof FieldError) throw new BundleError(`${fileName} has a bad field: ${error.message}.`);
    throw error;
  }
}

/** "<title>.kvscope.zip" for one notebook, "kvscope-notebooks-<date>.zip" for several. */
export function bundleFileName(notebooks: Notebook[], now: Date = new Date()): string {
  const single = notebooks.length === 1 ? notebookFileStem(notebooks[0].title) : null;
  return single ? `${single}.kvscope.zip` : `kvscope-notebooks-${now.toISOString().slice(0, 10)}.zip`;
}

/** A notebook title as a file-name stem (the figures' own rule), or null when no letter or digit is left to name it. */
export function notebookFileStem(title: string): string | null {
  return /[A-Za-z0-9]/.test(title) ? safeFileName(title) : null;
}

/** Inflates bundle.json and the traces, after checking every entry's declared size and the count. */
function unpack(bytes: Uint8Array, fileName: string): Map<string, Uint8Array> {
  // a zip starts with a local file header, or is empty (only the end of central directory)
  const magic = bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b && (bytes[2] === 3 || bytes[2] === 5);
  if (!magic) throw new BundleError(`${fileName} is not a kvscope bundle (not a zip file).`);
  let count = 0;
  let total = 0;
  const wanted = (name: string) => name === BUNDLE_JSON || (name.startsWith('traces/') && name.endsWith('.json'));
  try {
    // first pass reads only the directory (the filter refuses every entry): nothing is inflated yet
    unzipSync(bytes, {
      filter: (file) => {
        count++;
        if (wanted(file.name)) total += file.originalSize;
        if (count > BUNDLE_MAX_ENTRIES) {
          throw new BundleError(`${fileName} holds more than ${BUNDLE_MAX_ENTRIES} files, more than a kvscope bundle may; it was not opened.`);
        }
        if (total > BUNDLE_MAX_UNPACKED_BYTES) {
          throw new BundleError(`${fileName} would unpack to more than ${BUNDLE_MAX_UNPACKED_BYTES / 1024 / 1024} MB, more than a kvscope bundle may; it was not opened.`);
        }
        return false;
      },
    });
    return new Map(Object.entries(unzipSync(bytes, { filter: (file) => wanted(file.name) })));
  } catch (error) {
    if (error instanceof BundleError) throw error;
    throw new BundleError(`${fileName} is damaged: its zip data cannot be read (${messageOf(error)}).`);
  }
}

function parseJson(bytes: Uint8Array, fileName: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(utf8(bytes, BUNDLE_JSON, fileName));
  } catch (error) {
    if (error instanceof BundleError) throw error;
    throw new BundleError(`${fileName} is damaged: ${BUNDLE_JSON} is not valid JSON (${messageOf(error)}).`);
  }
  if (!isObject(value)) throw new BundleError(`${fileName} is not a kvscope bundle (${BUNDLE_JSON} is not an object).`);
  return value;
}

function checkHeader(header: Record<string, unknown>, fileName: string): void {
  if (header.format !== BUNDLE_FORMAT) {
    throw new BundleError(`${fileName} is not a kvscope bundle (${BUNDLE_JSON} has format ${JSON.stringify(header.format) ?? 'undefined'}, not "${BUNDLE_FORMAT}").`);
  }
  const version = header.version;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
    throw new BundleError(`${fileName} has a bad field: version must be a whole number from 1, not ${JSON.stringify(version) ?? 'undefined'}.`);
  }
  if (version > BUNDLE_VERSION) {
    throw new BundleError(
      `This bundle was written by a newer kvscope (bundle version ${version}); this app reads version ${BUNDLE_VERSION} — update the app.`,
    );
  }
  if (typeof header.exported !== 'string' || (header.app !== undefined && typeof header.app !== 'string')) {
    throw new BundleError(`${fileName} has a bad field: exported and app must be text.`);
  }
}

function utf8(bytes: Uint8Array, entry: string, fileName: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new BundleError(`${fileName} is damaged: ${entry} is not UTF-8 text.`);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));
