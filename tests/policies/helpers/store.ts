/** Hand-made stores with chosen keys / values per (layer, KV head, token). */
import { KVCacheStore } from '../../../engine/cache/store.ts';
import { Rope } from '../../../engine/model/rope.ts';
import type { Dims } from './policy.ts';

export type RowOf = (layer: number, kvHead: number, token: number) => number[];

export function ropeOf(dims: Dims): Rope {
  return new Rope({ theta: 10000, dim: dims.headDim }, dims.headDim);
}

/** Appends tokens [tokenCount, tokenCount + n) to every head, at positions `positionOf(token)` (default the token). */
export function appendRows(store: KVCacheStore, n: number, keyOf: RowOf, valueOf: RowOf, positionOf: (token: number) => number = (t) => t): KVCacheStore {
  const d = store.headDim;
  const first = store.tokenCount;
  for (let l = 0; l < store.nLayers; l++) {
    const keys = new Float32Array(store.nKvHeads * n * d);
    const values = new Float32Array(store.nKvHeads * n * d);
    for (let h = 0; h < store.nKvHeads; h++) {
      for (let i = 0; i < n; i++) {
        keys.set(keyOf(l, h, first + i), (h * n + i) * d);
        values.set(valueOf(l, h, first + i), (h * n + i) * d);
      }
    }
    store.appendLayer(l, keys, values, n, Array.from({ length: n }, (_, i) => positionOf(first + i)), first);
  }
  store.tokenCount = first + n;
  return store;
}

/** A store of `n` tokens whose entry (layer, kvHead, token) holds keyOf / valueOf. */
export function storeOf(dims: Dims, n: number, keyOf: RowOf, valueOf: RowOf, positionOf?: (token: number) => number): KVCacheStore {
  return appendRows(new KVCacheStore(dims, ropeOf(dims)), n, keyOf, valueOf, positionOf);
}

/** Seeded values in [−scale/2, scale/2). */
export function noise(n: number, seed: number, scale = 1): number[] {
  let state = seed >>> 0;
  return Array.from({ length: n }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state / 2 ** 32 - 0.5) * scale;
  });
}
