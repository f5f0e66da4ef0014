/**
 * tokenizer.json of an untrusted folder, checked before and after the tokenizer is built.
 *
 * Before: the vocabulary, merges and added tokens are well-formed and every id fits the model's
 * architecture.vocab_size (an id past it would index past the embedding and the logits; tokenizers.js
 * would also size its id → token table by the largest id). After: the manifest's special ids are
 * tokens of it, and a probe text encodes to at least one token and decodes back (an empty
 * vocabulary once encoded every prompt to nothing but BOS, silently).
 */
import { ModelError } from '../errors.ts';
import { isObject } from '../json.ts';
import { describeValue, type Manifest } from './manifest.ts';
import { quote } from './paths.ts';
import type { KvTokenizer } from './tokenizer.ts';

/** Lowercase ASCII words, punctuation and digits: what any usable tokenizer round-trips. */
export const TOKENIZER_PROBE_TEXT = 'the quick brown fox, 42 times.';

const MAX_MERGES = 4 * 1_048_576;
const MODEL_TYPES: readonly string[] = ['BPE', 'WordPiece', 'WordLevel', 'Unigram'];

function isTokenId(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0;
}

/** The token → id pairs of model.vocab: an object (BPE, WordPiece, WordLevel) or [piece, score] pairs (Unigram). */
function vocabEntries(file: string, vocab: unknown): [string, number][] {
  if (isObject(vocab)) {
    return Object.entries(vocab).map(([token, id]): [string, number] => {
      if (!isTokenId(id)) throw new ModelError(`${file}: model.vocab gives ${quote(token)} the id ${describeValue(id)}, not an integer ≥ 0`);
      return [token, id];
    });
  }
  if (Array.isArray(vocab)) {
    return vocab.map((entry, i): [string, number] => {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string' || typeof entry[1] !== 'number' || !Number.isFinite(entry[1])) {
        throw new ModelError(`${file}: model.vocab[${i}] must be a [piece, score] pair`);
      }
      return [entry[0], i];
    });
  }
  throw new ModelError(`${file}: model.vocab must be an object of token → id (or Unigram [piece, score] pairs), got ${describeValue(vocab)}`);
}

/** Structure and id ranges of a parsed tokenizer.json, before tokenizers.js sees it. */
export function checkTokenizerJson(json: unknown, manifest: Manifest): void {
  const file = manifest.tokenizer.file;
  const vocabSize = manifest.architecture.vocab_size;
  if (!isObject(json) || !isObject(json.model)) throw new ModelError(`${file}: not a Hugging Face tokenizer.json (no "model" object)`);
  const model = json.model;
  // tokenizers.js builds a BPE model for a type it does not know: say so instead
  if (model.type !== undefined && !MODEL_TYPES.includes(model.type as string)) {
    throw new ModelError(`${file}: model.type must be one of ${MODEL_TYPES.join(', ')}, got ${describeValue(model.type)}`);
  }

  const entries = vocabEntries(file, model.vocab);
  if (entries.length === 0) throw new ModelError(`${file}: model.vocab is empty (every prompt would encode to no tokens)`);
  if (entries.length > vocabSize) {
    throw new ModelError(`${file}: model.vocab has ${entries.length} tokens, more than manifest.json's architecture.vocab_size (${vocabSize})`);
  }
  const tokenOf = new Map<number, string>();
  for (const [token, id] of entries) {
    if (id >= vocabSize) {
      throw new ModelError(`${file}: model.vocab gives ${quote(token)} the id ${id}, outside manifest.json's architecture.vocab_size (${vocabSize})`);
    }
    const other = tokenOf.get(id);
    if (other !== undefined) throw new ModelError(`${file}: model.vocab gives the id ${id} to both ${quote(other)} and ${quote(token)}`);
    tokenOf.set(id, token);
  }

  if (model.merges !== undefined && model.merges !== null) {
    if (!Array.isArray(model.merges)) throw new ModelError(`${file}: model.merges must be an array, got ${describeValue(model.merges)}`);
    if (model.merges.length > MAX_MERGES) throw new ModelError(`${file}: model.merges has ${model.merges.length} entries, more than ${MAX_MERGES}`);
    model.merges.forEach((merge, i) => {
      const pair = typeof merge === 'string' ? merge.split(' ') : merge;
      if (!Array.isArray(pair) || pair.length !== 2 || !pair.every((part) => typeof part === 'string' && part.length > 0)) {
        throw new ModelError(`${file}: model.merges[${i}] must be "left right" or ["left", "right"], got ${describeValue(merge)}`);
      }
    });
  }

  const added = json.added_tokens;
  if (added !== undefined && added !== null) {
    if (!Array.isArray(added)) throw new ModelError(`${file}: added_tokens must be an array, got ${describeValue(added)}`);
    if (added.length > vocabSize) throw new ModelError(`${file}: added_tokens has ${added.length} entries, more than architecture.vocab_size (${vocabSize})`);
    const addedIds = new Set<number>();
    added.forEach((token, i) => {
      if (!isObject(token)) throw new ModelError(`${file}: added_tokens[${i}] must be an object, got ${describeValue(token)}`);
      if (!isTokenId(token.id) || token.id >= vocabSize) {
        throw new ModelError(`${file}: added_tokens[${i}].id must be an integer from 0 to ${vocabSize - 1} (architecture.vocab_size − 1), got ${describeValue(token.id)}`);
      }
      if (typeof token.content !== 'string' || token.content.length === 0) {
        throw new ModelError(`${file}: added_tokens[${i}].content must be a non-empty string, got ${describeValue(token.content)}`);
      }
      if (addedIds.has(token.id)) throw new ModelError(`${file}: added_tokens lists the id ${token.id} twice`);
      addedIds.add(token.id);
      // an added token may lie past model.vocab, but not rename one of its tokens
      const inVocab = tokenOf.get(token.id);
      if (inVocab !== undefined && inVocab !== token.content) {
        throw new ModelError(`${file}: added_tokens[${i}] gives the id ${token.id} to ${quote(token.content)}, which model.vocab gives to ${quote(inVocab)}`);
      }
    });
  }
}

