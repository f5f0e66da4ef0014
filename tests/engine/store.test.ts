/** KV cache store: feeds, bias, decisions (evict / merge / re-encode / reposition), memory, snapshots. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { KVCacheStore, MASK_BIAS, type EntryCodec } from '../../engine/cache/store.ts';
import { PolicyDecisionError } from '../../engine/errors.ts';
import { Rope } from '../../engine/model/rope.ts';
import { indexRange } from '../../engine/policies/types.ts';
import { fillCache, ragged, smallDims } from './helpers/cache.ts';

const dims = smallDims(); // 2 layers, 2 KV heads, 4 query heads, head dim 4
const D = dims.headDim;

describe('feeds', () => {
  it('pads ragged heads to the longest head and masks the padding', () => {
    const cache = ragged(new KVCacheStore(dims), [
      [3, 5],
      [4, 4],
    ]);
    const [layer0, layer1] = cache.buildFeeds(1);
    expect(layer0.length).toBe(5);
    expect(layer1.length).toBe(4);
    // head 0 holds tokens 0..2, then two zero padding slots; head 1 holds tokens 0..4
    expect(Array.from(layer0.keys.subarray(0, 5 * D))).toEqual([0, 1, 2].flatMap((t) => Array(D).fill(t + 0.25)).concat(Array(2 * D).fill(0)));
    expect(Array.from(layer0.keys.subarray(5 * D, 10 * D))).toEqual([0, 1, 2, 3, 4].flatMap((t) => Array(D).fill(t + 100.25)));
    // query heads 0,1 read KV head 0 (3 entries), 2,3 read KV head 1 (5 entries); last slot = new token
    const row = (qh: number) => Array.from(layer0.bias.subarray(qh * 6, (qh + 1) * 6));
    expect(row(0)).toEqual([0, 0, 0, MASK_BIAS, MASK_BIAS, 0]);
    expect(row(1)).toEqual(row(0));
    expect(row(2)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(row(3)).toEqual(row(2));
  });

  it('builds a causal mask among the new tokens of a chunk', () => {
    const cache = fillCache(new KVCacheStore(dims), 2);
    const [feed] = cache.buildFeeds(3);
    const rowLength = 2 + 3;
    const rows = [0, 1, 2].map((i) => Array.from(feed.bias.subarray(i * rowLength, (i + 1) * rowLength)));
    expect(rows).toEqual([
      [0, 0, 0, MASK_BIAS, MASK_BIAS],
      [0, 0, 0, 0, MASK_BIAS],
      [0, 0, 0, 0, 0],
    ]);
    expect(feed.bias.length).toBe(dims.nHeads * 3 * rowLength);
  });

  it('an empty cache gives T = 0 feeds', () => {
    const feeds = new KVCacheStore(dims).buildFeeds(1);
    expect(feeds.map((f) => [f.length, f.keys.length, f.bias.length])).toEqual([
      [0, 0, 4],
      [0, 0, 4],
    ]);
  });

  it('maps attention slots back to entries (cache entries, then new tokens)', () => {
    // attn for H=1 row over T=4 slots + q=2 new tokens; head holds 3 entries (slot 3 is padding)
    const attn = Float32Array.from([0.1, 0.2, 0.3, 0, 0.4, 0, 0.05, 0.1, 0.15, 0, 0.3, 0.4]);
    expect(Array.from(KVCacheStore.entryAttention(attn, 0, 0, 2, 4, 3))).toEqual(Array.from(Float32Array.from([0.1, 0.2, 0.3, 0.4])));
    expect(Array.from(KVCacheStore.entryAttention(attn, 0, 1, 2, 4, 3))).toEqual(Array.from(Float32Array.from([0.05, 0.1, 0.15, 0.3, 0.4])));
  });

  it('grows past its initial capacity without losing entries', () => {
    const cache = new KVCacheStore(dims, null, 1);
    for (let i = 0; i < 100; i++) fillCache(cache, 1);
    expect(cache.length(1, 1)).toBe(100);
    expect(Array.from(cache.tokens(1, 1))).toEqual(Array.from(indexRange(0, 100)));
    expect(cache.keys(1, 1)[99 * D]).toBe(99 + 100.25);
  });
});

describe('decisions', () => {
  it('merges entries: weighted K/V, summed count, origins, log(count) bias', () => {
    const cache = fillCache(new KVCacheStore(dims), 6);
    const applied = cache.apply({
      layers: [[{ keep: [0, 3, 5], merge: [{ members: [1, 2, 4], weights: [0.5, 0.25, 0.25], anchor: 2 }] }, null], null],
    });
    expect(applied.merged).toBe(1);
    expect(applied.evicted).toBe(0);
    expect(cache.length(0, 0)).toBe(4);
    expect(Array.from(cache.tokens(0, 0))).toEqual([0, 1, 3, 5]);
    expect(Array.from(cache.counts(0, 0))).toEqual([1, 3, 1, 1]);
    expect(Array.from(cache.positions(0, 0))).toEqual([0, 2, 3, 5]); // merged entry at the anchor's position
    expect(cache.origin(0, 0, 1)).toEqual([1, 2, 4]);
    expect(cache.keys(0, 0)[1 * D]).toBeCloseTo(0.5 * 1.25 + 0.25 * 2.25 + 0.25 * 4.25, 6);
    expect(cache.values(0, 0)[1 * D]).toBeCloseTo(0.5 * 1.5 + 0.25 * 2.5 + 0.25 * 4.5, 6);
    expect(cache.keys(0, 0)[3 * D]).toBe(5.25);
    const [feed] = cache.buildFeeds(1);
    expect(Array.from(feed.bias.subarray(0, 7))).toEqual(Array.from(Float32Array.from([0, Math.log(3), 0, 0, MASK_BIAS, MASK_BIAS, 0])));
    // keys of one entry are constant vectors, so every member points the way the merged key does
    expect(applied.heads[0].merged).toEqual([{ into: 1, origins: [1, 2, 4], weights: [0.5, 0.25, 0.25], count: 3, memberTokens: [1, 2, 4], similarity: [1, 1, 1] }]);
    // merging a merged entry again accumulates origins and counts
    cache.apply({ layers: [[{ keep: [2, 3], merge: [{ members: [0, 1], weights: [0.5, 0.5] }] }, null], null] });
    expect(cache.origin(0, 0, 0)).toEqual([0, 1, 2, 4]);
    expect(Array.from(cache.counts(0, 0))).toEqual([4, 1, 1]);
  });

  it('re-encodes kept entries: new vectors, codec in the memory count', () => {
    const cache = fillCache(new KVCacheStore(dims), 4);
    const codec: EntryCodec = { name: 'int2', kBits: 2, vBits: 2, kElements: D, vElements: D, kMetaBytes: 8, vMetaBytes: 8 };
    const applied = cache.apply({
      layers: [[{ keep: [0, 1, 2, 3], reencode: [{ index: 2, codec, keys: new Float32Array(D).fill(9), kError: 0.1 }] }, null], null],
    });
    expect(applied.reencoded).toBe(1);
    expect(applied.heads[0].reencoded).toEqual([{ index: 2, codec: 'int2', kError: 0.1, vError: undefined }]);
    expect(cache.keys(0, 0)[2 * D]).toBe(9);
    expect(cache.values(0, 0)[2 * D]).toBe(2.5);
    expect(cache.codec(0, 0, 2)).toMatchObject(codec);
    expect(cache.codec(0, 0, 1)).toBeNull();
    // the K/V the model computed stay for error views, from the first codec on
    expect(Array.from(cache.exact(0, 0, 2)!.keys)).toEqual(new Array(D).fill(2.25));
    expect(Array.from(cache.exact(0, 0, 2)!.values)).toEqual(new Array(D).fill(2.5));
    expect(cache.exact(0, 0, 1)).toBeNull();
    cache.apply({ layers: [[{ keep: [0, 1, 2, 3], reencode: [{ index: 2, codec: { ...codec, name: 'int1' }, keys: new Float32Array(D).fill(7) }] }, null], null] });
    expect(cache.exact(0, 0, 2)!.keys[0]).toBe(2.25);
    cache.apply({ layers: [[{ keep: [0, 1, 2, 3], reencode: [{ index: 2, codec, keys: new Float32Array(D).fill(9), kError: 0.1 }] }, null], null] });
    const memory = cache.memory();
    const fp32Entry = D * 4;
    const int2Entry = Math.ceil((D * 2) / 8) + 8;
    expect(memory.kBytes).toBe(15 * fp32Entry + int2Entry);
    expect(memory.vBytes).toBe(15 * fp32Entry + int2Entry);
    expect(memory.bitsPerElement).toBeCloseTo(((30 * fp32Entry + 2 * int2Entry) * 8) / (16 * D * 2), 10);
    // eviction keeps codecs aligned with their entries
    cache.apply({ layers: [[{ keep: [2, 3] }, null], null] });
    expect(cache.codec(0, 0, 0)).toMatchObject(codec);
    expect(cache.codec(0, 0, 1)).toBeNull();
  });

  it('repositions keys by re-rotating them with the RoPE delta', () => {
    const rope = new Rope({ theta: 10000, dim: D }, D);
    const cache = fillCache(new KVCacheStore(dims, rope), 5);
    const before = Float32Array.from(cache.keys(0, 1).subarray(4 * D, 5 * D));
    cache.apply({ layers: [[null, { keep: [4], reposition: [{ index: 4, pos: 0 }] }], null] });
    expect(Array.from(cache.positions(0, 1))).toEqual([0]);
    const expected = rope.rerotated(before, 4, 0);
    expect(Array.from(cache.keys(0, 1))).toEqual(Array.from(expected));
    expect(cache.values(0, 1)[0]).toBe(4.5);
  });

  it('stores the scores a policy returns on the surviving entries', () => {
    const cache = fillCache(new KVCacheStore(dims), 4);
    cache.apply({ layers: [[{ keep: [1, 3], scores: [10, 11, 12, 13] }, null], null] });
    expect(Array.from(cache.scores(0, 0))).toEqual([11, 13]);
    expect(Number.isNaN(cache.scores(0, 1)[0])).toBe(true);
    cache.clearScores();
    expect(Number.isNaN(cache.scores(0, 0)[0])).toBe(true);
  });

  it('rejects invalid decisions with a precise message and leaves the cache unchanged', () => {
    const cache = fillCache(new KVCacheStore(dims), 4);
    const snapshot = JSON.stringify(cache.memory());
    const bad = (decision: Parameters<KVCacheStore['apply']>[0], message: string) => {
      expect(() => cache.apply(decision)).toThrow(new PolicyDecisionError(message));
      expect(JSON.stringify(cache.memory())).toBe(snapshot);
      expect(Array.from(cache.tokens(0, 0))).toEqual([0, 1, 2, 3]);
    };
    bad({ layers: [[{ keep: [0, 1] }, { keep: [] }], null] }, 'decision for layer 0 head 1: would leave the head empty (at least one entry must be kept)');
    bad({ layers: [[{ keep: [2, 1] }, null], null] }, 'decision for layer 0 head 0: keep indices must be ascending and unique (2 then 1)');
    bad({ layers: [[null, null], [{ keep: [4] }, null]] }, 'decision for layer 1 head 0: keep index 4 is out of range [0, 4)');
    bad({ layers: [[{ keep: [0], merge: [{ members: [0, 1], weights: [1, 1] }] }, null], null] }, 'decision for layer 0 head 0: entry 0 is both kept/merged elsewhere and in merge group 0');
    bad({ layers: [[{ keep: [0], merge: [{ members: [1, 2], weights: [1] }] }, null], null] }, 'decision for layer 0 head 0: merge group 0 has 2 members but 1 weights');
    bad({ layers: [[{ keep: [0, 1], scores: [1] }, null], null] }, 'decision for layer 0 head 0: scores has 1 values for 4 entries');
    bad({ layers: [[{ keep: [0, 1], reposition: [{ index: 1, pos: 0 }] }, null], null] }, "decision for layer 0 head 0: reposition needs the model's RoPE parameters");
    bad({ layers: [[null, null]] }, 'decision lists 1 layers, the cache has 2');
  });

  it('property: random keep sets keep exactly those entries, in order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }).chain((n) => fc.tuple(fc.constant(n), fc.subarray(Array.from(indexRange(0, n)), { minLength: 1 }))), ([n, keep]) => {
        const cache = fillCache(new KVCacheStore(dims), n);
        const applied = cache.apply({ layers: [[{ keep }, null], null] });
        expect(Array.from(cache.tokens(0, 0))).toEqual(keep);
        expect(Array.from(cache.keys(0, 0)).filter((_, i) => i % D === 0)).toEqual(keep.map((t) => t + 0.25));
        expect(applied.evicted).toBe(n - keep.length);
        expect(cache.length(0, 1)).toBe(n);
      }),
    );
  });
});

describe('memory accounting', () => {
  it('counts fp32 bytes exactly, K and V separately, against the full cache', () => {
    const cache = fillCache(new KVCacheStore(dims), 10);
    cache.apply({ layers: [[{ keep: [7, 8, 9] }, null], null] });
    const memory = cache.memory();
    const held = 3 + 10 + 10 + 10;
    expect(memory.entries).toEqual([
      [3, 10],
      [10, 10],
    ]);
    expect(memory.heldEntries).toBe(held);
    expect(memory.kBytes).toBe(held * D * 4);
    expect(memory.vBytes).toBe(held * D * 4);
    expect(memory.fullKBytes).toBe(10 * dims.nLayers * dims.nKvHeads * D * 4);
    expect(memory.fullBytes).toBe(2 * memory.fullKBytes);
    expect(memory.ratio).toBeCloseTo(held / 40, 12);
    expect(memory.bitsPerElement).toBe(32);
  });

  it('property: bytes = Σ held entries × D × 4 × 2 for any ragged fp32 cache', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 4, maxLength: 4 }), (lengths) => {
        const cache = ragged(new KVCacheStore(dims), [lengths.slice(0, 2), lengths.slice(2, 4)]);
        const total = lengths.reduce((a, b) => a + b, 0);
        const memory = cache.memory();
        expect(memory.bytes).toBe(total * D * 4 * 2);
        expect(memory.kBytes).toBe(memory.vBytes);
        expect(memory.heldEntries).toBe(total);
      }),
    );
  });
});

describe('snapshots', () => {
  it('restore() and clone() are deep copies', () => {
    const cache = fillCache(new KVCacheStore(dims), 5);
    cache.apply({ layers: [[{ keep: [0, 4], merge: [{ members: [1, 2], weights: [0.5, 0.5] }] }, null], null] });
    const snapshot = cache.snapshot();
    const clone = cache.clone();
    fillCache(cache, 3);
    cache.apply({ layers: [[{ keep: [0] }, { keep: [0] }], null] });
    expect(clone.length(0, 0)).toBe(3);
    expect(clone.origin(0, 0, 1)).toEqual([1, 2]);
    cache.restore(snapshot);
    expect(cache.tokenCount).toBe(5);
    expect(Array.from(cache.tokens(0, 0))).toEqual([0, 1, 4]);
    expect(cache.origin(0, 0, 1)).toEqual([1, 2]);
    expect(cache.length(0, 1)).toBe(5);
    const [feed] = cache.buildFeeds(1);
    expect(feed.bias[1]).toBeCloseTo(Math.log(2), 6);
  });
});
