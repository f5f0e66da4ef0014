/**
 * Where a command's inputs are: the model directory (--model: a directory or an id of the
 * package's static/models/index.json), the draft next to it, and the held-out documents. Paths
 * default relative to the package, not the working directory.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KvscopeError, ModelError } from '../errors.ts';
import type { Manifest } from '../model/manifest.ts';
import { isModelId, modelPathProblem } from '../model/paths.ts';
import { UsageError } from './args.ts';
import { asObject, str } from './json.ts';

export const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));

const MODELS_DIR = join(PACKAGE_ROOT, 'static', 'models');

interface ModelIndex {
  default?: string;
  models?: { id: string; path: string; role?: string; draft?: string }[];
}

function readIndex(path: string): ModelIndex | null {
  if (!existsSync(path)) return null;
  try {
    const json: unknown = JSON.parse(readFileSync(path, 'utf8'));
    return typeof json === 'object' && json !== null ? (json as ModelIndex) : null;
  } catch {
    throw new ModelError(`${path}: not valid JSON`);
  }
}

/** --model: a directory (relative to the working directory), or an id of static/models/index.json. */
export function resolveModelDir(given: string | undefined): string {
  const index = readIndex(join(MODELS_DIR, 'index.json'));
  const byId = (id: string) => {
    const entry = index?.models?.find((m) => m.id === id);
    return entry ? join(MODELS_DIR, entry.path) : null;
  };
  if (given === undefined) {
    if (!index?.default) throw new ModelError(`no default model: ${join(MODELS_DIR, 'index.json')} is missing or names no "default" (pass --model DIR)`);
    const dir = byId(index.default);
    if (!dir) throw new ModelError(`${join(MODELS_DIR, 'index.json')}: default model "${index.default}" is not listed in "models"`);
    return dir;
  }
  if (given.trim() === '') throw new UsageError('--model needs a directory or a model id, got ""');
  if (existsSync(given)) return resolve(given);
  return byId(given) ?? resolve(given);
}

/** True when `path` exists and, its symlinks resolved, lies inside `folder` (itself resolved). */
function existsInside(folder: string, path: string): boolean {
  try {
    const root = realpathSync(folder);
    const real = realpathSync(path);
    return real.startsWith(root + sep);
  } catch {
    return false;
  }
}

/**
 * The draft named by the model's manifest, looked up next to the model directory: through the
 * models folder's index.json, else as the sibling folder of that id. The manifest is untrusted
 * (manifest.ts makes `draft` a model id, never a path), and so is an index entry's path: a draft
 * is only found inside the models folder, its symlinks resolved.
 */
export function resolveDraftDir(modelDir: string, manifest: Manifest): string | null {
  if (!manifest.draft || !isModelId(manifest.draft)) return null;
  const parent = dirname(modelDir);
  const entry = readIndex(join(parent, 'index.json'))?.models?.find((m) => m.id === manifest.draft);
  const indexed = entry && typeof entry.path === 'string' && modelPathProblem(entry.path) === null ? join(parent, entry.path) : null;
  for (const candidate of [indexed, join(parent, manifest.draft)]) {
    if (candidate && existsInside(parent, join(candidate, 'manifest.json'))) return candidate;
  }
  return null;
}

/** A path as the user would type it: relative to the working directory when inside it. */
export function displayPath(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel === '' ? '.' : rel.startsWith('..') ? path : rel;
}

/** --heldout, else the package's static/data/heldout.json. */
export function heldoutPath(given: string | undefined): string {
  return given !== undefined ? resolve(given) : join(PACKAGE_ROOT, 'static', 'data', 'heldout.json');
}

/** A held-out file's JSON, or an error naming the file and what went wrong. */
export async function readHeldoutJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new KvscopeError(`cannot read held-out text ${path}: ${code === 'ENOENT' ? 'no such file' : (error as Error).message}`);
  }
}

/** The texts of a held-out file {documents: [{text}]}. */
export async function readHeldout(path: string): Promise<string[]> {
  const json = await readHeldoutJson(path);
  const docs = asObject(json)?.documents;
  if (!Array.isArray(docs)) throw new KvscopeError(`${path}: expected {"documents": [{"text": …}]}`);
  const texts = docs.map((d) => str(asObject(d)?.text)).filter((t): t is string => t !== null && t.length > 0);
  if (texts.length === 0) throw new KvscopeError(`${path}: no documents with text`);
  return texts;
}
