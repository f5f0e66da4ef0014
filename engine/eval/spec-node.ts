/** Node side of the speculative evaluation: the held-out documents with their sources. */
import { readHeldoutJson } from '../cli/models.ts';
import { KvscopeError } from '../errors.ts';
import { heldoutDocuments, type HeldoutDocument } from '../spec/ngram/heldout-split.ts';

/** {documents: [{src, text}]} of a held-out file (src tells the text sets apart). */
export async function readHeldoutDocuments(path: string): Promise<HeldoutDocument[]> {
  const json = await readHeldoutJson(path);
  try {
    return heldoutDocuments(json).filter((d) => d.text.length > 0);
  } catch (error) {
    if (error instanceof TypeError) throw new KvscopeError(`${path}: ${error.message.replace(/^held-out file: /, '')}`);
    throw error;
  }
}
