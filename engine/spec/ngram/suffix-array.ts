/**
 * The Infini-gram index (Liu et al. 2024, "Infini-gram: Scaling Unbounded n-gram Language Models
 * to a Trillion Tokens"): the corpus's token ids and a suffix array over them. A pattern's
 * occurrences are one contiguous range of the array (two binary searches), and inside that range
 * the suffixes are sorted by the token after the pattern, so the next-token counts are runs that
 * binary searches step over: O(k log n) for k distinct next tokens however common the pattern —
 * Infini-gram's own way, so no enumeration cap is needed.
 */
import { documentSeparator, type IndexVariant, type NextTokenCounts, type TokenCorpus, type TokenIndex } from './token-index.ts';

/**
 * Suffix array by prefix doubling with radix sorts (Manber & Myers 1993): O(n log n) in the
 * worst case, and natural text stops after log2(longest repeat) rounds. A suffix that runs out
 * sorts before every longer one starting the same way.
 */
export function buildSuffixArray(text: ArrayLike<number>, alphabetSize: number): Uint32Array {
  const n = text.length;
  const sa = new Uint32Array(n);
  if (n === 0) return sa;
  let rank = new Int32Array(n);
  let next = new Int32Array(n);
  const bySecond = new Int32Array(n);
  const count = new Int32Array(Math.max(alphabetSize, n) + 1);
  for (let i = 0; i < n; i++) count[text[i]]++;
  for (let c = 1; c < count.length; c++) count[c] += count[c - 1];
  for (let i = n - 1; i >= 0; i--) sa[--count[text[i]]] = i;
  let classes = 0;
  rank[sa[0]] = 0;
  for (let j = 1; j < n; j++) {
    if (text[sa[j]] !== text[sa[j - 1]]) classes++;
    rank[sa[j]] = classes;
  }
  classes++;
  for (let k = 1; classes < n; k *= 2) {
    // second key rank[i + k]: the suffixes with nothing k tokens on come first, then sa's order
    let p = 0;
    for (let i = n - k; i < n; i++) bySecond[p++] = i;
    for (let j = 0; j < n; j++) if (sa[j] >= k) bySecond[p++] = sa[j] - k;
    count.fill(0, 0, classes + 1);
    for (let i = 0; i < n; i++) count[rank[i]]++;
    for (let c = 1; c < classes; c++) count[c] += count[c - 1];
    for (let j = n - 1; j >= 0; j--) {
      const i = bySecond[j];
      sa[--count[rank[i]]] = i;
    }
    const secondRank = (i: number) => (i + k < n ? rank[i + k] : -1);
    next[sa[0]] = 0;
    let c = 0;
    for (let j = 1; j < n; j++) {
      const a = sa[j - 1];
      const b = sa[j];
      if (rank[a] !== rank[b] || secondRank(a) !== secondRank(b)) c++;
      next[b] = c;
    }
    [rank, next] = [next, rank];
    classes = c + 1;
  }
  return sa;
}

export class SuffixArrayIndex implements TokenIndex {
  readonly variant: IndexVariant = 'suffix-array';

  constructor(
    readonly corpus: TokenCorpus,
    readonly suffixArray: Uint32Array,
    readonly vocabSize: number,
  ) {
    if (suffixArray.length !== corpus.length) throw new RangeError(`suffix array has ${suffixArray.length} entries for ${corpus.length} tokens`);
  }

  static build(corpus: TokenCorpus, vocabSize: number): SuffixArrayIndex {
    return new SuffixArrayIndex(corpus, buildSuffixArray(corpus, vocabSize + 1), vocabSize);
  }

  get tokenCount(): number {
    return this.corpus.length;
  }

  get bytes(): number {
    return this.corpus.byteLength + this.suffixArray.byteLength;
  }

  /** The suffix at `position` against the pattern: < 0 before it, 0 starting with it, > 0 after it. */
  private compare(position: number, pattern: readonly number[]): number {
    const corpus = this.corpus;
    for (let j = 0; j < pattern.length; j++) {
      if (position + j >= corpus.length) return -1;
      const d = corpus[position + j] - pattern[j];
      if (d !== 0) return d;
    }
    return 0;
  }

  /** Rows [from, to) of the suffixes that start with the pattern. */
  range(pattern: readonly number[]): [number, number] {
    const sa = this.suffixArray;
    let lo = 0;
    let hi = sa.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.compare(sa[mid], pattern) < 0) lo = mid + 1;
      else hi = mid;
    }
    const from = lo;
    hi = sa.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.compare(sa[mid], pattern) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return [from, lo];
  }

  /** The token `offset` after the suffix in `row` (−1 past the corpus's end). */
  private tokenAfter(row: number, offset: number): number {
    const at = this.suffixArray[row] + offset;
    return at < this.corpus.length ? this.corpus[at] : -1;
  }

  /** The first row in [from, to) whose token `offset` on is ≥ value (they are sorted in the range). */
  private firstAtLeast(from: number, to: number, offset: number, value: number): number {
    while (from < to) {
      const mid = (from + to) >>> 1;
      if (this.tokenAfter(mid, offset) < value) from = mid + 1;
      else to = mid;
    }
    return from;
  }

  /** Rows of the pattern's occurrences followed by a token: neither the corpus's end nor a separator. */
  private continuedRange(pattern: readonly number[]): [number, number] {
    const [from, to] = this.range(pattern);
    if (from === to) return [from, to];
    const m = pattern.length;
    return [this.firstAtLeast(from, to, m, 0), this.firstAtLeast(from, to, m, documentSeparator(this.vocabSize))];
  }

  count(pattern: readonly number[]): number {
    const [from, to] = this.range(pattern);
    return to - from;
  }

  continuationCount(pattern: readonly number[]): number {
    const [from, to] = this.continuedRange(pattern);
    return to - from;
  }

  nextTokens(pattern: readonly number[]): NextTokenCounts {
    const [from, to] = this.continuedRange(pattern);
    const m = pattern.length;
    const tokens: number[] = [];
    const counts: number[] = [];
    for (let row = from; row < to; ) {
      const token = this.tokenAfter(row, m);
      const end = this.firstAtLeast(row + 1, to, m, token + 1);
      tokens.push(token);
      counts.push(end - row);
      row = end;
    }
    return { tokens, counts, total: to - from };
  }

  locate(pattern: readonly number[], limit: number): number[] {
    const [from, to] = this.range(pattern);
    return Array.from(this.suffixArray.subarray(from, Math.min(to, from + Math.max(0, limit)))).sort((a, b) => a - b);
  }
}
