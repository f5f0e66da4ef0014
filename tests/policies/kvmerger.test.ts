/** KVMerger: merging sets from ε, pivots, Gaussian weights, merged K/V at the pivot's position, budgets, decoding — by hand — and a tiny-model run. */
import { describe, expect, it } from 'vitest';
import type { KVCacheStore } from '../../engine/cache/store.ts';
import { HeadLinks, LINK_COLUMNS, refreshLinks } from '../../engine/pipeline/merging-links.ts';
import { droppedBelow, gaussianWeights, mergingSetAround, mergingSets, pivotGroup, pivotOf, type MergingSetOptions } from '../../engine/pipeline/merging-sets.ts';
import { createPolicy } from '../../engine/policies/spec.ts';
import type { Decision, MergeGroup } from '../../engine/policies/types.ts';
import { calibratedRun } from './helpers/calibration.ts';
import { contextFor, perQueryHead, prefillObservation, range, stepObservation, type Dims } from './helpers/policy.ts';
import { appendRows, storeOf } from './helpers/store.ts';

const reader = (sims: number[]) => (j: number) => sims[j];
const cos = (a: number[], b: number[]) => (a[0] * b[0] + a[1] * b[1]) / (Math.hypot(a[0], a[1]) * Math.hypot(b[0], b[1]));
const groups = (decision: Decision) => decision.layers![0]![0]!.merge!.map((g: MergeGroup) => ({ members: [...g.members], anchor: g.anchor, count: g.count }));

describe('kvmerger: building blocks', () => {
  it('merging sets: maximal runs of adjacent entries whose consecutive similarity exceeds ε (strictly)', () => {
    // sims[j] = cos(k_{j−1}, k_j); sims[0] is never read
    const sims = [0, 0.9, 0.95, 0.3, 0.85, 0.2];
    expect(mergingSets(reader(sims), 0, 6, 0.8)).toEqual([
      { start: 0, end: 3 },
      { start: 3, end: 5 },
      { start: 5, end: 6 },
    ]);
    // 0.9 is not above 0.9: entry 1 starts a new set
    expect(mergingSets(reader(sims), 0, 6, 0.9)).toEqual([
      { start: 0, end: 1 },
      { start: 1, end: 3 },
      { start: 3, end: 4 },
      { start: 4, end: 5 },
      { start: 5, end: 6 },
    ]);
    expect(mergingSets(reader(sims), 0, 6, -1)).toEqual([{ start: 0, end: 6 }]);
    expect(mergingSets(reader(sims), 2, 5, 0.8)).toEqual([
      { start: 2, end: 3 },
      { start: 3, end: 5 },
    ]);
    expect(mergingSetAround(reader(sims), 1, 0, 6, 0.8)).toEqual({ start: 0, end: 3 });
    expect(mergingSetAround(reader(sims), 4, 0, 6, 0.8)).toEqual({ start: 3, end: 5 });
    expect(mergingSetAround(reader(sims), 5, 0, 6, 0.8)).toEqual({ start: 5, end: 6 });
    // bounded by [lo, hi)
    expect(mergingSetAround(reader(sims), 1, 1, 2, 0.8)).toEqual({ start: 1, end: 2 });
  });

  it('pivot: the highest score of the set; ties → the older entry; NaN ranks lowest', () => {
    expect(pivotOf([1, 5, 5, 2], 0, 4)).toBe(1);
    expect(pivotOf([1, 5, 5, 7], 0, 3)).toBe(1);
    expect(pivotOf([NaN, 0, -1], 0, 3)).toBe(1);
    expect(pivotOf([0, 0, 0], 0, 3)).toBe(0);
  });

  it('Gaussian weights w_i ∝ exp(−‖k_p − k_i‖² / 2σ²): fixed σ, σ = mean distance to the pivot, and × tokens', () => {
    // rows: pivot (0, 0), a (3, 4) at distance 5, b (6, 8) at distance 10
    const keys = Float32Array.from([0, 0, 3, 4, 6, 8]);
    const fixed = gaussianWeights(keys, 2, 0, [0, 1], 5);
    const g = Math.exp(-25 / 50);
    expect(fixed[0]).toBeCloseTo(1 / (1 + g), 12);
    expect(fixed[1]).toBeCloseTo(g / (1 + g), 12);
    // σ = (5 + 10) / 2 = 7.5
    const mean = gaussianWeights(keys, 2, 0, [0, 1, 2], 0);
    const ga = Math.exp(-25 / (2 * 7.5 * 7.5));
    const gb = Math.exp(-100 / (2 * 7.5 * 7.5));
    const z = 1 + ga + gb;
    expect(mean).toHaveLength(3);
    expect(mean[0]).toBeCloseTo(1 / z, 12);
    expect(mean[1]).toBeCloseTo(ga / z, 12);
    expect(mean[2]).toBeCloseTo(gb / z, 12);
    expect(mean[0]).toBeGreaterThan(mean[1]);
    // the pivot need not come first
    expect(gaussianWeights(keys, 2, 0, [1, 0], 5)).toEqual([fixed[1], fixed[0]]);
    // × tokens (aligned with the members): a stands for 3 tokens
    const counted = gaussianWeights(keys, 2, 0, [0, 1], 5, [1, 3]);
    expect(counted[1]).toBeCloseTo((3 * g) / (1 + 3 * g), 12);
    // equal keys: σ = 0, every member weighs the same
    expect(gaussianWeights(Float32Array.from([1, 1, 1, 1]), 2, 0, [0, 1], 0)).toEqual([0.5, 0.5]);
  });

  it('dropped entries: the values below hi that keep lacks, ascending', () => {
    const naive = (keep: number[], hi: number) => range(0, hi).filter((v) => !keep.includes(v));
    const cases: [number[], number][] = [
      [[0, 2, 5, 7, 8], 7],
      [[3, 4], 6],
      [[], 4],
      [[0, 1, 2], 3],
      [[1, 2, 3, 9, 10, 20, 21], 21],
      [[5], 3],
    ];
    for (const [keep, hi] of cases) expect(droppedBelow(Int32Array.from(keep), hi)).toEqual(naive(keep, hi));
  });
});

