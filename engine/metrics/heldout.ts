/**
 * Held-out text for the phenomena measurements (static/data/heldout.json: documents the models
 * never trained on). Everything here is seeded and framework-free: the CLI reads the file, the UI
 * fetches it, and both hand the documents' texts to these helpers.
 */
import { Xoshiro128 } from '../sampling.ts';

/** What the helpers need of a tokenizer (KvTokenizer fits): `encode` adds BOS when the model wants it. */
export interface TokenEncoder {
  encode(text: string): number[];
}

/** Token ids of `text` without the BOS the tokenizer may prepend. */
export function encodeBare(tokenizer: TokenEncoder, text: string): number[] {
  const bos = tokenizer.encode('').length;
  return tokenizer.encode(text).slice(bos);
}

/** The BOS prefix the tokenizer prepends to every text ([] when the model adds none). */
export function bosPrefix(tokenizer: TokenEncoder): number[] {
  return tokenizer.encode('');
}

/** Uniform integer in [0, n) from the generator. */
export function randomIndex(rng: Xoshiro128, n: number): number {
  return Math.min(n - 1, Math.floor(rng.nextFloat() * n));
}

/**
 * Windows of exactly `tokens` ids for perplexity / attention-sink style measurements: each starts
 * with BOS (when the model adds one) at a seeded document start and continues through the
 * following documents (joined by a blank line) until the window is full. The text is encoded
 * once per window, so merges across document joins are real tokenizations.
 */
export function heldoutWindows(
  tokenizer: TokenEncoder,
  documents: readonly string[],
  options: { windows: number; tokens: number; seed: number },
): number[][] {
  const usable = documents.filter((d) => d.trim().length > 0);
  if (usable.length === 0) throw new RangeError('held-out text has no non-empty documents');
  const rng = new Xoshiro128(options.seed);
  const windows: number[][] = [];
  for (let w = 0; w < options.windows; w++) {
    const first = randomIndex(rng, usable.length);
    let text = '';
    let ids: number[] = [];
    // ~3 characters per token is a safe lower bound for English BPE; re-encode when short.
    for (let k = 0; ids.length < options.tokens; k++) {
      if (k >= usable.length * 4) throw new RangeError(`held-out text is too short for a window of ${options.tokens} tokens`);
      text += (text === '' ? '' : '\n\n') + usable[(first + k) % usable.length];
      if (text.length >= options.tokens * 2) ids = tokenizer.encode(text);
    }
    windows.push(ids.slice(0, options.tokens));
  }
  return windows;
}

/**
 * Filler sentences exactly as training/prepare_corpus.py `sentences_of` picks them: documents with
 * newlines turned into spaces, split after . ! or ? followed by whitespace, kept when 20–200
 * characters long (code points) and free of digits (any Unicode decimal digit, like Python's \d).
 */
export function fillerSentences(documents: readonly string[]): string[] {
  const out: string[] = [];
  for (const doc of documents) {
    for (const sentence of doc.replace(/\n/g, ' ').split(/(?<=[.!?])\s+/u)) {
      const length = [...sentence].length;
      if (length >= 20 && length <= 200 && !/\p{Nd}/u.test(sentence)) out.push(sentence.trim());
    }
  }
  return out;
}
