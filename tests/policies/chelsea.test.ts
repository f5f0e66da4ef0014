/** Chelsea: chunks, A/B sets, soft matching, centroid merges, rounds, budgets and online decoding — by hand — and a tiny-model run. */
import { describe, expect, it } from 'vitest';
import type { KVCacheStore } from '../../engine/cache/store.ts';
import type { Decision, MergeGroup } from '../../engine/cache/decision.ts';
import { standaloneEnv } from '../../engine/pipeline/pipeline.ts';
import { chunkRuns, matchRun, protectedSpan, softMatchRounds, takeEdges, type Edge, type SoftMatchRank } from '../../engine/pipeline/soft-matching.ts';
import { refreshEdges } from '../../engine/pipeline/soft-matching-online.ts';
import { createPolicy } from '../../engine/policies/spec.ts';
import { indexRange } from '../../engine/policies/types.ts';
import { contextFor, integrationRun, prefillObservation, stepObservation, type Dims } from './helpers/policy.ts';
import { appendRows, storeOf } from './helpers/store.ts';

const ONE: Dims = { nLayers: 1, nKvHeads: 1, nHeads: 1, headDim: 2 };
const rad = (deg: number) => (deg * Math.PI) / 180;
const unit = (deg: number) => [Math.cos(rad(deg)), Math.sin(rad(deg))];
const cos = (a: number[], b: number[]) => (a[0] * b[0] + a[1] * b[1]) / (Math.hypot(a[0], a[1]) * Math.hypot(b[0], b[1]));

/** A one-head cache with these 2-d keys (tokens / positions 0..n−1); value i is (i, 10·i). */
const cacheOf = (keys: number[][]): KVCacheStore => storeOf(ONE, keys.length, (_, __, t) => keys[t], (_, __, t) => [t, 10 * t]);
const append = (store: KVCacheStore, key: number[], value: number[]) => appendRows(store, 1, () => key, () => value);
/** A one-head cache of the first `n` of `keys`, each its own value; `appendKey` adds the next one. */
const keyCache = (dims: Dims, keys: number[][], n: number) => storeOf(dims, n, (_, __, t) => keys[t], (_, __, t) => keys[t]);
const appendKey = (store: KVCacheStore, keys: number[][]) => appendRows(store, 1, (_, __, t) => keys[t], (_, __, t) => keys[t]);

function groupsOf(decision: Decision): { members: readonly number[]; anchor: number | undefined }[] {
  return (decision.layers?.[0]?.[0]?.merge ?? []).map((g) => ({ members: g.members, anchor: g.anchor }));
}

// two chunks of 4 (chunk=4); A = ranks 0, 2 (entries 0, 2 | 4, 6), B = ranks 1, 3 (1, 3 | 5, 7)
const DEG = [0, 10, 90, 60, 180, 240, 10, 300];
// (as the cache stores them: float32)
const KEYS = DEG.map((deg) => unit(deg).map(Math.fround));
// edges: 0→1 cos 10°, 2→3 cos 30°, 4→5 cos 60° (4→7: cos 120°), 6→7 cos 70° (6→5: cos 130°)
const EDGES = [
  { a: 0, b: 1, similarity: cos(KEYS[0], KEYS[1]) },
  { a: 2, b: 3, similarity: cos(KEYS[2], KEYS[3]) },
  { a: 4, b: 5, similarity: cos(KEYS[4], KEYS[5]) },
  { a: 6, b: 7, similarity: cos(KEYS[6], KEYS[7]) },
];
const BASE = 'chelsea:chunk=4,sinks=0,recent=0,batch=1';