// one layer, one KV head (2 query heads), 2-d keys (stored as given: the test places them as post-RoPE keys)
const dims: Dims = { nLayers: 1, nKvHeads: 1, nHeads: 2, headDim: 2 };
const keys = [
  [1, 0], // 0
  [0, 1], // 1 ┐
  [0.1, 1], // 2 │ one merging set (cos 0.995, 0.998)
  [0.2, 1], // 3 ┘
  [1, -1], // 4 ┐ a set (cos 0.999)
  [1, -0.9], // 5 ┘
  [-1, 0], // 6
  [1, -0.8], // 7 recent
  [0.1, -1], // 8 recent
];
// per query head; the KV head's score is their sum (2×)
const scores = [9, 1, 5, 2, 1, 3, 1, 1, 1];
const value = (i: number) => [i, 10 * i];

const cache = (): KVCacheStore => storeOf(dims, keys.length, (_, __, t) => keys[t], (_, __, t) => value(t));
/** Appends token 9: key (0, 1), value value(9). */
const appendToken9 = (store: KVCacheStore) => appendRows(store, 1, () => [0, 1], () => value(9));

describe('kvmerger: weights=kernel_count', () => {
  it('× the tokens an already-merged member stands for (its origin), not its count (1 with merge_bias=none)', () => {
    const store = cache();
    // entries 1 and 2 merged by hand with count 1: entry 1 of the result stands for 2 tokens
    store.apply({ layers: [[{ keep: [0, 3, 4, 5, 6, 7, 8], merge: [{ members: [1, 2], weights: [0.5, 0.5], anchor: 1, count: 1 }] }]] });
    expect(store.counts(0, 0)[1]).toBe(1);
    expect(store.origin(0, 0, 1)).toEqual([1, 2]);
    const options: MergingSetOptions = { epsilon: 0, sigma: 1, weights: 'kernel_count', count: 'pivot' };
    const group = pivotGroup(store, 0, 0, 0, [1], options);
    // merged key (0.05, 1): ‖k_0 − k_1‖² = 0.95² + 1
    const g = Math.exp(-(0.95 * 0.95 + 1) / 2);
    expect(group.members).toEqual([0, 1]);
    expect(group.weights[1]).toBeCloseTo((2 * g) / (1 + 2 * g), 6);
    expect(group.count).toBe(1);
    // weights=kernel: the kernel alone
    expect(pivotGroup(store, 0, 0, 0, [1], { ...options, weights: 'kernel' }).weights[1]).toBeCloseTo(g / (1 + g), 6);
  });
});