/**
 * Text with runs of whitespace as one space, none before punctuation and none at the ends: a
 * WordPiece decoder without cleanup gives "fox , 42 times ." for "fox, 42 times." and is still faithful.
 */
export function spacingNormalised(text: string): string {
  return text.replace(/\s+/g, ' ').replace(/ (?=[.,!?;:])/g, '').trim();
}

/** The built tokenizer against the manifest: special ids are tokens, the probe text round-trips. */
export function probeTokenizer(tokenizer: KvTokenizer, manifest: Manifest): void {
  const { file, bos_id, eos_id, pad_id } = manifest.tokenizer;
  const special: [string, number | null][] = [['bos_id', bos_id], ['eos_id', eos_id], ['pad_id', pad_id]];
  for (const [key, id] of special) {
    if (id !== null && tokenizer.rawToken(id) === undefined) throw new ModelError(`${file}: has no token with manifest.json's tokenizer.${key} (${id})`);
  }
  let ids: number[];
  let text: string;
  try {
    ids = tokenizer.encode(TOKENIZER_PROBE_TEXT);
    if (tokenizer.addBos) ids = ids.slice(1);
    text = ids.length > 0 ? tokenizer.decode(ids) : '';
  } catch (error) {
    throw new ModelError(`${file}: cannot encode the probe text ${quote(TOKENIZER_PROBE_TEXT)} (${(error as Error).message})`);
  }
  if (ids.length === 0) throw new ModelError(`${file}: encodes the probe text ${quote(TOKENIZER_PROBE_TEXT)} to no tokens`);
  const outside = ids.find((id) => !isTokenId(id) || id >= manifest.architecture.vocab_size);
  if (outside !== undefined) {
    throw new ModelError(`${file}: encodes the probe text to the id ${outside}, outside manifest.json's architecture.vocab_size (${manifest.architecture.vocab_size})`);
  }
  if (spacingNormalised(text) !== spacingNormalised(TOKENIZER_PROBE_TEXT)) {
    throw new ModelError(`${file}: the probe text ${quote(TOKENIZER_PROBE_TEXT)} encodes to ${ids.length} tokens that decode to ${quote(text)}, not back to it`);
  }
}
