/**
 * What the store does for the method families after eviction (issue 7 §3–4): per-entry columns
 * aligned through eviction, merges, snapshots and forks; merges with K/V the method computed;
 * codec groups charged once across heads and layers and gone with their last member; entries
 * hidden from one forward only; transactions that roll everything back.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { KVCacheStore, MASK_BIAS, type ColumnSpec, type EntryCodec } from '../../engine/cache/store.ts';
import { PolicyDecisionError } from '../../engine/errors.ts';
import { Rope } from '../../engine/model/rope.ts';
import type { HeadDecision } from '../../engine/cache/decision.ts';
import { indexRange } from '../../engine/policies/types.ts';
import { fillCache, smallDims } from './helpers/cache.ts';

const dims = smallDims(); // 2 layers, 2 KV heads, 4 query heads, head dim 4
const D = dims.headDim;
const COLUMNS: ColumnSpec[] = [
  { name: 'mass', width: 2, reduce: 'sum', initial: 0 },
  { name: 'peak', width: 1, reduce: 'max', initial: -1 },
  { name: 'mean', width: 1, reduce: 'weighted', initial: 0 },
  { name: 'pivot', width: 1, reduce: 'anchor', initial: 0 },
];

/** A 6-entry cache whose column values encode the token: mass = [t, 10t], peak = mean = pivot = t. */
function withColumns(n = 6): KVCacheStore {
  const cache = fillCache(new KVCacheStore(dims), n);
  cache.declareColumns(COLUMNS);
  for (let l = 0; l < dims.nLayers; l++) {
    for (let h = 0; h < dims.nKvHeads; h++) {
      const tokens = cache.tokens(l, h);
      const mass = cache.writeColumn(l, h, 'mass');
      for (let i = 0; i < n; i++) mass.set([tokens[i], 10 * tokens[i]], 2 * i);
      for (const name of ['peak', 'mean', 'pivot']) cache.writeColumn(l, h, name).set(Array.from(tokens));
    }
  }
  return cache;
}

const codec = (group?: string): EntryCodec => ({ name: 'int4', kBits: 4, vBits: 4, kElements: D, vElements: D, kMetaBytes: 1, vMetaBytes: 1, ...(group ? { group } : {}) });

describe('per-entry columns', () => {
  it('stay aligned through eviction and take each reduction on a merge', () => {
    const cache = withColumns();
    cache.apply({ layers: [[{ keep: [0, 5], merge: [{ members: [2, 3, 4], weights: [0.5, 0.25, 0.25], anchor: 3 }] }, { keep: [1, 2, 4] }], null] });
    expect(Array.from(cache.tokens(0, 0))).toEqual([0, 2, 5]); // merged entry sits at its anchor's place
    expect(Array.from(cache.column(0, 0, 'mass'))).toEqual([0, 0, 9, 90, 5, 50]);
    expect(Array.from(cache.column(0, 0, 'peak'))).toEqual([0, 4, 5]);
    expect(Array.from(cache.column(0, 0, 'mean'))).toEqual([0, 0.5 * 2 + 0.25 * 3 + 0.25 * 4, 5]);
    expect(Array.from(cache.column(0, 0, 'pivot'))).toEqual([0, 3, 5]);
    expect(Array.from(cache.column(0, 1, 'pivot'))).toEqual([1, 2, 4]);
    // new entries start at the declared initial value
    fillCache(cache, 1);
    expect(Array.from(cache.column(0, 0, 'peak'))).toEqual([0, 4, 5, -1]);
  });

  it('travel with snapshots and clones, and an undeclared column is a clear error', () => {
    const cache = withColumns();
    const copy = cache.clone();
    cache.apply({ layers: [[{ keep: [4, 5] }, null], null] });
    expect(Array.from(copy.column(0, 0, 'pivot'))).toEqual([0, 1, 2, 3, 4, 5]);
    cache.restore(copy.snapshot());
    expect(Array.from(cache.column(1, 1, 'mass').subarray(0, 4))).toEqual([0, 0, 1, 10]);
    expect(() => cache.column(0, 0, 'nope')).toThrow(/no cache column "nope"/);
    expect(() => cache.declareColumns([{ name: 'peak', width: 2, reduce: 'max', initial: 0 }])).toThrow(/declared differently/);
  });
});

