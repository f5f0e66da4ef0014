/**
 * The split of the held-out documents (static/data/heldout.json) between the shipped ∞-gram index
 * and the evaluation of n-gram drafters: per source, documents at even positions go into the
 * index, odd ones are evaluated. An index that contained the evaluation text would match every
 * prompt to its end and measure nothing. scripts/build-default-index.ts and the benchmark both
 * call this, so they cannot drift apart.
 */

export interface HeldoutDocument {
  src: string;
  text: string;
}

export interface HeldoutSplit {
  index: HeldoutDocument[];
  evaluation: HeldoutDocument[];
}

/** Deterministic: the position within the document's own source decides, sources keep their order. */
export function splitHeldout(documents: readonly HeldoutDocument[]): HeldoutSplit {
  const seen = new Map<string, number>();
  const split: HeldoutSplit = { index: [], evaluation: [] };
  for (const doc of documents) {
    const position = seen.get(doc.src) ?? 0;
    seen.set(doc.src, position + 1);
    (position % 2 === 0 ? split.index : split.evaluation).push(doc);
  }
  return split;
}

/** The documents of a held-out JSON file ({documents: [{src, text}]}); throws naming what is missing. */
export function heldoutDocuments(json: unknown): HeldoutDocument[] {
  const docs = typeof json === 'object' && json !== null ? (json as { documents?: unknown }).documents : undefined;
  if (!Array.isArray(docs)) throw new TypeError('held-out file: expected {"documents": [{"src": …, "text": …}]}');
  return docs.map((doc, i) => {
    const { src, text } = (typeof doc === 'object' && doc !== null ? doc : {}) as { src?: unknown; text?: unknown };
    if (typeof src !== 'string' || typeof text !== 'string') throw new TypeError(`held-out file: document ${i} needs string "src" and "text"`);
    return { src, text };
  });
}
