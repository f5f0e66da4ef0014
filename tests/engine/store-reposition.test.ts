/** Reposition runs: the store rotates runs of consecutive targets with one delta in one call. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { KVCacheStore } from '../../engine/cache/store.ts';
import { Rope } from '../../engine/model/rope.ts';
import type { Reposition } from '../../engine/policies/types.ts';

const dims = { nLayers: 1, nKvHeads: 1, nHeads: 1, headDim: 8 };
const rope = new Rope({ theta: 10000, dim: 8 }, 8);

function cacheWithKeys(n: number, seed: number): KVCacheStore {
  const cache = new KVCacheStore(dims, rope);
  const keys = new Float32Array(n * 8);
  for (let i = 0; i < keys.length; i++) keys[i] = Math.sin(seed + i * 1.7);
  cache.appendLayer(0, keys, new Float32Array(n * 8), n, Int32Array.from({ length: n }, (_, i) => i), 0);
  cache.tokenCount = n;
  return cache;
}

describe('reposition runs', () => {
  it('match rotating every entry on its own (mixed deltas, gaps, evictions)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 0, max: 1000 }), fc.array(fc.boolean(), { minLength: 20, maxLength: 20 }), fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 20, maxLength: 20 }), (n, seed, kept, targets) => {
        const cache = cacheWithKeys(n, seed);
        const keep = Array.from({ length: n }, (_, i) => i).filter((i) => kept[i] || i === n - 1);
        const moves: Reposition[] = keep.filter((_, k) => targets[k] % 3 !== 0).map((index, k) => ({ index, pos: k % 2 === 0 ? k : targets[k] }));
        const expected = keep.map((index) => {
          const move = moves.find((m) => m.index === index);
          const key = Float32Array.from(cache.keys(0, 0).subarray(index * 8, index * 8 + 8));
          if (move) rope.rotate(key, move.pos - index);
          return [Array.from(key), move ? move.pos : index];
        });
        cache.apply({ layers: [[{ keep, reposition: moves }]] });
        const got = keep.map((_, j) => [Array.from(cache.keys(0, 0).subarray(j * 8, j * 8 + 8)), cache.positions(0, 0)[j]]);
        expect(got).toEqual(expected);
      }),
    );
  });

  it('counts every repositioned entry', () => {
    const cache = cacheWithKeys(6, 1);
    const applied = cache.apply({ layers: [[{ keep: [0, 3, 4, 5], reposition: [{ index: 3, pos: 1 }, { index: 4, pos: 2 }, { index: 5, pos: 3 }] }]] });
    expect(applied.heads[0].repositioned).toBe(3);
    expect(Array.from(cache.positions(0, 0))).toEqual([0, 1, 2, 3]);
  });
});
