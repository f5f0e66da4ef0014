import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { roundHalf } from '../../engine/quant/half.ts';
import { dequantizeBlock, groupCount, metadataBytes, packedBytes, quantizeBlock } from '../../engine/quant/quantize.ts';

/**
 * The first roundHalf (exponent by Math.log2, then the mantissa rounded by hand): the reference
 * the bit-level one must match exactly, −0 and ties included.
 */
function roundHalfReference(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  if (a >= 65504 + 16) return x > 0 ? Infinity : -Infinity;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const quantum = 2 ** (Math.max(e, -14) - 10);
  const m = a / quantum;
  let r = Math.floor(m);
  const frac = m - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  return Math.sign(x) * r * quantum;
}

describe('roundHalf', () => {
  it('matches the Math.log2 reference bit for bit (any double, fp16 ties, binade edges, −0, NaN)', () => {
    const same = (x: number): void => {
      expect(Object.is(roundHalf(x), roundHalfReference(x)), `roundHalf(${x})`).toBe(true);
    };
    fc.assert(fc.property(fc.double(), same), { numRuns: 5000 });
    fc.assert(fc.property(fc.double({ min: -70000, max: 70000 }), same), { numRuns: 5000 });
    // exact ties and their neighbours: k · 2^(e − 11) for every fp16 binade, ±1 float64 ulp
    for (let e = -26; e <= 16; e++) {
      for (const k of [1, 2, 3, 1023, 1024, 1025, 2045, 2046, 2047, 2048, 2049, 4093, 4095]) {
        const t = k * 2 ** (e - 11);
        for (const x of [t, t * (1 + 2 ** -52), t * (1 - 2 ** -53)]) {
          same(x);
          same(-x);
        }
      }
    }
    for (const x of [0, -0, NaN, Infinity, -Infinity, 65504, 65519.99, 65520, -65520, Number.MIN_VALUE, 2 ** -1022, Number.MAX_VALUE]) same(x);
  });
  it('keeps fp16 values and rounds the rest to the nearest, ties to even', () => {
    for (const v of [0, 1, -1, 0.5, 65504, 2 ** -14, 2 ** -24, 1.0009765625]) expect(roundHalf(v)).toBe(v);
    expect(roundHalf(1 + 2 ** -11)).toBe(1); // tie → even mantissa
    expect(roundHalf(1 + 3 * 2 ** -11)).toBe(1 + 2 * 2 ** -10);
    expect(roundHalf(0.1)).toBe(0.0999755859375);
    expect(roundHalf(70000)).toBe(Infinity);
    expect(roundHalf(2 ** -26)).toBe(0);
  });
  it('is idempotent and within half an ulp', () => {
    fc.assert(
      fc.property(fc.double({ min: -60000, max: 60000, noNaN: true }), (x) => {
        const h = roundHalf(x);
        expect(roundHalf(h)).toBe(h);
        expect(Math.abs(h - x)).toBeLessThanOrEqual(Math.max(Math.abs(x) * 2 ** -11, 2 ** -25) + 1e-12);
      }),
    );
  });
});

describe('quantizeBlock', () => {
  it('quantizes each channel over token groups (KIVI keys), bit-exact', () => {
    // 4 tokens × 2 channels; groups of 2 tokens: channel 0 runs {0,1,2,3} → [0,1] and [2,3]
    const x = [0, 10, 3, 20, 1, 0, 2, 8];
    const block = quantizeBlock(x, 4, 2, { bits: 2, axis: 'channel', groupSize: 2 });
    expect(groupCount(4, 2, 'channel', 2)).toBe(4);
    // channel 0: tokens 0–1 {0, 3} scale 1 zero 0; tokens 2–3 {1, 2} scale 1/3
    expect(Array.from(block.scales)).toEqual([1, roundHalf(1 / 3), roundHalf(10 / 3), roundHalf(8 / 3)]);
    expect(Array.from(block.zeros)).toEqual([0, 1, 10, 0]);
    expect(Array.from(block.codes)).toEqual([0, 0, 3, 3, 0, 0, 3, 3]);
    expect(Array.from(block.dequantized)).toEqual(Array.from(dequantizeBlock(block)));
    expect(block.dequantized[0]).toBe(0);
    expect(block.dequantized[2]).toBe(3);
  });
  it('quantizes each token over channel groups (KIVI values)', () => {
    const x = [0, 1, 2, 3, 5, 5, 5, 5];
    const block = quantizeBlock(x, 2, 4, { bits: 2, axis: 'token', groupSize: 4 });
    expect(Array.from(block.scales)).toEqual([1, 0]);
    expect(Array.from(block.zeros)).toEqual([0, 5]);
    expect(Array.from(block.dequantized)).toEqual(x);
  });
  it('stays within half a step of every value, at any bits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(fc.float({ min: -8, max: 8, noNaN: true }), { minLength: 6, maxLength: 6 }), (bits, values) => {
        const block = quantizeBlock(values, 3, 2, { bits, axis: 'token', groupSize: 2 });
        values.forEach((v, i) => {
          const g = Math.floor(i / 2);
          expect(block.codes[i]).toBeLessThanOrEqual(2 ** bits - 1);
          // fp16 rounding of the scale and zero adds a little beyond half a step
          expect(Math.abs(block.dequantized[i] - v)).toBeLessThanOrEqual(block.scales[g] * 0.51 * 2 ** bits + 0.01);
        });
      }),
    );
  });
  it('refuses bad bits and shapes', () => {
    expect(() => quantizeBlock([1], 1, 1, { bits: 0, axis: 'token', groupSize: 1 })).toThrow(/1…8/);
    expect(() => quantizeBlock([1], 1, 1, { bits: 9, axis: 'token', groupSize: 1 })).toThrow(/1…8/);
    expect(() => quantizeBlock([1, 2], 1, 1, { bits: 2, axis: 'token', groupSize: 1 })).toThrow(/needs 1 values/);
  });
  it('counts metadata and packed codes in bytes', () => {
    expect(metadataBytes(3)).toBe(12);
    expect(packedBytes(32, 2)).toBe(8);
    expect(packedBytes(5, 3)).toBe(2);
  });
});
