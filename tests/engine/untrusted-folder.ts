/**
 * The tiny fixture as an in-memory model folder that tests corrupt at will (issue 12 §4): the
 * manifest and tokenizer.json are edited as JSON, the tokenizer's sha256/bytes in the manifest are
 * recomputed unless a test wants the sha check to catch the change.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelError } from '../../engine/errors.ts';
import type { ModelSource } from '../../engine/model/load.ts';
import { sha256Hex } from '../../engine/model/sha256.ts';
import { FIXTURE_DIR } from './helpers/fixture.ts';

// Tests break the JSON at will, so it is loosely typed on purpose.
export type Json = Record<string, any>;

export interface FixtureFiles {
  manifest: Json;
  tokenizer: Json;
  /** every file of the fixture folder, by path */
  files: ReadonlyMap<string, Uint8Array>;
}

let cached: Promise<FixtureFiles> | null = null;

/** The fixture folder's files, read once per test file. */
export function fixtureFiles(): Promise<FixtureFiles> {
  cached ??= (async () => {
    const files = new Map<string, Uint8Array>();
    for (const name of ['manifest.json', 'model.onnx', 'tokenizer.json', 'reference.json']) {
      files.set(name, new Uint8Array(await readFile(join(FIXTURE_DIR, name))));
    }
    const text = (name: string) => new TextDecoder().decode(files.get(name));
    return { manifest: JSON.parse(text('manifest.json')), tokenizer: JSON.parse(text('tokenizer.json')), files };
  })();
  return cached;
}

/** A ModelSource over files in memory; `reads` lists the paths asked for, in order. */
export function memorySource(files: ReadonlyMap<string, Uint8Array>): ModelSource & { reads: string[] } {
  const reads: string[] = [];
  return {
    location: 'memory',
    reads,
    async read(path, onBytes) {
      reads.push(path);
      const bytes = files.get(path);
      if (!bytes) throw new ModelError(`${path}: file is missing (not in memory)`);
      onBytes?.(bytes.length, bytes.length);
      return bytes;
    },
  };
}

export interface Mutation {
  /** edits tokenizer.json (a copy); its sha256 and bytes are recomputed when `rehash` */
  tokenizer?: (tokenizer: Json) => void;
  /** edits manifest.json (a copy), after the tokenizer entry was rehashed */
  manifest?: (manifest: Json) => void;
  /** the manifest.json text as written, to put raw tokens (NaN, 1e999) or truncate it */
  manifestText?: (text: string) => string;
  /** the tokenizer.json bytes as written (before rehashing) */
  tokenizerBytes?: (bytes: Uint8Array) => Uint8Array;
  /** recompute the tokenizer's sha256 and bytes in the manifest (default true) */
  rehash?: boolean;
}

const encoder = new TextEncoder();

/** The fixture folder with one mutation applied, as files in memory. */
export async function mutatedFolder(mutation: Mutation): Promise<Map<string, Uint8Array>> {
  const fixture = await fixtureFiles();
  const files = new Map(fixture.files);
  const manifest: Json = structuredClone(fixture.manifest);
  if (mutation.tokenizer || mutation.tokenizerBytes) {
    const tokenizer: Json = structuredClone(fixture.tokenizer);
    mutation.tokenizer?.(tokenizer);
    let bytes = mutation.tokenizer ? encoder.encode(JSON.stringify(tokenizer)) : fixture.files.get('tokenizer.json')!;
    if (mutation.tokenizerBytes) bytes = mutation.tokenizerBytes(bytes);
    files.set('tokenizer.json', bytes);
    if (mutation.rehash ?? true) {
      const entry = manifest.files.find((f: { path: string }) => f.path === 'tokenizer.json');
      entry.sha256 = await sha256Hex(bytes);
      entry.bytes = bytes.length;
    }
  }
  mutation.manifest?.(manifest);
  let text = JSON.stringify(manifest);
  if (mutation.manifestText) text = mutation.manifestText(text);
  files.set('manifest.json', encoder.encode(text));
  return files;
}
