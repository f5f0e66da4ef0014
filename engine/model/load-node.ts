/**
 * Node-only model loading: a ModelSource over a local directory. Kept apart from load.ts so that
 * the browser bundle never imports node:fs.
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { ModelError } from '../errors.ts';
import { fileTooLarge, loadModel, type LoadOptions, type LoadedModel, type ModelSource } from './load.ts';
import { checkModelPath } from './paths.ts';

function readError(path: string, full: string, error: unknown): ModelError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new ModelError(`${path}: file is missing (${full})`);
  return new ModelError(`${path}: cannot read ${full} (${(error as Error).message})`);
}

/**
 * Files of a local model directory. A folder may be uploaded or unpacked from anywhere, so a path
 * is resolved through its symlinks first: one that ends outside the directory (a tokenizer.json
 * linked to ~/.ssh/id_rsa) is refused, as is anything that is not a regular file (a FIFO would
 * block the read forever).
 */
export function directorySource(directory: string): ModelSource {
  const root = resolve(directory);
  let realRoot: Promise<string> | null = null;
  return {
    location: root,
    async read(path, onBytes, maxBytes) {
      checkModelPath(path);
      const full = join(root, path);
      let real: string;
      let inside: string;
      try {
        inside = await (realRoot ??= realpath(root));
        real = await realpath(full);
      } catch (error) {
        realRoot = null;
        throw readError(path, full, error);
      }
      if (real !== inside && !real.startsWith(inside + sep)) {
        throw new ModelError(`${path}: ${full} links to ${real}, outside the model directory ${inside}; refusing to read it`);
      }
      let bytes: Buffer;
      try {
        const info = await stat(real);
        if (!info.isFile()) throw new ModelError(`${path}: ${full} is not a regular file`);
        if (maxBytes !== undefined && info.size > maxBytes) throw fileTooLarge(path, info.size, maxBytes);
        bytes = await readFile(real);
      } catch (error) {
        if (error instanceof ModelError) throw error;
        throw readError(path, full, error);
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
