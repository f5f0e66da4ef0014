/** Hand-made caches for graph-free tests. */
import { KVCacheStore } from '../../../engine/cache/store.ts';
import { indexRange } from '../../../engine/policies/types.ts';

export function smallDims() {
  return { nLayers: 2, nKvHeads: 2, nHeads: 4, headDim: 4 };
}

/**
 * Appends `n` tokens (indices/positions from the cache's tokenCount on) to every head. Every
 * channel of a key holds token + 0.25 + 100·kvHead, of a value token + 0.5, so tests can see
 * which entry went where.
 */
export function fillCache(cache: KVCacheStore, n: number): KVCacheStore {
  const d = cache.headDim;
  const first = cache.tokenCount;
  for (let l = 0; l < cache.nLayers; l++) {
    const keys = new Float32Array(cache.nKvHeads * n * d);
    const values = new Float32Array(cache.nKvHeads * n * d);
    for (let h = 0; h < cache.nKvHeads; h++) {
      for (let i = 0; i < n; i++) {
        keys.fill(first + i + 0.25 + 100 * h, (h * n + i) * d, (h * n + i + 1) * d);
        values.fill(first + i + 0.5, (h * n + i) * d, (h * n + i + 1) * d);
      }
    }
    cache.appendLayer(l, keys, values, n, indexRange(first, first + n), first);
  }
  cache.tokenCount = first + n;
  return cache;
}

/** A cache whose head (l, h) holds lengths[l][h] entries: the first ones of max(lengths) tokens. */
export function ragged(cache: KVCacheStore, lengths: number[][]): KVCacheStore {
  const n = Math.max(...lengths.flat());
  fillCache(cache, n);
  cache.apply({ layers: lengths.map((row) => row.map((len) => (len === n ? null : { keep: indexRange(0, len) }))) });
  return cache;
}
