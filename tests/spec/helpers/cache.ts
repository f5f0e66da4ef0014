/** Entry-by-entry comparison of two KV caches through the store's read API (CacheView). */
import { expect } from 'vitest';
import type { KVCacheStore } from '../../../engine/cache/store.ts';

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d;
  }
  return worst;
}

/**
 * Same entries in every head: tokens, origins, positions, counts, hidden flags and codecs exactly;
 * keys and values within `tolerance` (0 = bit for bit). `what` names the comparison in failures.
 */
export function expectSameCache(actual: KVCacheStore, expected: KVCacheStore, tolerance: number, what = 'cache'): void {
  expect(actual.nLayers, `${what}: layers`).toBe(expected.nLayers);
  expect(actual.nKvHeads, `${what}: kv heads`).toBe(expected.nKvHeads);
  expect(actual.tokenCount, `${what}: tokenCount`).toBe(expected.tokenCount);
  for (let l = 0; l < expected.nLayers; l++) {
    for (let h = 0; h < expected.nKvHeads; h++) {
      const at = `${what} layer ${l} head ${h}`;
      const n = expected.length(l, h);
      expect(actual.length(l, h), `${at}: length`).toBe(n);
      expect(Array.from(actual.tokens(l, h)), `${at}: tokens`).toEqual(Array.from(expected.tokens(l, h)));
      expect(Array.from(actual.positions(l, h)), `${at}: positions`).toEqual(Array.from(expected.positions(l, h)));
      expect(Array.from(actual.counts(l, h)), `${at}: counts`).toEqual(Array.from(expected.counts(l, h)));
      for (let i = 0; i < n; i++) {
        expect(actual.origin(l, h, i), `${at} entry ${i}: origin`).toEqual(expected.origin(l, h, i));
        expect(actual.hidden(l, h, i), `${at} entry ${i}: hidden`).toBe(expected.hidden(l, h, i));
        expect(actual.codec(l, h, i)?.name ?? null, `${at} entry ${i}: codec`).toBe(expected.codec(l, h, i)?.name ?? null);
      }
      const keys = [actual.keys(l, h), expected.keys(l, h)] as const;
      const values = [actual.values(l, h), expected.values(l, h)] as const;
      expect(keys[0].length, `${at}: key floats`).toBe(keys[1].length);
      expect(values[0].length, `${at}: value floats`).toBe(values[1].length);
      if (tolerance === 0) {
        expect(Array.from(keys[0]), `${at}: keys`).toEqual(Array.from(keys[1]));
        expect(Array.from(values[0]), `${at}: values`).toEqual(Array.from(values[1]));
        expect(Array.from(actual.scores(l, h)), `${at}: scores`).toEqual(Array.from(expected.scores(l, h)));
      } else {
        expect(maxAbs(keys[0], keys[1]), `${at}: keys max |Δ|`).toBeLessThanOrEqual(tolerance);
        expect(maxAbs(values[0], values[1]), `${at}: values max |Δ|`).toBeLessThanOrEqual(tolerance);
      }
    }
  }
}
