/**
 * The Infini-gram mini index (Xu et al. 2025, "Infini-gram mini: Exact n-gram Search at the
 * Internet Scale with FM-Index"; Ferragina & Manzini 2000): the Burrows–Wheeler transform of the
 * corpus in a wavelet matrix (its rank counts are the sampled occurrence table), the symbol
 * counts C, and a suffix array sampled every `sampleRate` text positions for locating matches.
 * The corpus itself is not kept: the index replaces it.
 *
 * Built over the *reversed* corpus, so that backward search reads a pattern left to right and
 * the BWT symbols in a pattern's row range are exactly the tokens that follow its occurrences in
 * the corpus: the next-token counts are the range's distinct symbols, which the wavelet matrix
 * lists in O(k log σ) without locating anything. (Over the forward corpus one would need one
 * backward search of pattern + c per candidate c.) Symbols are the corpus's distinct tokens
 * renumbered 1..k in id order, 0 the terminator, so levels = ⌈log2(k + 1)⌉ rather than log2 of
 * the whole vocabulary.
 */
import { RankBitVector, WaveletMatrix } from './wavelet-matrix.ts';
import { buildSuffixArray } from './suffix-array.ts';
import { documentSeparator, type IndexVariant, type NextTokenCounts, type TokenCorpus, type TokenIndex } from './token-index.ts';

/** Default suffix-array sample: locating walks at most this many LF steps per occurrence. */
export const DEFAULT_SAMPLE_RATE = 32;

/** What an FM-index is made of: what the file stores (format.ts). */
export interface FmIndexParts {
  vocabSize: number;
  /** corpus tokens (the BWT has one more row: the terminator's) */
  tokenCount: number;
  sampleRate: number;
  /** the corpus's distinct token ids, ascending: symbol s ≥ 1 is alphabet[s − 1] */
  alphabet: Uint32Array;
  /** C[s]: BWT symbols smaller than s (length symbols + 1) */
  symbolStarts: Uint32Array;
  bwt: WaveletMatrix;
  /** rows whose suffix position is a multiple of sampleRate */
  sampledRows: RankBitVector;
  /** those suffix positions / sampleRate, in row order */
  samples: Uint32Array;
}

export class FmIndex implements TokenIndex {
  readonly variant: IndexVariant = 'fm-index';
  /** token id → symbol (0: the token does not occur) */
  private readonly symbolOf: Uint16Array | Uint32Array;
  private readonly separatorSymbol: number;
  /** C[s] minus where s's block begins after the wavelet matrix's last level (there rank_s(i) = descend(s, i) − start) */
  private readonly rowBase: Int32Array;

  constructor(readonly parts: FmIndexParts) {
    const { alphabet, vocabSize } = parts;
    this.symbolOf = alphabet.length < 0x10000 ? new Uint16Array(vocabSize + 1) : new Uint32Array(vocabSize + 1);
    alphabet.forEach((token, i) => (this.symbolOf[token] = i + 1));
    this.separatorSymbol = this.symbolOf[documentSeparator(vocabSize)];
    this.rowBase = new Int32Array(alphabet.length + 1);
    for (let s = 0; s <= alphabet.length; s++) this.rowBase[s] = parts.symbolStarts[s] - parts.bwt.descend(s, 0);
  }

  /** LF-mapping part of backward search: C[s] + rank_s(i). */
  private extend(symbol: number, i: number): number {
    return this.rowBase[symbol] + this.parts.bwt.descend(symbol, i);
  }

