/**
 * A static-model range coder (arithmetic coding with byte-wise renormalization): CacheGen's
 * entropy coder (policies/cachegen.ts), usable by any method that turns quantized codes into a
 * bitstream. No npm package fits (pure JS, maintained, static frequency tables), so it is written
 * here; the reference (UChi-JCL/CacheGen) uses torchac's CUDA arithmetic coder with 16-bit CDFs.
 *
 * Model: a FrequencyTable over symbols 0…size−1 (integer counts, total ≤ 2^16). The coder is the
 * LZMA-style carry-propagating range coder: 32-bit `range`, a `low` that may overflow 2^32 by one
 * carry bit (JS numbers hold it exactly), a pending byte + a run of 0xFF bytes that the carry
 * resolves. Per symbol s: r = ⌊range / total⌋, low += r·cum[s], range = r·freq[s]; while
 * range < 2^24 a byte leaves. The coded length is within total/2^24 bits per symbol of the ideal
 * −log2(freq/total) (≈ 2^−8 bits at the largest total), plus at most 4 bytes.
 *
 * Stream format: the bytes of the final code value, most significant first, without the leading
 * byte (always 0) and without trailing zero bytes (the decoder reads zeros past the end); the
 * flush picks the value in the last interval with the most trailing zeros. The symbol count is not
 * stored: the caller knows it (CacheGen: tokens × channels of a chunk). An empty input is 0 bytes.
 */

/** Largest table total: keeps r = ⌊range / total⌋ ≥ 2^8 after renormalization. */
export const MAX_TOTAL = 1 << 16;
const TOP = 2 ** 24;
const BYTE = 256;
const SPAN = 2 ** 32;

export interface FrequencyTable {
  /** number of symbols (0…size−1) */
  readonly size: number;
  readonly freq: Uint32Array;
  /** cum[s] = Σ freq[0…s−1]; cum[size] = total */
  readonly cum: Uint32Array;
  readonly total: number;
  /** symbol of each value 0…total−1 (decoding by lookup, else binary search), when asked for and total ≤ LOOKUP_MAX */
  readonly lookup: Uint8Array | Uint16Array | null;
}

/** Largest total whose table gets a decoding lookup (value → symbol). */
export const LOOKUP_MAX = 4096;

/**
 * The table of integer counts (≥ 0, total 1…2^16). A symbol of count 0 cannot be coded.
 * `lookup`: build the value → symbol lookup for decoding (when total ≤ LOOKUP_MAX).
 */
export function frequencyTable(counts: ArrayLike<number>, options: { lookup?: boolean } = {}): FrequencyTable {
  const size = counts.length;
  if (size < 1) throw new RangeError('a frequency table needs at least one symbol');
  const freq = new Uint32Array(size);
  const cum = new Uint32Array(size + 1);
  for (let s = 0; s < size; s++) {
    const c = counts[s];
    if (!Number.isInteger(c) || c < 0) throw new RangeError(`symbol ${s}: count must be an integer ≥ 0, got ${c}`);
    freq[s] = c;
    cum[s + 1] = cum[s] + c;
  }
  const total = cum[size];
  if (total < 1 || total > MAX_TOTAL) throw new RangeError(`frequency table total must be in 1…${MAX_TOTAL}, got ${total}`);
  let lookup: Uint8Array | Uint16Array | null = null;
  if (options.lookup && total <= LOOKUP_MAX) {
    lookup = size <= 256 ? new Uint8Array(total) : new Uint16Array(total);
    for (let s = 0; s < size; s++) if (freq[s] > 0) lookup.fill(s, cum[s], cum[s + 1]);
  }
  return { size, freq, cum, total, lookup };
}

/** How often each symbol 0…size−1 occurs. */
export function countSymbols(symbols: ArrayLike<number>, size: number, start = 0, length = symbols.length - start, stride = 1): Uint32Array {
  const counts = new Uint32Array(size);
  for (let k = 0, i = start; k < length; k++, i += stride) {
    const s = symbols[i];
    if (!(s >= 0 && s < size)) throw new RangeError(`symbol ${s} outside 0…${size - 1}`);
    counts[s]++;
  }
  return counts;
}

/** Σ −c·log2(c / n): the ideal code length in bits of a sequence with these counts (its empirical entropy × n). */
export function idealBits(counts: ArrayLike<number>): number {
  let n = 0;
  for (let s = 0; s < counts.length; s++) n += counts[s];
  let bits = 0;
  for (let s = 0; s < counts.length; s++) if (counts[s] > 0) bits -= counts[s] * Math.log2(counts[s] / n);
  return bits;
}

export class RangeEncoder {
  private low = 0;
  private range = SPAN - 1;
  private cache = 0;
  private cacheSize = 1;
  /** the first byte shifted out is always 0 and is not written */
  private first = true;
  private out = new Uint8Array(64);
  private length = 0;
  private done = false;

  encode(symbol: number, table: FrequencyTable): void {
    const f = table.freq[symbol];
    if (!(f > 0)) throw new RangeError(`symbol ${symbol} has no probability in the table (size ${table.size})`);
    const r = Math.floor(this.range / table.total);
    this.low += r * table.cum[symbol];
    this.range = r * f;
    while (this.range < TOP) {
      this.range *= BYTE;
      this.shiftLow();
    }
  }

  /** The stream (the encoder cannot be used afterwards). */
  finish(): Uint8Array {
    if (this.done) throw new Error('range encoder already finished');
    this.done = true;
    // the value in [low, low + range) with the most trailing zero bytes (range ≥ 2^24: one exists)
    for (const step of [SPAN, TOP]) {
      const v = Math.ceil(this.low / step) * step;
      if (v < this.low + this.range) {
        this.low = v;
        break;
      }
    }
    for (let i = 0; i < 5; i++) this.shiftLow();
    let n = this.length;
    while (n > 0 && this.out[n - 1] === 0) n--;
    return this.out.slice(0, n);
  }

