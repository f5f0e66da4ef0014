/**
 * Rank-able bit vectors and a wavelet matrix (Claude, Navarro & Ordóñez 2015, "The wavelet
 * matrix: An efficient wavelet tree for large alphabets"): the occurrence structure of the
 * FM-index (fm-index.ts). A flat occurrence table of σ counters every few rows would cost
 * σ × 4 bytes per sample, far more than the text at σ ≈ 4k tokens; a wavelet matrix answers
 * rank_c(i) over the same alphabet with ⌈log2 σ⌉ bits per symbol plus sampled rank counts.
 * Infini-gram mini uses Huffman-shaped wavelet trees (sdsl); a plain matrix keeps this small
 * and still beats corpus + suffix array by about 3×.
 */

/** popcount of a 32-bit word (SWAR). */
function popcount32(word: number): number {
  let x = word - ((word >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

/** Words per rank sample: one 32-bit count every 256 bits (12.5 % over the bits), ≤ 8 popcounts a rank. */
export const WORDS_PER_RANK_SAMPLE = 8;

/** A fixed bit vector with rank1 / rank0 over a prefix in O(1). */
export class RankBitVector {
  /** ones before each block of WORDS_PER_RANK_SAMPLE words (one extra entry: the total) */
  readonly samples: Uint32Array;

  constructor(
    readonly words: Uint32Array,
    readonly length: number,
    samples?: Uint32Array,
  ) {
    this.samples = samples ?? RankBitVector.sampleRanks(words);
  }

  static sampleRanks(words: Uint32Array): Uint32Array {
    const blocks = Math.ceil(words.length / WORDS_PER_RANK_SAMPLE);
    const samples = new Uint32Array(blocks + 1);
    let ones = 0;
    for (let w = 0; w < words.length; w++) {
      if (w % WORDS_PER_RANK_SAMPLE === 0) samples[w / WORDS_PER_RANK_SAMPLE] = ones;
      ones += popcount32(words[w]);
    }
    samples[blocks] = ones;
    return samples;
  }

  static wordsFor(length: number): number {
    return Math.ceil(length / 32);
  }

  get(i: number): number {
    return (this.words[i >>> 5] >>> (i & 31)) & 1;
  }

  /** ones in [0, i) */
  rank1(i: number): number {
    const word = i >>> 5;
    const block = (word / WORDS_PER_RANK_SAMPLE) | 0;
    let ones = this.samples[block];
    for (let w = block * WORDS_PER_RANK_SAMPLE; w < word; w++) ones += popcount32(this.words[w]);
    const bit = i & 31;
    if (bit !== 0) ones += popcount32(this.words[word] & ((1 << bit) - 1));
    return ones;
  }

  rank0(i: number): number {
    return i - this.rank1(i);
  }

  get bytes(): number {
    return this.words.byteLength + this.samples.byteLength;
  }
}

/** One symbol and how often it occurs in a range. */
export interface SymbolCount {
  symbol: number;
  count: number;
}

/**
 * A wavelet matrix over symbols in [0, 2^levels): level ℓ holds bit (levels − 1 − ℓ) of every
 * symbol in the order the previous level's stable zeros-then-ones partition left them.
 */
export class WaveletMatrix {
  constructor(
    readonly length: number,
    readonly levels: number,
    readonly bits: readonly RankBitVector[],
    /** zeros at each level (where that level's ones start in the next) */
    readonly zeros: Uint32Array,
  ) {}

  static build(symbols: Uint32Array, levels: number): WaveletMatrix {
    const n = symbols.length;
    let current = symbols.slice();
    let next = new Uint32Array(n);
    const bits: RankBitVector[] = [];
    const zeros = new Uint32Array(levels);
    for (let level = 0; level < levels; level++) {
      const shift = levels - 1 - level;
      const words = new Uint32Array(RankBitVector.wordsFor(n));
      let zeroCount = 0;
      for (let i = 0; i < n; i++) {
        if ((current[i] >>> shift) & 1) words[i >>> 5] |= 1 << (i & 31);
        else zeroCount++;
      }
      let z = 0;
      let o = zeroCount;
      for (let i = 0; i < n; i++) {
        if ((current[i] >>> shift) & 1) next[o++] = current[i];
        else next[z++] = current[i];
      }
      bits.push(new RankBitVector(words, n));
      zeros[level] = zeroCount;
      [current, next] = [next, current];
    }
    return new WaveletMatrix(n, levels, bits, zeros);
  }

  /** The symbol at position i. */
  access(i: number): number {
    let symbol = 0;
    for (let level = 0; level < this.levels; level++) {
      const bv = this.bits[level];
      const bit = bv.get(i);
      symbol = (symbol << 1) | bit;
      i = bit ? this.zeros[level] + bv.rank1(i) : bv.rank0(i);
    }
    return symbol;
  }

  /** Where position i lands after the last level when following `symbol`'s bits (rank_symbol(i) + that symbol's start there). */
  descend(symbol: number, i: number): number {
    for (let level = 0; level < this.levels; level++) {
      const bv = this.bits[level];
      i = (symbol >>> (this.levels - 1 - level)) & 1 ? this.zeros[level] + bv.rank1(i) : bv.rank0(i);
    }
    return i;
  }

  /** Occurrences of `symbol` in [from, to). */
  rangeCount(symbol: number, from: number, to: number): number {
    return this.descend(symbol, to) - this.descend(symbol, from);
  }

  /** Every distinct symbol of [from, to) with its count, in increasing symbol order: O(k · levels). */
  rangeSymbols(from: number, to: number, out: SymbolCount[] = []): SymbolCount[] {
    const visit = (level: number, lo: number, hi: number, prefix: number) => {
      if (lo >= hi) return;
      if (level === this.levels) {
        out.push({ symbol: prefix, count: hi - lo });
        return;
      }
      const bv = this.bits[level];
      const lo0 = bv.rank0(lo);
      const hi0 = bv.rank0(hi);
      visit(level + 1, lo0, hi0, prefix << 1);
      const z = this.zeros[level];
      visit(level + 1, z + (lo - lo0), z + (hi - hi0), (prefix << 1) | 1);
    };
    visit(0, from, to, 0);
    return out;
  }

  get bytes(): number {
    return this.bits.reduce((sum, bv) => sum + bv.bytes, 0) + this.zeros.byteLength;
  }
}