function prefill(spec: string) {
  const store = cache();
  const policy = createPolicy(spec, contextFor(dims));
  const decision = policy.afterPrefill(store, prefillObservation(keys.length, { sums: perQueryHead(dims, () => scores) }));
  return { store, policy, decision };
}

describe('kvmerger: select=h2o on a hand-made head', () => {
  it('H2O keeps heavy + recent; dropped members of a set merge into its kept pivot with Gaussian weights, the rest are evicted', () => {
    const { store, decision } = prefill('kvmerger:heavy=3,recent=2,epsilon=0.8');
    // middle [0, 7): heavy = 0 (9), 2 (5), 5 (3); recent 7, 8; dropped 1, 3, 4, 6
    // sets of the middle: {0}, {1, 2, 3}, {4, 5}, {6}: 1 and 3 → pivot 2, 4 → pivot 5, 6 evicted
    const head = decision.layers![0]![0]!;
    expect(Array.from(head.keep)).toEqual([0, 7, 8]);
    expect(groups(decision)).toEqual([
      { members: [2, 1, 3], anchor: 2, count: 1 },
      { members: [5, 4], anchor: 5, count: 1 },
    ]);
    // σ = mean distance to the pivot = 0.1 in both sets: each other member gets e^{−1/2} of the pivot's weight
    const g = Math.exp(-0.5);
    const w2 = head.merge![0].weights;
    expect(w2[0]).toBeCloseTo(1 / (1 + 2 * g), 6);
    expect(w2[1]).toBeCloseTo(g / (1 + 2 * g), 6);
    expect(w2[2]).toBeCloseTo(g / (1 + 2 * g), 6);
    const w5 = head.merge![1].weights;
    expect(w5[0]).toBeCloseTo(1 / (1 + g), 6);
    expect(w5[1]).toBeCloseTo(g / (1 + g), 6);
    expect(decision.budgets).toEqual([[5]]);

    const applied = store.apply(decision);
    expect(applied.evicted).toBe(1); // token 6
    // budget reached: heavy + recent entries; merged entries at their pivot's place and position
    expect(store.length(0, 0)).toBe(5);
    expect(Array.from(store.positions(0, 0))).toEqual([0, 2, 5, 7, 8]);
    expect(Array.from(store.tokens(0, 0))).toEqual([0, 1, 4, 7, 8]);
    expect(store.origin(0, 0, 1)).toEqual([1, 2, 3]);
    expect(store.origin(0, 0, 2)).toEqual([4, 5]);
    expect(Array.from(store.counts(0, 0))).toEqual([1, 1, 1, 1, 1]); // merge_bias none: no attention bias
    // K and V merged with the same weights
    const k = store.keys(0, 0);
    const v = store.values(0, 0);
    const expectRow = (rows: ArrayLike<number>, i: number, want: number[]) => want.forEach((x, c) => expect(rows[i * 2 + c]).toBeCloseTo(x, 4)); // float32
    const mix = (members: number[], w: readonly number[], of: (i: number) => number[]) => [0, 1].map((c) => members.reduce((s, m, x) => s + w[x] * of(m)[c], 0));
    expectRow(k, 1, mix([2, 1, 3], w2, (i) => keys[i]));
    expectRow(v, 1, mix([2, 1, 3], w2, value));
    expectRow(k, 2, mix([5, 4], w5, (i) => keys[i]));
    expectRow(v, 2, mix([5, 4], w5, value));
    expect(k[1 * 2]).toBeCloseTo(0.1, 6); // symmetric members: the pivot's key again
    expectRow(k, 0, keys[0]);
    // scores: a merged entry keeps its pivot's (merged_score=pivot)
    expect(Array.from(store.column(0, 0, 'kvmerger.attention'))).toEqual([18, 10, 6, 2, 2]);
  });

  it('decoding: the entry H2O drops merges into the kept pivot of its set (merged entries merge again)', () => {
    const { store, policy, decision } = prefill('kvmerger:heavy=3,recent=2,epsilon=0.8');
    store.apply(decision);
    const merged5 = [store.keys(0, 0)[4], store.keys(0, 0)[5]];
    // a new token; the middle is now [0, 4): tokens 0, {1,2,3}, {4,5}, 7 — token 7 (score 2) is dropped,
    // and its key (1, −0.8) is close to the merged {4,5} (cos > 0.99): they form a set, pivot {4,5}
    appendToken9(store);
    const step = policy.afterStep(store, stepObservation(perQueryHead(dims, () => [0, 0, 0, 0, 0, 1])));
    expect(cos(merged5, keys[7])).toBeGreaterThan(0.8);
    const head = step.layers![0]![0]!;
    expect(Array.from(head.keep)).toEqual([0, 1, 4, 5]);
    expect(groups(step)).toEqual([{ members: [2, 3], anchor: 2, count: 1 }]);
    const d = Math.hypot(merged5[0] - keys[7][0], merged5[1] - keys[7][1]);
    const g = Math.exp(-(d * d) / (2 * d * d));
    expect(head.merge![0].weights[1]).toBeCloseTo(g / (1 + g), 6);
    store.apply(step);
    expect(store.length(0, 0)).toBe(5);
    expect(store.origin(0, 0, 2)).toEqual([4, 5, 7]);
    expect(Array.from(store.positions(0, 0))).toEqual([0, 2, 5, 8, 9]);
  });

  it('merge_bias=log_count counts the tokens merged; merged_score=sum adds the members’ scores; a fixed σ', () => {
    const { store, decision } = prefill('kvmerger:heavy=3,recent=2,epsilon=0.8,merge_bias=log_count,merged_score=sum,sigma=1');
    expect(groups(decision).map((g) => g.count)).toEqual([3, 2]);
    const g = Math.exp(-0.01 / 2);
    expect(decision.layers![0]![0]!.merge![1].weights[1]).toBeCloseTo(g / (1 + g), 6);
    store.apply(decision);
    expect(Array.from(store.counts(0, 0))).toEqual([1, 3, 2, 1, 1]);
    expect(Array.from(store.column(0, 0, 'kvmerger.attention'))).toEqual([18, 16, 8, 2, 2]);
  });

  it('ε decides the sets: above every similarity nothing merges (H2O)', () => {
    const { decision } = prefill('kvmerger:heavy=3,recent=2,epsilon=0.9999');
    expect(Array.from(decision.layers![0]![0]!.keep)).toEqual([0, 2, 5, 7, 8]);
    expect(decision.layers![0]![0]!.merge).toBeUndefined();
  });

  it('a head within its budget is left as it is', () => {
    const { decision } = prefill('kvmerger:heavy=5,recent=4');
    expect(decision.layers![0]![0]!.merge).toBeUndefined();
    expect(Array.from(decision.layers![0]![0]!.keep)).toEqual(range(0, 9));
  });
});