describe('decisions for merges, codecs and sparse attention', () => {
  it('a merge may carry the K/V the method computed (SLERP, centroids)', () => {
    const cache = fillCache(new KVCacheStore(dims), 4);
    const keys = Float32Array.from([1, 2, 3, 4]);
    const values = Float32Array.from([-1, -2, -3, -4]);
    cache.apply({ layers: [[{ keep: [0, 3], merge: [{ members: [1, 2], weights: [0.5, 0.5], keys, values, count: 1 }] }, null], null] });
    expect(Array.from(cache.keys(0, 0).subarray(D, 2 * D))).toEqual([1, 2, 3, 4]);
    expect(Array.from(cache.values(0, 0).subarray(D, 2 * D))).toEqual([-1, -2, -3, -4]);
    expect(cache.origin(0, 0, 1)).toEqual([1, 2]);
    expect(() => cache.apply({ layers: [[{ keep: [0], merge: [{ members: [1, 2], weights: [0.5, 0.5], keys: new Float32Array(3) }] }, null], null] })).toThrow(
      'decision for layer 0 head 0: merge group 0 keys must have 4 floats, got 3',
    );
  });

  it('a codec group is charged once across heads and layers, while any member lives', () => {
    const cache = fillCache(new KVCacheStore(dims), 4);
    const fp32 = cache.memory().bytes;
    const perEntry = Math.ceil((D * 4) / 8) + 1; // 4-bit codes + 1 byte own metadata, K and V each
    const shared = { id: 'dir-0', kBytes: 100, vBytes: 60, label: 'direction shared by layers 0 and 1' };
    cache.apply({
      groups: [shared],
      layers: [
        [{ keep: indexRange(0, 4), reencode: [{ index: 2, codec: codec('dir-0') }] }, null],
        [{ keep: indexRange(0, 4), reencode: [{ index: 2, codec: codec('dir-0') }] }, null],
      ],
    });
    const both = cache.memory();
    expect(both.groupBytes).toBe(160);
    expect(both.bytes).toBe(fp32 - 2 * 2 * D * 4 + 2 * 2 * perEntry + 160);
    // evicting one member keeps the group; evicting the last frees it
    cache.apply({ layers: [[{ keep: [0, 1, 3] }, null], null] });
    expect(cache.memory().groupBytes).toBe(160);
    cache.apply({ layers: [null, [{ keep: [0, 1, 3] }, null]] });
    expect(cache.memory().groupBytes).toBe(0);
    expect(() => cache.apply({ layers: [[{ keep: [0, 1, 2], reencode: [{ index: 0, codec: codec('missing') }] }, null], null] })).toThrow(
      'reencode names codec group "missing", which no decision declared',
    );
  });

  it('a hidden entry is masked in the next forward only and stays in the cache and memory', () => {
    const cache = fillCache(new KVCacheStore(dims), 4);
    const bytes = cache.memory().bytes;
    const applied = cache.apply({ layers: [[{ keep: indexRange(0, 4), hide: [1, 2] }, null], null] });
    expect(applied.hidden).toBe(2);
    expect(applied.heads[0].hiddenTokens).toEqual([1, 2]);
    expect(cache.memory().bytes).toBe(bytes);
    const [layer0] = cache.buildFeeds(1);
    const row = (qh: number) => Array.from(layer0.bias.subarray(qh * 5, (qh + 1) * 5));
    expect(row(0)).toEqual([0, MASK_BIAS, MASK_BIAS, 0, 0]);
    expect(row(2)).toEqual([0, 0, 0, 0, 0]); // KV head 1 hides nothing
    // the forward happened: its new entry arrives and the hidden entries are visible again
    cache.appendForward([new Float32Array(2 * D), new Float32Array(2 * D)], [new Float32Array(2 * D), new Float32Array(2 * D)], 1, [4], 4);
    expect(Array.from(cache.buildFeeds(1)[0].bias.subarray(0, 6))).toEqual([0, 0, 0, 0, 0, 0]);
    expect(() => cache.apply({ layers: [[{ keep: [0, 1], hide: [3] }, null], null] })).toThrow(PolicyDecisionError);
  });
});

