/** common.ts topK: the linear-scan path (few entries dropped, the decode case) ranks exactly like the sort. */
import { describe, expect, it } from 'vitest';
import { topK, type TieBreak } from '../../engine/policies/common.ts';

/** The sort-based definition: value descending (NaN as −∞), ties by index per `tie`; k first, ascending. */
function reference(scores: readonly number[], k: number, tie: TieBreak, from: number, to: number): number[] {
  const n = Math.max(0, to - from);
  const take = Math.max(0, Math.min(Math.floor(k), n));
  const value = (i: number) => (Number.isNaN(scores[i]) ? -Infinity : scores[i]);
  const order = Array.from({ length: n }, (_, i) => from + i).sort((a, b) => {
    const d = value(b) - value(a);
    if (d !== 0 && !Number.isNaN(d)) return d;
    return tie === 'older' ? a - b : b - a;
  });
  return order.slice(0, take).sort((a, b) => a - b);
}

describe('topK', () => {
  it('matches the sort-based ranking on random scores with ties, NaN and infinities, for every k', () => {
    let seed = 12345;
    const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let t = 0; t < 3000; t++) {
      const n = 1 + Math.floor(random() * 30);
      const scores = Array.from({ length: n }, () => {
        const r = random();
        return r < 0.08 ? NaN : r < 0.14 ? -Infinity : r < 0.18 ? Infinity : Math.floor(random() * 4);
      });
      const from = Math.floor((random() * n) / 3);
      const to = from + Math.floor(random() * (n - from + 1));
      for (let k = 0; k <= to - from + 1; k++) {
        for (const tie of ['older', 'newer'] as const) {
          expect(Array.from(topK(scores, k, tie, from, to))).toEqual(reference(scores, k, tie, from, to));
        }
      }
    }
  });
});