  private shiftLow(): void {
    if (this.low < 0xff000000 || this.low >= SPAN) {
      const carry = this.low >= SPAN ? 1 : 0;
      let c = this.cache;
      do {
        this.push((c + carry) & 0xff);
        c = 0xff;
      } while (--this.cacheSize !== 0);
      this.cache = Math.floor(this.low / TOP) & 0xff;
    }
    this.cacheSize++;
    this.low = (this.low % TOP) * BYTE;
  }

  private push(byte: number): void {
    if (this.first) {
      this.first = false;
      return;
    }
    if (this.length === this.out.length) {
      const grown = new Uint8Array(this.out.length * 2);
      grown.set(this.out);
      this.out = grown;
    }
    this.out[this.length++] = byte;
  }
}

export class RangeDecoder {
  private code = 0;
  private range = SPAN - 1;
  private pos = 0;

  constructor(private readonly bytes: Uint8Array) {
    for (let i = 0; i < 4; i++) this.code = this.code * BYTE + this.next();
  }

  decode(table: FrequencyTable): number {
    const r = Math.floor(this.range / table.total);
    const v = Math.min(table.total - 1, Math.floor(this.code / r));
    // the symbol s with cum[s] ≤ v < cum[s + 1] (skips symbols of count 0)
    const cum = table.cum;
    let lo = 0;
    if (table.lookup) lo = table.lookup[v];
    else {
      let hi = table.size - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (cum[mid] <= v) lo = mid;
        else hi = mid - 1;
      }
    }
    this.code -= r * cum[lo];
    this.range = r * table.freq[lo];
    while (this.range < TOP) {
      this.code = this.code * BYTE + this.next();
      this.range *= BYTE;
    }
    return lo;
  }

  private next(): number {
    return this.pos < this.bytes.length ? this.bytes[this.pos++] : 0;
  }
}

/** Codes `symbols` under one table, or under `table(i)` for the i-th symbol. */
export function encode(symbols: ArrayLike<number>, table: FrequencyTable | ((i: number) => FrequencyTable)): Uint8Array {
  const encoder = new RangeEncoder();
  if (typeof table === 'function') for (let i = 0; i < symbols.length; i++) encoder.encode(symbols[i], table(i));
  else for (let i = 0; i < symbols.length; i++) encoder.encode(symbols[i], table);
  return encoder.finish();
}

/** The `count` symbols of a stream coded by `encode` with the same table(s). */
export function decode(bytes: Uint8Array, table: FrequencyTable | ((i: number) => FrequencyTable), count: number): Uint16Array {
  const out = new Uint16Array(count);
  if (count === 0) return out;
  const decoder = new RangeDecoder(bytes);
  if (typeof table === 'function') for (let i = 0; i < count; i++) out[i] = decoder.decode(table(i));
  else for (let i = 0; i < count; i++) out[i] = decoder.decode(table);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Storing frequency tables: the decoder must have them, so they are part of the bitstream's bytes.

/** Bits of one count in 0…n. */
export function countBits(n: number): number {
  return n <= 0 ? 0 : 32 - Math.clz32(n);
}

/** Bytes of `tables` tables of `size` counts summing to n each: size − 1 counts of countBits(n) bits per table (the last is n − the rest). */
export function packedTableBytes(tables: number, size: number, n: number): number {
  return Math.ceil((tables * (size - 1) * countBits(n)) / 8);
}

/** Packs tables of counts (each summing to n), MSB first, as packedTableBytes says. */
export function packTables(tables: readonly ArrayLike<number>[], n: number): Uint8Array {
  const size = tables.length > 0 ? tables[0].length : 0;
  const bits = countBits(n);
  const out = new Uint8Array(packedTableBytes(tables.length, size, n));
  // a bit accumulator: `pending` bits (< 8 between counts) in the low end of `acc`
  let acc = 0;
  let pending = 0;
  let pos = 0;
  for (const counts of tables) {
    if (counts.length !== size) throw new RangeError('packTables: tables must have the same size');
    let sum = 0;
    for (let s = 0; s < size; s++) sum += counts[s];
    if (sum !== n) throw new RangeError(`packTables: a table sums to ${sum}, expected ${n}`);
    for (let s = 0; s < size - 1; s++) {
      acc = ((acc << bits) | counts[s]) >>> 0;
      pending += bits;
      while (pending >= 8) {
        pending -= 8;
        out[pos++] = (acc >>> pending) & 0xff;
      }
      acc &= (1 << pending) - 1;
    }
  }
  if (pending > 0) out[pos] = (acc << (8 - pending)) & 0xff;
  return out;
}

/** The count arrays packed by packTables. */
export function unpackTables(bytes: Uint8Array, tables: number, size: number, n: number): Uint32Array[] {
  const bits = countBits(n);
  const out: Uint32Array[] = [];
  const mask = bits >= 32 ? 0xffffffff : (1 << bits) - 1;
  let acc = 0;
  let pending = 0;
  let pos = 0;
  for (let t = 0; t < tables; t++) {
    const counts = new Uint32Array(size);
    let rest = n;
    for (let s = 0; s < size - 1; s++) {
      while (pending < bits) {
        acc = ((acc << 8) | (pos < bytes.length ? bytes[pos] : 0)) >>> 0;
        pos++;
        pending += 8;
      }
      pending -= bits;
      const c = (acc >>> pending) & mask;
      acc &= (1 << pending) - 1;
      counts[s] = c;
      rest -= c;
    }
    if (rest < 0) throw new RangeError('unpackTables: counts exceed the table total');
    counts[size - 1] = rest;
    out.push(counts);
  }
  return out;
}