describe('transactions', () => {
  it('rollback returns entries, columns, codec groups and token count to their state at begin', () => {
    const cache = withColumns();
    const before = cache.snapshot();
    cache.begin();
    cache.writeColumn(0, 0, 'peak')[0] = 99;
    cache.appendForward([new Float32Array(2 * D), new Float32Array(2 * D)], [new Float32Array(2 * D), new Float32Array(2 * D)], 1, [6], 6);
    cache.apply({ groups: [{ id: 'g', kBytes: 8, vBytes: 8 }], layers: [[{ keep: [0, 6], merge: [{ members: [1, 2], weights: [0.5, 0.5] }], reencode: [{ index: 6, codec: codec('g') }] }, null], null] });
    cache.apply({ layers: [[{ keep: [0, 2], hide: [2] }, null], null] });
    cache.declareColumns([{ name: 'extra', width: 1, reduce: 'sum', initial: 0 }]);
    cache.rollback();
    expect(cache.snapshot()).toEqual(before);
    // and commit keeps the changes
    cache.begin();
    cache.apply({ layers: [[{ keep: [5] }, null], null] });
    cache.commit();
    expect(Array.from(cache.tokens(0, 0))).toEqual([5]);
  });

  it('property: any two decisions (evict, merge, re-encode, move, hide, scores) roll back to the exact state', () => {
    /** a random head decision over n entries from a list of random draws */
    const headDecision = (n: number, draws: number[]): HeadDecision => {
      const at = (k: number) => draws[k % draws.length];
      const roleOf = Array.from({ length: n }, (_, i) => (at(i) < 0.55 ? 'keep' : at(i) < 0.8 ? 'merge' : 'evict'));
      if (!roleOf.includes('keep')) roleOf[n - 1] = 'keep';
      const keep = roleOf.flatMap((r, i) => (r === 'keep' ? [i] : []));
      const pool = roleOf.flatMap((r, i) => (r === 'merge' ? [i] : []));
      const merge = [];
      for (let g = 0; g + 1 < pool.length; g += 2) merge.push({ members: [pool[g], pool[g + 1]], weights: [0.25, 0.75], anchor: pool[g + (at(g) < 0.5 ? 0 : 1)] });
      const picks = keep.filter((_, k) => at(k + 7) < 0.3);
      return {
        keep,
        merge,
        reencode: picks.slice(0, 2).map((index) => ({ index, codec: codec(), keys: new Float32Array(D).fill(at(index)) })),
        reposition: picks.slice(2, 4).map((index) => ({ index, pos: index + 3 })),
        hide: keep.filter((_, k) => at(k + 3) < 0.2),
        scores: Array.from({ length: n }, (_, i) => at(i + 11)),
      };
    };
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 12 }), fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 16, maxLength: 16 }), (n, draws) => {
        const cache = fillCache(new KVCacheStore(dims, new Rope({ theta: 10000, dim: D }, D)), n);
        cache.declareColumns(COLUMNS);
        cache.writeColumn(0, 1, 'mass').fill(3);
        const before = cache.snapshot();
        cache.begin();
        const first = { layers: [[headDecision(n, draws), null], [null, headDecision(n, draws.slice(3))]] };
        cache.apply(first);
        cache.writeColumn(1, 1, 'peak').fill(9);
        const second = { layers: [[headDecision(cache.length(0, 0), draws.slice(5)), null], null] };
        cache.apply(second);
        cache.rollback();
        expect(cache.snapshot()).toEqual(before);
      }),
      { numRuns: 150 },
    );
  });
});
