import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { roundHalf } from '../../engine/quant/half.ts';
import { dequantizeBlock, groupCount, metadataBytes, packedBytes, quantizeBlock } from '../../engine/quant/quantize.ts';

describe('roundHalf', () => {
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
