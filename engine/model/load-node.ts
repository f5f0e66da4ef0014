/**
 * Node-only model loading: a ModelSource over a local directory. Kept apart from load.ts so that
 * the browser bundle never imports node:fs.
 */
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ModelError } from '../errors.ts';
import { loadModel, type LoadOptions, type LoadedModel, type ModelSource } from './load.ts';

export function directorySource(directory: string): ModelSource {
  const root = resolve(directory);
  return {
    location: root,
    async read(path, onBytes) {
      const full = join(root, path);
      let bytes: Buffer;
      try {
        bytes = await readFile(full);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') throw new ModelError(`${path}: file is missing (${full})`);
        throw new ModelError(`${path}: cannot read ${full} (${(error as Error).message})`);
      }
      onBytes?.(bytes.length, bytes.length);
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
    },
  };
}

/**
 * Loads a model directory in Node; onnxruntime-web runs single-threaded unless told otherwise, and
 * an optional calibration.json next to the manifest is read (pass calibration: false to skip it).
 */
export async function loadModelFromDirectory(directory: string, options: LoadOptions = {}): Promise<LoadedModel> {
  try {
    await stat(directory);
  } catch {
    throw new ModelError(`model directory not found: ${resolve(directory)}`);
  }
  return loadModel(directorySource(directory), { numThreads: 1, calibration: true, ...options });
}