describe('chelsea: building blocks', () => {
  it('chunks: runs of consecutive entries whose position lies in the same chunk ⌊pos / c⌋', () => {
    expect(chunkRuns([0, 1, 2, 3, 4, 5, 6, 7], indexRange(0, 8), 4)).toEqual([
      [0, 4],
      [4, 8],
    ]);
    // merged entries sit at their anchor's position: chunk boundaries stay where they were
    expect(chunkRuns([1, 3, 5, 9, 12, 13], indexRange(0, 6), 4)).toEqual([
      [0, 2],
      [2, 3],
      [3, 4],
      [4, 6],
    ]);
    expect(chunkRuns([0, 7, 20], [0, 2], 8)).toEqual([
      [0, 1],
      [1, 2],
    ]);
    expect(chunkRuns([], [], 4)).toEqual([]);
  });

  it('A / B sets alternate inside a run; each A finds its most similar B (cosine), ties → the earlier B', () => {
    const keys = Float32Array.from(KEYS.flat());
    const norms = KEYS.map((k) => Math.hypot(k[0], k[1]));
    const edges = matchRun(keys, 2, norms, [4, 5, 6, 7], 1);
    expect(edges.map((e) => [e.a, e.b, e.run])).toEqual([
      [4, 5, 1],
      [6, 7, 1],
    ]);
    expect(edges[0].similarity).toBeCloseTo(Math.cos(rad(60)), 6);
    expect(edges[1].similarity).toBeCloseTo(Math.cos(rad(70)), 6);
    // an odd run: the last entry is an A too; a run of one has no edge
    expect(matchRun(keys, 2, norms, [0, 1, 2], 0).map((e) => [e.a, e.b])).toEqual([
      [0, 1],
      [2, 1],
    ]);
    expect(matchRun(keys, 2, norms, [3], 0)).toEqual([]);
    // a tie between two B's goes to the earlier one
    const tie = Float32Array.from([1, 0, 0, 1, 0, -1]);
    expect(matchRun(tie, 2, [1, 1, 1], [0, 1, 2, 2].slice(0, 3), 0).map((e) => [e.a, e.b])).toEqual([
      [0, 1],
      [2, 1],
    ]);
  });

  it('merge order: head = by similarity (ties → earlier A); chunk = every run’s best, then every run’s second best', () => {
    const edges: Edge[] = [
      { a: 0, b: 1, similarity: 0.9, run: 0 },
      { a: 2, b: 1, similarity: 0.8, run: 0 },
      { a: 4, b: 5, similarity: 0.5, run: 1 },
      { a: 6, b: 5, similarity: 0.5, run: 1 },
      { a: 8, b: 9, similarity: 0.1, run: 2 },
    ];
    expect(takeEdges(edges, 3, 'head').map((e) => e.a)).toEqual([0, 2, 4]);
    expect(takeEdges(edges, 3, 'chunk').map((e) => e.a)).toEqual([0, 4, 8]);
    expect(takeEdges(edges, 5, 'chunk').map((e) => e.a)).toEqual([0, 4, 8, 2, 6]);
    expect(takeEdges(edges, 1, 'chunk').map((e) => e.a)).toEqual([0]);
    expect(takeEdges(edges, 0, 'head')).toEqual([]);
  });

  it('sinks and recent window shrink to fit B − 1, sinks first', () => {
    expect(protectedSpan(100, 4, 16)).toEqual({ sinks: 4, recent: 16 });
    expect(protectedSpan(10, 4, 16)).toEqual({ sinks: 4, recent: 5 });
    expect(protectedSpan(3, 4, 16)).toEqual({ sinks: 2, recent: 0 });
    expect(protectedSpan(1, 4, 16)).toEqual({ sinks: 0, recent: 0 });
  });

  it('rounds: when a round has fewer edges than merges needed, matching runs again on the centroids; chunks double when every run is down to one', () => {
    const keys = Float32Array.from(KEYS.flat());
    const sizes = new Array(8).fill(1);
    const run = (merges: number) => softMatchRounds(keys, 2, indexRange(0, 8), sizes, 0, 8, 4, merges, 'head');
    expect(run(4)).toEqual([
      { members: [0, 1], anchor: 1 },
      { members: [2, 3], anchor: 3 },
      { members: [4, 5], anchor: 5 },
      { members: [6, 7], anchor: 7 },
    ]);
    // 5: round 2 matches centroid(0, 1) (5°) with centroid(2, 3) (75°): cos 70° beats chunk 1's pair (cos 125°)
    expect(run(5)).toEqual([
      { members: [0, 1, 2, 3], anchor: 3 },
      { members: [4, 5], anchor: 5 },
      { members: [6, 7], anchor: 7 },
    ]);
    expect(run(6)).toEqual([
      { members: [0, 1, 2, 3], anchor: 3 },
      { members: [4, 5, 6, 7], anchor: 7 },
    ]);
    // 7: two centroids in two chunks: no edge at c = 4, so chunks double to 8
    expect(run(7)).toEqual([{ members: [0, 1, 2, 3, 4, 5, 6, 7], anchor: 7 }]);
    // never below one entry
    expect(run(20)).toEqual(run(7));
  });
});

