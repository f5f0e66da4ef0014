/** Outlier extraction (engine/quant/outliers.ts): hand-made blocks, counts, fills, bytes. */
import { describe, expect, it } from 'vitest';
import { roundHalf } from '../../engine/quant/half.ts';
import { extractOutliers, indexBytes, outlierBytes, outlierChannels, outliersPerSide, restoreOutliers } from '../../engine/quant/outliers.ts';

describe('outliersPerSide', () => {
  it('round(s·n/2) per side, at most half the line', () => {
    expect(outliersPerSide(64, 0.02)).toBe(1); // 0.64 → 1: a 64-token key channel
    expect(outliersPerSide(32, 0.02)).toBe(0); // 0.32 → 0: a 32-channel value token
    expect(outliersPerSide(32, 0.04)).toBe(1);
    expect(outliersPerSide(1024, 0.02)).toBe(10);
    expect(outliersPerSide(3, 1)).toBe(1);
    expect(outliersPerSide(8, 0)).toBe(0);
    expect(() => outliersPerSide(8, 1.5)).toThrow(RangeError);
  });
});

describe('extractOutliers', () => {
  it('per channel (keys): the largest and smallest of each channel over the block, filled with the channel mean', () => {
    // 4 tokens × 2 channels; s = 0.5 → 1 per side per channel of 4
    const x = [1, 10, 7, -3, 2, 20, -5, 0];
    const o = extractOutliers(x, 4, 2, { fraction: 0.5, axis: 'channel' });
    expect(o.perSide).toBe(1);
    // channel 0: {1, 7, 2, −5}: max 7 at row 1 (pos 2), min −5 at row 3 (pos 6); channel 1: {10, −3, 20, 0}: 20 (pos 5), −3 (pos 3)
    expect(Array.from(o.positions)).toEqual([2, 6, 5, 3]);
    expect(Array.from(o.values)).toEqual([7, -5, 20, -3]);
    // means: channel 0 (1 + 7 + 2 − 5)/4 = 1.25, channel 1 27/4 = 6.75
    expect(Array.from(o.remainder)).toEqual([1, 10, 1.25, 6.75, 2, 6.75, 1.25, 0]);
    expect(outlierChannels(o, 1)).toEqual([0, 1]);
    expect(outlierChannels(o, 0)).toEqual([]);
    const restored = Float32Array.from(o.remainder);
    restoreOutliers(restored, o);
    expect(Array.from(restored)).toEqual(x);
  });

  it('per token (values), zero fill, ties to the lower index, fp16 values', () => {
    // 2 tokens × 4 channels; s = 0.5 → 1 per side per token
    const x = [0.1, 5, 5, -1, 3, 3, 3, 3];
    const o = extractOutliers(x, 2, 4, { fraction: 0.5, axis: 'token', fill: 'zero' });
    // token 0: max 5 first at channel 1, min −1 at 3; token 1 all equal: max at 4, min the next free (5)
    expect(Array.from(o.positions)).toEqual([1, 3, 4, 5]);
    expect(Array.from(o.remainder)).toEqual([Math.fround(0.1), 0, 5, 0, 0, 0, 3, 3]);
    const small = extractOutliers([0.1, 0, 0, 0], 1, 4, { fraction: 0.5, axis: 'token' });
    expect(small.values[0]).toBe(roundHalf(0.1));
  });

  it('no outliers at fraction 0: the remainder is the block', () => {
    const o = extractOutliers([1, 2, 3, 4], 2, 2, { fraction: 0, axis: 'channel' });
    expect(o.positions.length).toBe(0);
    expect(Array.from(o.remainder)).toEqual([1, 2, 3, 4]);
    expect(() => extractOutliers([1, 2, 3], 2, 2, { fraction: 0, axis: 'channel' })).toThrow(RangeError);
  });
});

describe('outlier bytes', () => {
  it('fp16 value + an index wide enough for the line', () => {
    expect(indexBytes(32)).toBe(1);
    expect(indexBytes(256)).toBe(1);
    expect(indexBytes(257)).toBe(2);
    expect(indexBytes(65536)).toBe(2);
    expect(indexBytes(65537)).toBe(4);
    expect(outlierBytes(3, 64)).toBe(9);
    expect(outlierBytes(2, 1024)).toBe(8);
  });
});