  static build(corpus: TokenCorpus, vocabSize: number, sampleRate = DEFAULT_SAMPLE_RATE): FmIndex {
    const n = corpus.length;
    const alphabet = Uint32Array.from(new Set(corpus)).sort();
    const symbolOf = new Map<number, number>();
    alphabet.forEach((token, i) => symbolOf.set(token, i + 1));
    const reversed = new Uint32Array(n);
    for (let i = 0; i < n; i++) reversed[i] = symbolOf.get(corpus[n - 1 - i])!;
    // rows 1..n: the reversed corpus's suffixes; row 0: the terminator's (the smallest symbol)
    const sa = buildSuffixArray(reversed, alphabet.length + 1);
    const rows = n + 1;
    const suffixAt = (row: number) => (row === 0 ? n : sa[row - 1]);
    const bwt = new Uint32Array(rows);
    const marks = new Uint32Array(RankBitVector.wordsFor(rows));
    const samples: number[] = [];
    for (let row = 0; row < rows; row++) {
      const position = suffixAt(row);
      bwt[row] = position === 0 ? 0 : reversed[position - 1];
      if (position % sampleRate === 0) {
        marks[row >>> 5] |= 1 << (row & 31);
        samples.push(position / sampleRate);
      }
    }
    const symbolStarts = new Uint32Array(alphabet.length + 2);
    for (let row = 0; row < rows; row++) symbolStarts[bwt[row] + 1]++;
    for (let s = 1; s < symbolStarts.length; s++) symbolStarts[s] += symbolStarts[s - 1];
    const levels = Math.max(1, Math.ceil(Math.log2(alphabet.length + 1)));
    return new FmIndex({
      vocabSize,
      tokenCount: n,
      sampleRate,
      alphabet,
      symbolStarts,
      bwt: WaveletMatrix.build(bwt, levels),
      sampledRows: new RankBitVector(marks, rows),
      samples: Uint32Array.from(samples),
    });
  }

  get vocabSize(): number {
    return this.parts.vocabSize;
  }

  get tokenCount(): number {
    return this.parts.tokenCount;
  }

  get bytes(): number {
    const p = this.parts;
    return p.bwt.bytes + p.alphabet.byteLength + p.symbolStarts.byteLength + p.sampledRows.bytes + p.samples.byteLength + this.symbolOf.byteLength + this.rowBase.byteLength;
  }

  /** BWT rows [from, to) of the pattern (backward search over the reversed corpus). */
  range(pattern: readonly number[]): [number, number] {
    let from = 0;
    let to = this.parts.bwt.length;
    for (const token of pattern) {
      const symbol = token >= 0 && token < this.symbolOf.length ? this.symbolOf[token] : 0;
      if (symbol === 0) return [0, 0];
      from = this.extend(symbol, from);
      to = this.extend(symbol, to);
      if (from >= to) return [0, 0];
    }
    return [from, to];
  }

  count(pattern: readonly number[]): number {
    const [from, to] = this.range(pattern);
    return to - from;
  }

  continuationCount(pattern: readonly number[]): number {
    const [from, to] = this.range(pattern);
    if (from === to) return 0;
    const ended = (this.separatorSymbol > 0 ? this.parts.bwt.rangeCount(this.separatorSymbol, from, to) : 0) + this.parts.bwt.rangeCount(0, from, to);
    return to - from - ended;
  }

  nextTokens(pattern: readonly number[]): NextTokenCounts {
    const [from, to] = this.range(pattern);
    const tokens: number[] = [];
    const counts: number[] = [];
    let total = 0;
    if (from === to) return { tokens, counts, total };
    for (const { symbol, count } of this.parts.bwt.rangeSymbols(from, to)) {
      if (symbol === 0 || symbol === this.separatorSymbol) continue; // the document (or corpus) ends here
      tokens.push(this.parts.alphabet[symbol - 1]);
      counts.push(count);
      total += count;
    }
    return { tokens, counts, total };
  }

  /** Position in the reversed corpus of the suffix in `row`: LF steps back to a sampled row. */
  private reversedPosition(row: number): number {
    const { bwt, sampledRows, samples, sampleRate } = this.parts;
    let steps = 0;
    while (!sampledRows.get(row)) {
      row = this.extend(bwt.access(row), row);
      steps++;
    }
    return samples[sampledRows.rank1(row)] * sampleRate + steps;
  }

  locate(pattern: readonly number[], limit: number): number[] {
    const [from, to] = this.range(pattern);
    const n = this.parts.tokenCount;
    const positions: number[] = [];
    for (let row = from; row < Math.min(to, from + Math.max(0, limit)); row++) {
      // the reversed pattern starts at p in the reversed corpus ⇔ the pattern starts at n − p − m
      positions.push(n - this.reversedPosition(row) - pattern.length);
    }
    return positions.sort((a, b) => a - b);
  }
}
