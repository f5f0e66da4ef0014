/** The range coder (engine/quant/entropy.ts): exact round trips, size near the empirical entropy, edge cases, table packing. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  LOOKUP_MAX,
  MAX_TOTAL,
  RangeDecoder,
  RangeEncoder,
  countBits,
  countSymbols,
  decode,
  encode,
  frequencyTable,
  idealBits,
  packTables,
  packedTableBytes,
  unpackTables,
} from '../../engine/quant/entropy.ts';

/** Seeded uniform [0, 1) (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n symbols drawn from weights (seeded). */
function draw(n: number, weights: readonly number[], seed: number): Uint16Array {
  const random = rng(seed);
  const total = weights.reduce((a, b) => a + b, 0);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    let u = random() * total;
    let s = 0;
    while (s < weights.length - 1 && u >= weights[s]) u -= weights[s++];
    out[i] = s;
  }
  return out;
}

/** Round trip under the sequence's own counts; returns the stream. */
function roundTrip(symbols: Uint16Array, size: number): Uint8Array {
  const counts = countSymbols(symbols, size);
  const table = frequencyTable(counts);
  const bytes = encode(symbols, table);
  expect(Array.from(decode(bytes, table, symbols.length))).toEqual(Array.from(symbols));
  // decoding by the value → symbol lookup gives the same
  const withLookup = frequencyTable(counts, { lookup: true });
  expect(withLookup.lookup === null).toBe(symbols.length > LOOKUP_MAX);
  expect(Array.from(decode(bytes, withLookup, symbols.length))).toEqual(Array.from(symbols));
  return bytes;
}

describe('range coder: round trips', () => {
  it('is exact on random seeded sequences of random tables (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 50 }), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1, max: 3000 }),
        fc.integer(),
        (weights, n, seed) => {
          const w = weights.some((x) => x > 0) ? weights : [1, ...weights.slice(1)];
          roundTrip(draw(n, w, seed), w.length);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('skewed and uniform distributions: exact, and the size within 1% of the empirical entropy (+ 4 bytes)', () => {
    const cases: [string, number[]][] = [
      ['uniform 31', Array(31).fill(1)],
      ['uniform 2', [1, 1]],
      ['skewed (geometric)', Array.from({ length: 31 }, (_, s) => 0.5 ** Math.abs(s - 15))],
      ['very skewed', [1000, 1, 1]],
    ];
    for (const [name, weights] of cases) {
      const symbols = draw(60000, weights, 7);
      const bytes = roundTrip(symbols, weights.length);
      const ideal = idealBits(countSymbols(symbols, weights.length)) / 8;
      expect(bytes.length, name).toBeLessThanOrEqual(ideal * 1.01 + 4);
      expect(bytes.length, name).toBeGreaterThanOrEqual(ideal - 1);
    }
  });

  it('a table other than the empirical one still round-trips (codes any symbol of count > 0)', () => {
    const table = frequencyTable([5, 1, 0, 9]);
    const symbols = Uint16Array.from([3, 1, 1, 1, 0, 3, 1, 1, 1, 1]);
    expect(Array.from(decode(encode(symbols, table), table, symbols.length))).toEqual(Array.from(symbols));
    expect(() => encode([2], table)).toThrow(RangeError);
  });

  it('per-symbol tables (one per channel) round-trip', () => {
    const tables = [frequencyTable([1, 2, 3]), frequencyTable([9, 1]), frequencyTable([1, 1, 1, 1, 1])];
    const random = rng(3);
    const symbols = Uint16Array.from({ length: 3000 }, (_, i) => Math.floor(random() * tables[i % 3].size));
    const bytes = encode(symbols, (i) => tables[i % 3]);
    expect(Array.from(decode(bytes, (i) => tables[i % 3], symbols.length))).toEqual(Array.from(symbols));
  });

  it('carries through runs of 0xFF bytes: the extreme table [1, 2^16 − 1]', () => {
    for (const seed of [1, 2, 3]) {
      const symbols = draw(20000, [1, 4000], seed);
      const table = frequencyTable([1, MAX_TOTAL - 1]);
      expect(Array.from(decode(encode(symbols, table), table, symbols.length))).toEqual(Array.from(symbols));
    }
  });

  it('a single-symbol alphabet costs (almost) nothing and decodes', () => {
    const table = frequencyTable([12]);
    const symbols = new Uint16Array(5000);
    const bytes = encode(symbols, table);
    expect(bytes.length).toBeLessThanOrEqual(4);
    expect(Array.from(decode(bytes, table, 5000))).toEqual(Array.from(symbols));
    // one live symbol among dead ones
    roundTrip(Uint16Array.from([2, 2, 2]), 4);
  });

  it('empty input: 0 bytes; decoding 0 symbols reads nothing', () => {
    const table = frequencyTable([1, 1]);
    expect(encode([], table).length).toBe(0);
    expect(decode(new Uint8Array(0), table, 0).length).toBe(0);
  });

  it('encoder and decoder classes: finish once; zero-count / bad tables refused', () => {
    const encoder = new RangeEncoder();
    const table = frequencyTable([3, 1]);
    encoder.encode(0, table);
    encoder.encode(1, table);
    const bytes = encoder.finish();
    expect(() => encoder.finish()).toThrow();
    const decoder = new RangeDecoder(bytes);
    expect([decoder.decode(table), decoder.decode(table)]).toEqual([0, 1]);
    expect(() => frequencyTable([])).toThrow(RangeError);
    expect(() => frequencyTable([0, 0])).toThrow(RangeError);
    expect(() => frequencyTable([MAX_TOTAL, 1])).toThrow(RangeError);
    expect(() => frequencyTable([1.5])).toThrow(RangeError);
  });
});

describe('frequency tables as bytes', () => {
  it('packs size − 1 counts of countBits(n) bits per table, the last implied; unpacks exactly', () => {
    expect(countBits(256)).toBe(9);
    expect(countBits(255)).toBe(8);
    expect(countBits(1)).toBe(1);
    expect(countBits(0)).toBe(0);
    expect(packedTableBytes(32, 31, 256)).toBe(Math.ceil((32 * 30 * 9) / 8));
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 600 }), fc.integer(), (size, tables, n, seed) => {
        const random = rng(seed);
        const counts = Array.from({ length: tables }, () => countSymbols(Uint16Array.from({ length: n }, () => Math.floor(random() * size)), size));
        const bytes = packTables(counts, n);
        expect(bytes.length).toBe(packedTableBytes(tables, size, n));
        expect(unpackTables(bytes, tables, size, n).map((c) => Array.from(c))).toEqual(counts.map((c) => Array.from(c)));
      }),
      { numRuns: 100 },
    );
    expect(() => packTables([[1, 2]], 4)).toThrow(RangeError);
  });
});
