/** Graph feeds: layers with the same head lengths share one bias buffer; ragged layers get their own. */
import { describe, expect, it } from 'vitest';
import { KVCacheStore, MASK_BIAS } from '../../engine/cache/store.ts';
import { indexRange } from '../../engine/policies/types.ts';
import { fillCache, smallDims } from './helpers/cache.ts';

/** The bias a layer must get: per query head, rows of [its n entries 0, padding masked, causal new tokens]. */
function expectedBias(lengths: number[], nHeads: number, q: number): number[] {
  const t = Math.max(...lengths);
  const group = nHeads / lengths.length;
  const out: number[] = [];
  for (let qh = 0; qh < nHeads; qh++) {
    const n = lengths[Math.floor(qh / group)];
    for (let row = 0; row < q; row++) {
      for (let j = 0; j < t; j++) out.push(j < n ? 0 : MASK_BIAS);
      for (let k = 0; k < q; k++) out.push(k <= row ? 0 : MASK_BIAS);
    }
  }
  return out;
}

describe('buildFeeds bias sharing', () => {
  it('shares the bias between layers of equal head lengths and keeps ragged layers apart', () => {
    const dims = smallDims();
    const cache = fillCache(new KVCacheStore(dims), 5);
    let feeds = cache.buildFeeds(3);
    expect(feeds[1].bias).toBe(feeds[0].bias);
    expect(Array.from(feeds[0].bias)).toEqual(expectedBias([5, 5], dims.nHeads, 3));

    // layer 1, KV head 0 keeps 2 entries: its bias differs and must not overwrite layer 0's
    cache.apply({ layers: [null, [{ keep: indexRange(0, 2) }, null]] });
    feeds = cache.buildFeeds(3);
    expect(feeds[1].bias).not.toBe(feeds[0].bias);
    expect(Array.from(feeds[0].bias)).toEqual(expectedBias([5, 5], dims.nHeads, 3));
    expect(Array.from(feeds[1].bias)).toEqual(expectedBias([2, 5], dims.nHeads, 3));
  });

  it('never shares when layers hold merged entries (log(count) biases are per layer)', () => {
    const dims = smallDims();
    const cache = fillCache(new KVCacheStore(dims), 4);
    const merge = () => ({ keep: [0, 3], merge: [{ members: [1, 2], weights: [0.5, 0.5] }] });
    cache.apply({ layers: [[merge(), merge()], [merge(), merge()]] });
    const feeds = cache.buildFeeds(1);
    expect(feeds.map((f) => f.length)).toEqual([3, 3]);
    expect(feeds[1].bias).not.toBe(feeds[0].bias);
    for (const feed of feeds) expect(feed.bias[1]).toBeCloseTo(Math.log(2), 6);
  });
});
