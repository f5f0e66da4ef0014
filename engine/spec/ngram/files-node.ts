/**
 * DrafterEnv.loadIndex in Node: static/indexes/<id>/<file> of the package (or another root), ''
 * resolved through its index.json. Kept apart from files.ts so the browser bundle never imports
 * node:fs.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DraftSpecError } from '../../errors.ts';
import { checkIndexPath, INDEX_LIST_FILE, parseIndexList, type LoadIndexFile } from './files.ts';

/** The package's static/indexes/. */
export const STATIC_INDEXES_DIR = fileURLToPath(new URL('../../../static/indexes/', import.meta.url));

async function readOrExplain(path: string, what: string): Promise<Uint8Array> {
  try {
    const bytes = await readFile(path);
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new DraftSpecError(`${what}: ${code === 'ENOENT' ? `no such file ${path}` : `cannot read ${path} (${(error as Error).message})`}`);
  }
}

/** A loader over the index directory `root` (default: the package's static/indexes/). */
export function nodeIndexLoader(root: string = STATIC_INDEXES_DIR): LoadIndexFile {
  return async (id, file) => {
    let resolved = id;
    if (id === '') {
      const listPath = join(root, INDEX_LIST_FILE);
      const text = new TextDecoder().decode(await readOrExplain(listPath, 'default token index'));
      resolved = parseIndexList(text, listPath).default;
    }
    checkIndexPath(resolved, file);
    return readOrExplain(join(root, resolved, file), `token index ${JSON.stringify(resolved)}`);
  };
}

/** DrafterEnv.loadIndex over the package's static/indexes/. */
export const loadIndexFile: LoadIndexFile = nodeIndexLoader();
