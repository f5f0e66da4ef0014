/** Shared access to the tiny deterministic fixture model (tests/fixtures/tiny-model). */
import { cp, mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModelFromDirectory } from '../../../engine/model/load-node.ts';
import type { LoadedModel } from '../../../engine/model/load.ts';

export const FIXTURE_DIR = fileURLToPath(new URL('../../fixtures/tiny-model/', import.meta.url));

let cached: Promise<LoadedModel> | null = null;

/** The fixture model, loaded once per test file. */
export function fixtureModel(): Promise<LoadedModel> {
  cached ??= loadModelFromDirectory(FIXTURE_DIR);
  return cached;
}

/** A writable copy of the fixture directory, for corruption tests. */
export async function fixtureCopy(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kvscope-fixture-'));
  await cp(FIXTURE_DIR, dir, { recursive: true });
  return dir;
}

export async function readJson(path: string): Promise<unknown> {
  return JSON.parse(await readFile(path, 'utf8'));
}

/** base64 → Float32Array (little-endian, as the exporter writes it). */
export function decodeFloat32Base64(b64: string): Float32Array {
  const bytes = Buffer.from(b64, 'base64');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/** Deterministic pseudo-random token ids in [3, vocab) (avoids pad/bos/eos). */
export function tokenSequence(length: number, seed: number, vocab = 4096): number[] {
  let state = seed >>> 0;
  const ids: number[] = [];
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    ids.push(3 + (state % (vocab - 3)));
  }
  return ids;
}
