/**
 * What the ∞-gram drafter asks of a token index, and the ∞-gram itself (Liu et al. 2024,
 * "Infini-gram: Scaling Unbounded n-gram Language Models to a Trillion Tokens"): the next-token
 * distribution after the longest suffix of the context that occurs in the corpus.
 *
 * A corpus is its documents' token ids, each followed by a separator id (= vocabSize, outside the
 * vocabulary, like Infini-gram's 0xffff): no pattern spans two documents, and every occurrence
 * of a pattern is followed by a token or by its document's end. The ∞-gram counts only the
 * occurrences a token follows (Infini-gram's denominator likewise leaves out matches at a
 * document's end), so "the longest suffix with count > 0" always gives a real distribution.
 */

export type TokenCorpus = Uint16Array | Uint32Array;

export type IndexVariant = 'suffix-array' | 'fm-index';

/** The tokens that follow a pattern in the corpus, in increasing id order, and how often. */
export interface NextTokenCounts {
  tokens: number[];
  counts: number[];
  /** sum of counts: occurrences of the pattern followed by a token */
  total: number;
}

export interface TokenIndex {
  readonly variant: IndexVariant;
  readonly vocabSize: number;
  /** corpus length in tokens, document separators included */
  readonly tokenCount: number;
  /** bytes of what a query reads: corpus + suffix array, or the FM-index's structures */
  readonly bytes: number;
  /** occurrences of the pattern (a token sequence without separators) */
  count(pattern: readonly number[]): number;
  /** occurrences of the pattern followed by a token, not a document's end */
  continuationCount(pattern: readonly number[]): number;
  nextTokens(pattern: readonly number[]): NextTokenCounts;
  /** corpus positions where the pattern starts, ascending: at most `limit` of them (which ones is the index's choice) */
  locate(pattern: readonly number[], limit: number): number[];
}

/** What the ∞-gram reads of a corpus: a TokenIndex, or one with the text so far added (context-tokens.ts). */
export type NgramSource = Pick<TokenIndex, 'continuationCount' | 'nextTokens'>;

/** The separator id after every document (one past the vocabulary). */
export function documentSeparator(vocabSize: number): number {
  return vocabSize;
}

/** Token width of a corpus: 16 bits while the vocabulary and its separator fit. */
export function corpusArray(vocabSize: number, length: number): TokenCorpus {
  return vocabSize + 1 <= 0x10000 ? new Uint16Array(length) : new Uint32Array(length);
}

/** Documents (token ids) joined into one corpus, each followed by the separator. */
export function buildCorpus(documents: readonly (readonly number[])[], vocabSize: number): TokenCorpus {
  const length = documents.reduce((sum, doc) => sum + doc.length + 1, 0);
  const corpus = corpusArray(vocabSize, length);
  const separator = documentSeparator(vocabSize);
  let at = 0;
  for (const doc of documents) {
    for (const token of doc) {
      if (!Number.isInteger(token) || token < 0 || token >= vocabSize) throw new RangeError(`token ${token} is outside the vocabulary 0..${vocabSize - 1}`);
      corpus[at++] = token;
    }
    corpus[at++] = separator;
  }
  return corpus;
}

export interface InfiniGramOptions {
  /** the fewest continuations a suffix needs to count as matching (Infini-gram: 1, "count > 0") */
  minCount?: number;
  /** the longest suffix tried (default: the whole context) */
  maxLength?: number;
}

export interface InfiniGramMatch extends NextTokenCounts {
  /** tokens of the longest matching suffix (n − 1 of the effective n-gram) */
  suffixLength: number;
}

/**
 * The longest suffix of `context` with at least minCount continuations. The continuation count
 * never grows as the suffix grows (each occurrence of a longer suffix is one of the shorter), so
 * galloping then bisecting finds it with O(log L) index queries instead of L.
 */
export function longestMatchingSuffix(index: NgramSource, context: readonly number[], options: InfiniGramOptions = {}): number {
  const minCount = Math.max(1, options.minCount ?? 1);
  const limit = Math.min(options.maxLength ?? context.length, context.length);
  const matches = (length: number) => index.continuationCount(context.slice(context.length - length)) >= minCount;
  if (limit < 1 || !matches(1)) return 0;
  let good = 1;
  let bad = limit + 1;
  for (let length = 2; length <= limit; length *= 2) {
    if (!matches(length)) {
      bad = length;
      break;
    }
    good = length;
  }
  while (bad - good > 1) {
    const mid = (good + bad) >>> 1;
    if (matches(mid)) good = mid;
    else bad = mid;
  }
  return good;
}

/** The ∞-gram's next-token counts for `context`; null when not even its last token matches. */
export function infiniGram(index: NgramSource, context: readonly number[], options: InfiniGramOptions = {}): InfiniGramMatch | null {
  const suffixLength = longestMatchingSuffix(index, context, options);
  if (suffixLength === 0) return null;
  return { suffixLength, ...index.nextTokens(context.slice(context.length - suffixLength)) };
}

/** Counts as a full distribution over the vocabulary (what a drafter's q must be). */
export function countsToDistribution(counts: NextTokenCounts, vocabSize: number): Float64Array {
  const q = new Float64Array(vocabSize);
  for (let i = 0; i < counts.tokens.length; i++) q[counts.tokens[i]] = counts.counts[i] / counts.total;
  return q;
}