describe('kvmerger: select=sets on a hand-made head', () => {
  it('every set of the middle collapses into its pivot; the sets with the best pivots fill the heavy places', () => {
    // sets {0}, {1,2,3}, {4,5}, {6} with pivot scores 9, 5, 3, 1: heavy = 4 keeps all four
    const sets = prefill('kvmerger:heavy=4,recent=2,select=sets').decision;
    expect(Array.from(sets.layers![0]![0]!.keep)).toEqual([0, 6, 7, 8]);
    expect(groups(sets)).toEqual([
      { members: [2, 1, 3], anchor: 2, count: 1 },
      { members: [5, 4], anchor: 5, count: 1 },
    ]);
    // select=h2o at the same budget keeps entry 3 and evicts 6 instead
    const h2o = prefill('kvmerger:heavy=4,recent=2').decision;
    expect(Array.from(h2o.layers![0]![0]!.keep)).toEqual([0, 3, 7, 8]);
    expect(groups(h2o)).toEqual([
      { members: [2, 1], anchor: 2, count: 1 },
      { members: [5, 4], anchor: 5, count: 1 },
    ]);
    // heavy = 2: the two best sets stay, the others leave; the head ends below its budget
    const { store, decision } = prefill('kvmerger:heavy=2,recent=2,select=sets');
    expect(Array.from(decision.layers![0]![0]!.keep)).toEqual([0, 7, 8]);
    expect(groups(decision)).toEqual([{ members: [2, 1, 3], anchor: 2, count: 1 }]);
    store.apply(decision);
    expect(store.length(0, 0)).toBe(4);
  });
});

