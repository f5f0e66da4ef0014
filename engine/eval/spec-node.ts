/** Node side of the speculative evaluation: the held-out documents with their sources. */
import { readFile } from 'node:fs/promises';
import { KvscopeError } from '../errors.ts';
import { heldoutDocuments, type HeldoutDocument } from '../spec/ngram/heldout-split.ts';

/** {documents: [{src, text}]} of a held-out file (src tells the text sets apart). */
export async function readHeldoutDocuments(path: string): Promise<HeldoutDocument[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new KvscopeError(`cannot read held-out text ${path}: ${code === 'ENOENT' ? 'no such file' : (error as Error).message}`);
  }
  try {
    return heldoutDocuments(json).filter((d) => d.text.length > 0);
  } catch (error) {
    if (error instanceof TypeError) throw new KvscopeError(`${path}: ${error.message.replace(/^held-out file: /, '')}`);
    throw error;
  }
}
