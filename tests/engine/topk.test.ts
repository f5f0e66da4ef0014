/** topKInto (allocation-free, used for the per-step attention summaries) agrees with topK. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { topK, topKInto } from '../../engine/metrics/softmax.ts';

describe('topKInto', () => {
  it('writes the same indices and values as topK (ties by lower index), at an offset', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 40 }), fc.integer({ min: 0, max: 10 }), (raw, k) => {
        const values = Float32Array.from(raw, (x) => x / 4); // small range: many ties
        const indices = new Int32Array(3 + k).fill(-1);
        const weights = new Float32Array(3 + k).fill(-1);
        const n = topKInto(values, k, indices, weights, 3);
        const expected = topK(values, k);
        expect(n).toBe(expected.length);
        expect(Array.from(indices.subarray(3, 3 + n))).toEqual(expected.map((e) => e.index));
        expect(Array.from(weights.subarray(3, 3 + n))).toEqual(expected.map((e) => e.value));
        expect(Array.from(indices.subarray(0, 3))).toEqual([-1, -1, -1]);
      }),
    );
  });
});