describe('kvmerger: consecutive similarities kept incrementally', () => {
  const fresh = (store: KVCacheStore) => {
    const n = store.length(0, 0);
    const k = store.keys(0, 0);
    return range(1, n).map((j) => cos([k[(j - 1) * 2], k[(j - 1) * 2 + 1]], [k[j * 2], k[j * 2 + 1]]));
  };

  it('after merges, evictions, rollback and a new entry the stored and lazily read links equal fresh cosines', () => {
    const store = cache();
    store.declareColumns(LINK_COLUMNS);
    // a full refresh writes every row
    const all = refreshLinks(store, 0, 0, 'link', undefined, 0);
    expect(Array.from(all.subarray(1)).map((x) => +x.toFixed(9))).toEqual(fresh(store).map((x) => +x.toFixed(9)));
    // merge 1–3 into 2, evict 6
    store.begin();
    store.apply({ layers: [[{ keep: [0, 4, 5, 7, 8], merge: [{ members: [2, 1, 3], weights: [0.5, 0.25, 0.25], anchor: 2 }] }]] });
    store.appendLayer(0, Float32Array.from([0.3, 0.7]), Float32Array.from([0, 0]), 1, [9], 9);
    const links = new HeadLinks(1000).open(store, 0, 0, 'link');
    const lazy = range(1, store.length(0, 0)).map((j) => links.sim(j));
    links.close();
    expect(lazy.map((x) => +x.toFixed(9))).toEqual(fresh(store).map((x) => +x.toFixed(9)));
    // rows 0 (unchanged) and 4 → 5 (unchanged pair) are still stored; the merged entry's and its neighbours' are not
    const column = store.column(0, 0, 'link');
    expect(column[3 * 1 + 1]).toBe(3); // merged stamp: 1 + 1 + 1
    // a full refresh writes them back; values unchanged
    const written = refreshLinks(store, 0, 0, 'link', undefined, 0);
    expect(Array.from(written.subarray(1)).map((x) => +x.toFixed(9))).toEqual(fresh(store).map((x) => +x.toFixed(9)));
    store.rollback();
    // rolled back: the original head and its stored links
    expect(store.length(0, 0)).toBe(9);
    const again = new HeadLinks(1000).open(store, 0, 0, 'link');
    expect(range(1, 9).map((j) => +again.sim(j).toFixed(9))).toEqual(fresh(store).map((x) => +x.toFixed(9)));
  });

  it('a decision is the same whether links were written back or are recomputed on each read', () => {
    const step = (writeBack: boolean) => {
      const { store, policy, decision } = prefill('kvmerger:heavy=3,recent=2');
      store.apply(decision);
      appendToken9(store);
      if (writeBack) refreshLinks(store, 0, 0, 'kvmerger.link', undefined, 0);
      return policy.afterStep(store, stepObservation(perQueryHead(dims, () => [0, 0, 0, 0, 0, 1])));
    };
    expect(step(true)).toEqual(step(false));
  });
});

describe('kvmerger on the tiny fixture', () => {
  it('prefill 100 + 20 steps: every head at heavy + recent, entries merged; snapshot/restore is exact', async () => {
    const session = await calibratedRun('kvmerger:heavy=16,recent=16,epsilon=0.5', () => 32, null);
    let merged = 0;
    for (let l = 0; l < session.dims.nLayers; l++) {
      for (let h = 0; h < session.dims.nKvHeads; h++) {
        expect(session.cache.length(l, h)).toBe(32);
        const positions = session.cache.positions(l, h);
        for (let i = 0; i < session.cache.length(l, h); i++) {
          const origin = session.cache.origin(l, h, i);
          if (origin.length > 1) {
            merged++;
            // the merged entry sits at its pivot's position, one of its own tokens
            expect(origin).toContain(positions[i]);
          }
        }
      }
    }
    expect(merged).toBeGreaterThan(0);
  });

  it('select=sets: every head within heavy + recent', async () => {
    await calibratedRun('kvmerger:heavy=16,recent=16,epsilon=0.5,select=sets', () => 32, null);
  });
});
