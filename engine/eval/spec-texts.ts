/**
 * The text sets of the speculative evaluation: held-out documents (static/data/heldout.json, each
 * {src, text}) grouped as "python-doc" (the Python documentation: code, repeated identifiers — what
 * n-gram drafters are good at) and "prose" (fortunes, the Bible, dictionary entries).
 */
import { splitHeldout, type HeldoutDocument } from '../spec/ngram/heldout-split.ts';

export type { HeldoutDocument } from '../spec/ngram/heldout-split.ts';

export const SPEC_TEXT_SETS = ['prose', 'python-doc'] as const;
export type SpecTextSet = (typeof SPEC_TEXT_SETS)[number];

export function textSetOf(src: string): SpecTextSet {
  return src === 'python-doc' ? 'python-doc' : 'prose';
}

/**
 * The documents prompts are drawn from: the evaluation half of the held-out split, since the
 * shipped ∞-gram index is built from the other half and must never be evaluated on text it holds.
 */
export function evaluationDocuments(documents: readonly HeldoutDocument[]): readonly HeldoutDocument[] {
  return splitHeldout(documents).evaluation;
}