describe('chelsea: decisions on a hand-made head', () => {
  it('merges the most similar pairs into their B entries until the head fits its budget (rank=head)', () => {
    const store = cacheOf(KEYS);
    const policy = createPolicy(`${BASE},budget=6,rank=head`, contextFor(ONE));
    const decision = policy.afterPrefill(store, prefillObservation(8));
    // the two best edges are both in chunk 0: 0→1 (cos 10°), 2→3 (cos 30°)
    expect(groupsOf(decision)).toEqual([
      { members: [0, 1], anchor: 1 },
      { members: [2, 3], anchor: 3 },
    ]);
    const head = decision.layers![0]![0]!;
    expect(Array.from(head.keep)).toEqual([4, 5, 6, 7]);
    expect(head.merge!.map((g) => [g.weights, g.count])).toEqual([
      [[0.5, 0.5], 2],
      [[0.5, 0.5], 2],
    ]);
    expect(decision.budgets).toEqual([[6]]);
    store.apply(decision);
    expect(store.length(0, 0)).toBe(6);
    // merged entries at their anchors' places and positions; mean K, mean V; count = tokens (bias log 2)
    expect(Array.from(store.positions(0, 0))).toEqual([1, 3, 4, 5, 6, 7]);
    expect(store.origin(0, 0, 0)).toEqual([0, 1]);
    expect(store.origin(0, 0, 1)).toEqual([2, 3]);
    expect(Array.from(store.counts(0, 0))).toEqual([2, 2, 1, 1, 1, 1]);
    const k = store.keys(0, 0);
    expect(k[0]).toBeCloseTo((KEYS[0][0] + KEYS[1][0]) / 2, 6);
    expect(k[1]).toBeCloseTo((KEYS[0][1] + KEYS[1][1]) / 2, 6);
    expect(k[3]).toBeCloseTo((KEYS[2][1] + KEYS[3][1]) / 2, 6);
    expect(Array.from(store.values(0, 0).slice(0, 4))).toEqual([0.5, 5, 2.5, 25]);
  });

  it('rank=chunk (default) spreads the merges: every chunk’s best edge first', () => {
    const store = cacheOf(KEYS);
    const decision = createPolicy(`${BASE},budget=6`, contextFor(ONE)).afterPrefill(store, prefillObservation(8));
    expect(groupsOf(decision)).toEqual([
      { members: [0, 1], anchor: 1 },
      { members: [4, 5], anchor: 5 },
    ]);
    // every edge taken at budget 4, in both orders
    for (const rank of ['head', 'chunk']) {
      const all = createPolicy(`${BASE},budget=4,rank=${rank}`, contextFor(ONE)).afterPrefill(cacheOf(KEYS), prefillObservation(8));
      expect(groupsOf(all)).toEqual(EDGES.map((e) => ({ members: [e.a, e.b], anchor: e.b })));
    }
  });

  it('several A entries picking one B merge into it together; bias=none gives count 1', () => {
    // one chunk: A = 0, 2; B = 1, 3; both A's are closest to B 1
    const keys = [unit(0), unit(5), unit(10), unit(90)];
    const store = cacheOf(keys);
    const decision = createPolicy('chelsea:chunk=4,sinks=0,recent=0,batch=1,budget=2,bias=none', contextFor(ONE)).afterPrefill(store, prefillObservation(4));
    const head = decision.layers![0]![0]!;
    expect(groupsOf(decision)).toEqual([{ members: [0, 1, 2], anchor: 1 }]);
    expect(head.merge![0].weights).toEqual([1 / 3, 1 / 3, 1 / 3]);
    expect(head.merge![0].count).toBe(1);
    store.apply(decision);
    expect(Array.from(store.counts(0, 0))).toEqual([1, 1]);
    expect(store.origin(0, 0, 0)).toEqual([0, 1, 2]);
    expect(store.values(0, 0)[0]).toBeCloseTo(1, 6);
  });

  it('a centroid merged again stays the exact mean: members weighted by the tokens they stand for', () => {
    const keys = [unit(0), unit(20), unit(40), unit(170)];
    const store = cacheOf(keys);
    // fold tokens 1 and 2 into one entry (anchor 1) first: entries [0] [1+2] [3]
    store.apply({ layers: [[{ keep: [0, 3], merge: [{ members: [1, 2], weights: [0.5, 0.5], anchor: 1 }] }]] });
    const policy = createPolicy('chelsea:chunk=4,sinks=0,recent=0,batch=1,budget=2', contextFor(ONE));
    const decision = policy.afterPrefill(store, prefillObservation(4));
    // A = entry 0 (token 0), entry 2 (token 3); B = entry 1 (tokens 1, 2): 0 is the closer A
    const group = decision.layers![0]![0]!.merge![0];
    expect({ members: group.members, anchor: group.anchor, count: group.count }).toEqual({ members: [0, 1], anchor: 1, count: 3 });
    expect(group.weights[0]).toBeCloseTo(1 / 3, 12);
    expect(group.weights[1]).toBeCloseTo(2 / 3, 12);
    store.apply(decision);
    const mean = [0, 1].map((c) => (keys[0][c] + keys[1][c] + keys[2][c]) / 3);
    expect(store.keys(0, 0)[0]).toBeCloseTo(mean[0], 6);
    expect(store.keys(0, 0)[1]).toBeCloseTo(mean[1], 6);
    expect(store.values(0, 0)[0]).toBeCloseTo(1, 6);
    expect(store.values(0, 0)[1]).toBeCloseTo(10, 6);
    expect(store.origin(0, 0, 0)).toEqual([0, 1, 2]);
    expect(store.positions(0, 0)[0]).toBe(1);
  });

  it('sinks and the recent window never merge; more merges than one round allows take further rounds', () => {
    const store = cacheOf(KEYS);
    // mergeable = entries 1..6: runs {1, 2, 3} (A 1, 3; B 2) and {4, 5, 6} (A 4, 6; B 5)
    const decision = createPolicy('chelsea:chunk=4,sinks=1,recent=1,batch=1,budget=3,rank=head', contextFor(ONE)).afterPrefill(store, prefillObservation(8));
    const groups = groupsOf(decision);
    for (const g of groups) {
      expect(g.members).not.toContain(0);
      expect(g.members).not.toContain(7);
    }
    store.apply(decision);
    // 8 → 3: sink + recent + one centroid of everything between (round 1, round 2 within chunks, then chunks of 8)
    expect(store.length(0, 0)).toBe(3);
    expect(store.origin(0, 0, 1)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(store.counts(0, 0)[1]).toBe(6);
  });

  it('budget 1: sinks and recent shrink to nothing and every entry merges into one centroid', () => {
    const store = cacheOf(KEYS);
    const decision = createPolicy('chelsea:budget=1,chunk=4', contextFor(ONE)).afterPrefill(store, prefillObservation(8));
    expect(groupsOf(decision)).toEqual([{ members: [0, 1, 2, 3, 4, 5, 6, 7], anchor: 7 }]);
    store.apply(decision);
    expect(store.length(0, 0)).toBe(1);
    expect(store.values(0, 0)[0]).toBeCloseTo(3.5, 6);
    expect(store.counts(0, 0)[0]).toBe(8);
  });
});

/** Seeded keys for longer runs. */
function randomKeys(n: number, d: number, seed: number): number[][] {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5;
  return Array.from({ length: n }, () => Array.from({ length: d }, rnd));
}

/** What the method asks for when recomputed from scratch on the cache as it is (no stored edges). */
function fromScratch(store: KVCacheStore, budget: number, batch: number, chunk: number, rank: SoftMatchRank, sinks: number, recent: number) {
  const n = store.length(0, 0);
  if (n <= budget) return [];
  const span = protectedSpan(budget, sinks, recent);
  const to = n - span.recent;
  const sizes = Array.from({ length: n }, (_, i) => store.origin(0, 0, i).length);
  const merges = Math.min(n - budget + batch - 1, to - span.sinks - 1);
  return softMatchRounds(store.keys(0, 0), store.headDim, store.positions(0, 0), sizes, span.sinks, to, chunk, merges, rank);
}

describe('chelsea: online decoding', () => {
  it('each step over budget merges the best current pair', () => {
    const store = cacheOf(KEYS);
    const policy = createPolicy(`${BASE},budget=6,rank=head`, contextFor(ONE));
    store.apply(policy.afterPrefill(store, prefillObservation(8)));
    // entries: [0+1]@1 [2+3]@3 4 5 6 7, then a token at position 8 (a run of its own)
    for (const [t, deg] of [
      [8, 299],
      [9, 120],
      [10, 45],
    ]) {
      append(store, unit(deg), [t, 10 * t]);
      const step = policy.afterStep(store, stepObservation(null));
      const expected = fromScratch(store, 6, 1, 4, 'head', 0, 0);
      expect(expected).toHaveLength(1);
      expect(groupsOf(step)).toEqual(expected);
      store.apply(step);
      expect(store.length(0, 0)).toBe(6);
    }
  });

  it('stored edges: a run is recomputed only when it changed (new entry, merge, eviction)', () => {
    const store = cacheOf(KEYS);
    store.declareColumns([{ name: 'chelsea.match', width: 3, reduce: 'sum', initial: 4 * 2 ** 50 }]);
    const env = standaloneEnv(store, 'step', { prefix: 'chelsea.' });
    const edges = (persist = 1) => refreshEdges(env, 0, 0, 0, store.length(0, 0), 4, persist);
    const first = edges();
    expect([first.recomputed, first.written, first.count]).toEqual([2, true, 4]);
    const check = (e: ReturnType<typeof edges>) =>
      EDGES.forEach(({ a, b, similarity }) => {
        expect(a + e.offset[a]).toBe(b);
        expect(e.similarity[a]).toBeCloseTo(similarity, 12);
      });
    check(first);
    // (the arrays are scratch, reused by the next call)
    const firstSimilarity = EDGES.map(({ a }) => first.similarity[a]);
    const again = edges();
    expect([again.recomputed, again.written]).toEqual([0, false]);
    check(again);
    expect(EDGES.map(({ a }) => again.similarity[a])).toEqual(firstSimilarity);
    // a new token: only its run
    append(store, unit(45), [8, 80]);
    expect(edges().recomputed).toBe(1);
    // a merge in chunk 1: only that run
    store.apply({ layers: [[{ keep: [0, 1, 2, 3, 6, 7, 8], merge: [{ members: [4, 5], weights: [0.5, 0.5], anchor: 5 }] }]] });
    expect(edges().recomputed).toBe(1);
    // an eviction in chunk 0 (another method of a composition): only that run
    store.apply({ layers: [[{ keep: [1, 2, 3, 4, 5, 6] }]] });
    expect(edges().recomputed).toBe(1);
    // below `persist` runs, recomputed runs are not written: they are recomputed next time, with the same result
    append(store, unit(46), [9, 90]);
    const unwritten = edges(8);
    expect([unwritten.recomputed, unwritten.written]).toEqual([1, false]);
    const n = store.length(0, 0);
    const seen = (e: ReturnType<typeof edges>) => Array.from({ length: n }, (_, a) => (e.offset[a] !== 0 ? [a + e.offset[a], e.similarity[a]] : null));
    const before = seen(unwritten);
    const next = edges(8);
    expect(next.recomputed).toBe(1);
    expect(seen(next)).toEqual(before);
  });

  it('decisions from stored edges equal a recomputation from scratch, step after step, and survive rollback exactly', () => {
    const dims: Dims = { nLayers: 1, nKvHeads: 1, nHeads: 1, headDim: 8 };
    for (const [rank, batch, chunk] of [
      ['head', 1, 8],
      ['chunk', 1, 16],
      ['chunk', 4, 8],
      ['head', 3, 16],
    ] as const) {
      const keys = randomKeys(260, 8, 11 + batch + chunk);
      const store = keyCache(dims, keys, 200);
      const spec = `chelsea:budget=48,chunk=${chunk},sinks=2,recent=6,rank=${rank},batch=${batch}`;
      const policy = createPolicy(spec, contextFor(dims));
      const first = policy.afterPrefill(store, prefillObservation(200));
      expect(groupsOf(first)).toEqual(fromScratch(store, 48, batch, chunk, rank, 2, 6));
      store.apply(first);
      expect(store.length(0, 0)).toBe(48 - batch + 1);
      const lengths: number[] = [];
      for (let t = 200; t < 260; t++) {
        appendKey(store, keys);
        const expected = fromScratch(store, 48, batch, chunk, rank, 2, 6);
        store.begin();
        const decision = policy.afterStep(store, stepObservation(null));
        expect(groupsOf(decision), `${spec} step ${t}`).toEqual(expected);
        // a rolled-back step leaves the stored edges as they were: deciding again gives the same
        store.apply(decision);
        store.rollback();
        const again = policy.afterStep(store, stepObservation(null));
        expect(groupsOf(again)).toEqual(expected);
        store.apply(again);
        lengths.push(store.length(0, 0));
        expect(store.length(0, 0)).toBeLessThanOrEqual(48);
      }
      // batch b: the head merges b entries when it goes over B, then grows back
      const cycle = Array.from({ length: batch }, (_, i) => 48 - batch + 1 + ((i + 1) % batch));
      expect(lengths.slice(0, batch).sort((a, b) => a - b)).toEqual([...cycle].sort((a, b) => a - b));
      expect(Math.max(...lengths)).toBe(48);
      expect(Math.min(...lengths)).toBe(48 - batch + 1);
    }
  });

  it('a ratio budget is of the prompt and stays fixed while decoding', () => {
    const dims: Dims = { nLayers: 1, nKvHeads: 1, nHeads: 1, headDim: 4 };
    const keys = randomKeys(120, 4, 3);
    const store = keyCache(dims, keys, 100);
    const policy = createPolicy('chelsea:budget=0.25,batch=1', contextFor(dims));
    store.apply(policy.afterPrefill(store, prefillObservation(100)));
    expect(store.length(0, 0)).toBe(25);
    for (let t = 100; t < 120; t++) {
      appendKey(store, keys);
      const decision = policy.afterStep(store, stepObservation(null));
      expect(decision.budgets).toEqual([[25]]);
      store.apply(decision);
      expect(store.length(0, 0)).toBe(25);
    }
    // every token is still accounted for by some entry
    const origins = Array.from({ length: 25 }, (_, i) => store.origin(0, 0, i)).flat();
    expect(origins.sort((a, b) => a - b)).toEqual(Array.from({ length: 120 }, (_, i) => i));
  });

  it('merge groups carry member weights that sum to 1', () => {
    const store = cacheOf(KEYS);
    const decision = createPolicy('chelsea:budget=2,chunk=4,sinks=0,recent=0', contextFor(ONE)).afterPrefill(store, prefillObservation(8));
    for (const g of decision.layers![0]![0]!.merge as MergeGroup[]) expect(g.weights.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
  });
});

describe('chelsea: tiny model', () => {
  it('prefill + 20 steps stay within the budget; snapshot / restore reproduces the run', async () => {
    await integrationRun('chelsea:budget=24,chunk=8', () => 24);
  });
});
