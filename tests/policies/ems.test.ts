/** EMS: Global-Local scores, the head-wise evict-then-merge split, merges by hand — and a tiny-model run. */
import { describe, expect, it } from 'vitest';
import type { MergeGroup } from '../../engine/cache/decision.ts';
import { KVCacheStore } from '../../engine/cache/store.ts';
import { fuseGlobalLocal, globalLocalScorer, type GlobalLocalOptions } from '../../engine/pipeline/global-local.ts';
import { standaloneEnv } from '../../engine/pipeline/pipeline.ts';
import { emsWeights, planHead, splitRest, type EmsOptions } from '../../engine/policies/ems.ts';
import { createPolicy } from '../../engine/policies/spec.ts';
import { indexRange, type PrefillObservation, type StepObservation } from '../../engine/policies/types.ts';
import { calibratedRun } from './helpers/calibration.ts';
import { contextFor, type Dims } from './helpers/policy.ts';
import { appendRows, storeOf } from './helpers/store.ts';

/** One layer, `nKvHeads` KV heads with 2 query heads each, 2-d keys; value j is (j, 10·j). */
function store(keys: number[][][]): KVCacheStore {
  return storeOf({ nLayers: 1, nKvHeads: keys.length, nHeads: 2 * keys.length, headDim: 2 }, keys[0].length, (_, h, t) => keys[h][t], (_, __, t) => [t, 10 * t]);
}

/** Appends token 8 (key (0.95, 0.05), value (8, 80)) to a one-head store. */
const appendToken8 = (cache: KVCacheStore) => appendRows(cache, 1, () => [0.95, 0.05], () => [8, 80]);

/** Eight 2-d keys for one head (the hand-made head of planHead and of the policy tests). */
const KEYS = [
  [1, 0],
  [0.9, 0.1],
  [0, 1],
  [-1, 0],
  [0.6, 0.8],
  [0.1, 1],
  [0.5, -0.5],
  [-0.5, -0.5],
];

/** A prefill observation: per KV head, the prompt's column sums and its last rows (both query heads alike). */
function prefill(tokenCount: number, sums: number[][], windowRows: number[][][]): PrefillObservation {
  const rows = windowRows[0].length;
  return {
    firstToken: 0,
    tokenCount,
    attentionSums: [sums.flatMap((s) => [Float32Array.from(s), Float32Array.from(s)])],
    windowAttention: [windowRows.flatMap((r) => [Float32Array.from(r.flat()), Float32Array.from(r.flat())])],
    windowQueries: null,
    windowRows: rows,
  };
}

function step(rows: number[][], tokenIndex: number): StepObservation {
  return { step: 0, tokenIndex, position: tokenIndex, attention: [rows.map((r) => Float32Array.from(r))], queries: null };
}

const close = (actual: ArrayLike<number>, expected: number[], digits = 6) => {
  expect(actual.length).toBe(expected.length);
  expected.forEach((x, i) => expect(actual[i]).toBeCloseTo(x, digits));
};

/** Merge groups: members, anchor and count exactly, weights to 6 digits. */
function expectGroups(actual: readonly MergeGroup[] | undefined, expected: { members: number[]; weights: number[]; anchor: number; count: number }[]) {
  expect((actual ?? []).map((g) => ({ members: [...g.members], anchor: g.anchor, count: g.count }))).toEqual(expected.map(({ members, anchor, count }) => ({ members, anchor, count })));
  expected.forEach((g, i) => close(actual![i].weights, g.weights));
}

describe('ems: Global-Local scores', () => {
  const dims: Dims = { nLayers: 1, nKvHeads: 1, nHeads: 2, headDim: 2 };
  // causal prompt rows of the two query heads (row r sees entries 0..r); gqa mean averages them
  const qh0 = [
    [1, 0, 0, 0],
    [0.5, 0.5, 0, 0],
    [0.2, 0.2, 0.6, 0],
    [0.1, 0.3, 0.2, 0.4],
  ];
  const qh1 = [
    [1, 0, 0, 0],
    [0.9, 0.1, 0, 0],
    [0.4, 0.2, 0.4, 0],
    [0.5, 0.1, 0.1, 0.3],
  ];
  const colSums = (rows: number[][]) => rows[0].map((_, j) => rows.reduce((s, r) => s + r[j], 0));

  function scored(options: Partial<GlobalLocalOptions>, windowRows: number) {
    const cache = new KVCacheStore(dims, null);
    cache.appendLayer(0, new Float32Array(8).fill(1), new Float32Array(8), 4, indexRange(0, 4), 0);
    cache.tokenCount = 4;
    const scorer = globalLocalScorer({ window: 2, stride: 1, gqa: 'mean', fusion: 'max', mix: 0.5, ...options });
    cache.declareColumns(scorer.columns);
    const observation: PrefillObservation = {
      firstToken: 0,
      tokenCount: 4,
      attentionSums: [[Float32Array.from(colSums(qh0)), Float32Array.from(colSums(qh1))]],
      windowAttention: [[Float32Array.from(qh0.slice(4 - windowRows).flat()), Float32Array.from(qh1.slice(4 - windowRows).flat())]],
      windowQueries: null,
      windowRows,
    };
    scorer.observe!(standaloneEnv(cache, 'prefill', { prefill: observation }));
    return { cache, scorer };
  }

  it('global = attention per query that could see the entry; local = per query of the last W; fused by max or a mix', () => {
    const { cache, scorer } = scored({}, 2);
    expect(scorer.needs?.prefillWindow).toBe(2); // W + s − 1
    const env = standaloneEnv(cache, 'prefill');
    // mean rows: [1,0,0,0], [.7,.3,0,0], [.3,.2,.5,0], [.3,.2,.15,.35] → G = [2.3, .7, .65, .35], seen by 4, 3, 2, 1
    const { global, local } = scorer.parts(env, 0, 0);
    close(global, [2.3 / 4, 0.7 / 3, 0.65 / 2, 0.35]);
    // W = 2: the last two rows [.6, .4, .65, .35] over min(seen, 2) = 2, 2, 2, 1
    close(local, [0.3, 0.2, 0.325, 0.35]);
    close(scorer.headScores(env, 0, 0)!, [0.575, 0.7 / 3, 0.325, 0.35]);
    close(fuseGlobalLocal(global, local, 'mix', 0.25), [0.25 * 0.575 + 0.75 * 0.3, 0.25 * (0.7 / 3) + 0.75 * 0.2, 0.325, 0.35]);
    expect(scorer.rows).toBe(4);
  });

  it('a decode step moves the local window by one row (snapshots of G every row at stride 1)', () => {
    const { cache, scorer } = scored({}, 2);
    cache.appendLayer(0, new Float32Array(2).fill(1), new Float32Array(2), 1, [4], 4);
    cache.tokenCount = 5;
    const rows = [
      [0.1, 0.1, 0.1, 0.1, 0.6],
      [0.3, 0.1, 0.1, 0.1, 0.4],
    ];
    scorer.observe!(standaloneEnv(cache, 'step', { step: { step: 0, tokenIndex: 4, position: 4, attention: [rows.map((r) => Float32Array.from(r))], queries: null } }));
    const { global, local } = scorer.parts(standaloneEnv(cache, 'step'), 0, 0);
    // new mean row [.2, .1, .1, .1, .5]: G = [2.5, .8, .75, .45, .5] over 5, 4, 3, 2, 1
    close(global, [0.5, 0.2, 0.25, 0.225, 0.5]);
    // the last two rows (prompt row 4 + this one) [.5, .3, .25, .45, .5] over 2, 2, 2, 2, 1
    close(local, [0.25, 0.15, 0.125, 0.225, 0.5]);
  });

  it('with a stride the window spans W … W + s − 1 rows: W = 2, s = 2 reads the snapshot after row 2', () => {
    const { cache, scorer } = scored({ stride: 2 }, 3);
    expect(scorer.needs?.prefillWindow).toBe(3);
    expect(scorer.windowStart(4)).toBe(2);
    expect(scorer.windowStart(5)).toBe(2);
    expect(scorer.windowStart(6)).toBe(4);
    close(scorer.parts(standaloneEnv(cache, 'prefill'), 0, 0).local, [0.3, 0.2, 0.325, 0.35]);
    cache.appendLayer(0, new Float32Array(2).fill(1), new Float32Array(2), 1, [4], 4);
    cache.tokenCount = 5;
    const rows = [
      [0.1, 0.1, 0.1, 0.1, 0.6],
      [0.3, 0.1, 0.1, 0.1, 0.4],
    ];
    scorer.observe!(standaloneEnv(cache, 'step', { step: { step: 0, tokenIndex: 4, position: 4, attention: [rows.map((r) => Float32Array.from(r))], queries: null } }));
    // R = 5, B = 2: rows 3, 4, 5 = [.8, .5, .75, .45, .5] over min(seen, 3) = 3, 3, 3, 2, 1
    close(scorer.parts(standaloneEnv(cache, 'step'), 0, 0).local, [0.8 / 3, 0.5 / 3, 0.25, 0.225, 0.5]);
  });

  it('prompt rows the observation lacks count as zero in the local window', () => {
    const { cache, scorer } = scored({}, 1);
    // only the last row [.3, .2, .15, .35] is known: G(2) is taken as G(3), so L = that row
    close(scorer.parts(standaloneEnv(cache, 'prefill'), 0, 0).local, [0.15, 0.1, 0.075, 0.35]);
  });
});

describe('ems: split, weights and one head’s plan', () => {
  it('split by score: merge iff GL ≥ θ·mean of the head; the threshold is measured once and reused', () => {
    const scores = [0.9, 0.15, 0.3, 0.02, 0.2, 0.1, 0.75, 0.5]; // mean 0.365
    const measured = splitRest([1, 3, 5], scores, 'score', 0.25);
    expect(measured.merge).toEqual([true, false, true]);
    expect(measured.threshold).toBeCloseTo(0.09125, 12);
    expect(splitRest([1, 3, 5], scores, 'score', 0.25, 0.12)).toEqual({ merge: [true, false, false], threshold: 0.12 });
    // a sparse head (the mass on one entry) evicts what a flat head merges
    expect(splitRest([2, 3], [3, 0.1, 0.1, 0.1], 'score', 0.5).merge).toEqual([false, false]);
    expect(splitRest([2, 3], [0.3, 0.3, 0.3, 0.3], 'score', 0.5).merge).toEqual([true, true]);
    // no attention yet: everything merges and no threshold is kept
    expect(splitRest([0, 1], [0, 0, 0], 'score', 0.5)).toEqual({ merge: [true, true], threshold: null });
  });

  it('split by mass, and the two ablations', () => {
    // rest scores .4, .1, .3, .2 (mass 1): θ = .6 takes .4 then .3 (≥ .6), threshold .3
    expect(splitRest([0, 1, 2, 3], [0.4, 0.1, 0.3, 0.2], 'mass', 0.6)).toEqual({ merge: [true, false, true, false], threshold: 0.3 });
    expect(splitRest([0, 1], [0.4, 0.1], 'merge', 0.6)).toEqual({ merge: [true, true], threshold: null });
    expect(splitRest([0, 1], [0.4, 0.1], 'evict', 0.6)).toEqual({ merge: [false, false], threshold: null });
  });

  it('merge weights ∝ attention, GL or tokens, falling back to tokens without attention', () => {
    // tokens are aligned with the members: entries 0, 1, 2 stand for 1, 3, 2 tokens
    const sources = { attention: [3, 1, 0], scores: [0.2, 0.6, 0] };
    expect(emsWeights([0, 1], 'attention', sources, [1, 3])).toEqual([0.75, 0.25]);
    close(emsWeights([0, 1], 'score', sources, [1, 3]), [0.25, 0.75], 12);
    expect(emsWeights([0, 1], 'uniform', sources, [1, 3])).toEqual([0.25, 0.75]);
    expect(emsWeights([2, 1], 'attention', { ...sources, attention: [0, 0, 0] }, [2, 3])).toEqual([0.4, 0.6]);
  });

  it('centres keep, the lowest are evicted, the middle join their most similar centre; dissimilar ones go to the zero class', () => {
    const keys = KEYS.flat();
    const head = {
      n: 8,
      keep: Int32Array.from([0, 2, 4, 6, 7]),
      recent: 2,
      scores: [0.9, 0.15, 0.3, 0.02, 0.2, 0.1, 0.75, 0.5],
      attention: [7.2, 1.05, 1.8, 0.1, 0.8, 0.3, 1.5, 0.5],
      counts: [1, 1, 1, 1, 1, 2, 1, 1],
      tokens: (members: readonly number[]) => members.map((m) => [1, 1, 1, 1, 1, 2, 1, 1][m]),
      keys,
      d: 2,
    };
    const options: EmsOptions = { split: 'score', theta: 0.25, minSimilarity: 0, weights: 'attention', bias: 'log_count' };
    const plan = planHead(head, options);
    expect(Array.from(plan.centres)).toEqual([0, 2, 4]);
    expect(plan.merged).toEqual([1, 5]);
    expect(plan.evicted).toEqual([3]);
    expect(Array.from(plan.keep)).toEqual([4, 6, 7]);
    expectGroups(plan.merge, [
      { members: [0, 1], weights: [7.2 / 8.25, 1.05 / 8.25], anchor: 0, count: 2 },
      { members: [2, 5], weights: [1.8 / 2.1, 0.3 / 2.1], anchor: 2, count: 3 },
    ]);
    // merge_bias none keeps the centre's count; a high min_similarity sends both to the zero class
    expect(planHead(head, { ...options, bias: 'none' }).merge.map((g) => g.count)).toEqual([1, 1]);
    const gated = planHead(head, { ...options, minSimilarity: 0.996 });
    expect(gated.merged).toEqual([]);
    expect(gated.evicted).toEqual([1, 3, 5]);
    expect(Array.from(gated.keep)).toEqual([0, 2, 4, 6, 7]);
  });
});

describe('ems: the policy on hand-made heads', () => {
  const dims: Dims = { nLayers: 1, nKvHeads: 1, nHeads: 2, headDim: 2 };
  // per query G (attention per query that could see the entry, 8 − j rows) .9, .15, .3, .02, .2, .1, .75, .5
  const sums = [7.2, 1.05, 1.8, 0.1, 0.8, 0.3, 1.5, 0.5];
  // the last two prompt rows look only at the recent entries, so old entries' local scores are 0
  const windowRows = [
    [0, 0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 0, 0, 0, 0.5, 0.5],
  ];
  const spec = 'ems:centres=3,recent=2,local_window=2,local_stride=1,theta=0.25,gqa=mean';

  it('prefill: centres by GL, the rest merged or evicted, merged K/V = Σ w·member, the head at its budget', () => {
    const cache = store([KEYS]);
    const policy = createPolicy(spec, contextFor(dims));
    expect(policy.needs).toMatchObject({ attention: true, prefillWindow: 2 });
    const decision = policy.afterPrefill(cache, prefill(8, [sums], [windowRows]));
    const head = decision.layers![0]![0]!;
    expect(Array.from(head.keep)).toEqual([4, 6, 7]);
    expectGroups(head.merge, [
      { members: [0, 1], weights: [7.2 / 8.25, 1.05 / 8.25], anchor: 0, count: 2 },
      { members: [2, 5], weights: [1.8 / 2.1, 0.3 / 2.1], anchor: 2, count: 2 },
    ]);
    expect(decision.budgets).toEqual([[5]]);
    close(decision.measures!.merged_share, [2 / 3]);
    close(head.scores!, [0.9, 0.15, 0.3, 0.02, 0.2, 0.1, 0.75, 0.5]);
    expect(decision.note).toBe('ems: 3 centres + 2 recent; evicted 1, merged 2 entries');

    const applied = cache.apply(decision);
    expect(applied.evicted).toBe(1);
    expect(cache.length(0, 0)).toBe(5);
    expect(Array.from(cache.tokens(0, 0))).toEqual([0, 2, 4, 6, 7]);
    expect(Array.from(cache.counts(0, 0))).toEqual([2, 2, 1, 1, 1]);
    expect(cache.origin(0, 0, 1)).toEqual([2, 5]);
    const w = 7.2 / 8.25;
    close(cache.keys(0, 0).subarray(0, 4), [w * 1 + (1 - w) * 0.9, (1 - w) * 0.1, (0.3 / 2.1) * 0.1, 1]);
    const v = 1.8 / 2.1;
    close(cache.values(0, 0).subarray(0, 4), [(1 - w) * 1, (1 - w) * 10, v * 2 + (1 - v) * 5, v * 20 + (1 - v) * 50], 5); // float32 storage
    const state = policy.getState() as { stages: [{ rows: number }, number[][]] };
    expect(state.stages[0]).toEqual({ rows: 8 });
    expect(state.stages[1][0][0]).toBeCloseTo(0.25 * (2.92 / 8), 6);
  });

  it('decode: the entry that leaves is judged by the head’s prompt threshold and merged into its nearest centre', () => {
    const cache = store([KEYS]);
    const policy = createPolicy(spec, contextFor(dims));
    cache.apply(policy.afterPrefill(cache, prefill(8, [sums], [windowRows])));
    appendToken8(cache);
    const row = [0.4, 0.1, 0.1, 0.1, 0.1, 0.2];
    const decision = policy.afterStep(cache, step([row, row], 8));
    // G = [8.65, 2.2, .9, 1.6, .6, .2] over 9, 7, 5, 3, 2, 1 rows; local (rows 8, 9) [.2, .05, .05, .3, .3, .2]
    const head = decision.layers![0]![0]!;
    close(head.scores!, [8.65 / 9, 2.2 / 7, 0.18, 1.6 / 3, 0.3, 0.2]);
    // recent: entries 4, 5; centres: 0, 1, 3; entry 2 (token 4, GL .18 ≥ .09125) joins centre 1 (key ≈ (0, 1))
    expect(Array.from(head.keep)).toEqual([0, 3, 4, 5]);
    expectGroups(head.merge, [{ members: [1, 2], weights: [2.2 / 3.1, 0.9 / 3.1], anchor: 1, count: 3 }]);
    cache.apply(decision);
    expect(cache.length(0, 0)).toBe(5);
    expect(cache.origin(0, 0, 1)).toEqual([2, 4, 5]);

  });

  it('decode: with a higher threshold (θ = 2: nothing merged at prefill) the entry that leaves is evicted', () => {
    const cache = store([KEYS]);
    const policy = createPolicy(spec.replace('theta=0.25', 'theta=2'), contextFor(dims));
    const first = policy.afterPrefill(cache, prefill(8, [sums], [windowRows]));
    expect(first.layers![0]![0]!.merge ?? []).toEqual([]);
    cache.apply(first);
    expect(Array.from(cache.tokens(0, 0))).toEqual([0, 2, 4, 6, 7]);
    appendToken8(cache);
    const row = [0.4, 0.1, 0.1, 0.1, 0.1, 0.2];
    const decision = policy.afterStep(cache, step([row, row], 8));
    const head = decision.layers![0]![0]!;
    // G = [7.6, 1.9, .9, 1.6, .6, .2] over 9, 7, 5, 3, 2, 1; local [.2, .05, .05, .3, .3, .2]
    close(head.scores!, [7.6 / 9, 1.9 / 7, 0.18, 1.6 / 3, 0.3, 0.2]);
    // centres 0, 1, 3; entry 2 (GL .18) is below 2 · mean(prompt GL) = .73: evicted
    expect(head.merge ?? []).toEqual([]);
    expect(Array.from(head.keep)).toEqual([0, 1, 3, 4, 5]);
    expect(decision.note).toBe('ems: 3 centres + 2 recent; evicted 1, merged 0 entries');
  });

  it('head-wise: a sparse head evicts its rest, a flat head merges it, at the same budget', () => {
    const d2: Dims = { nLayers: 1, nKvHeads: 2, nHeads: 4, headDim: 2 };
    const n = 8;
    const headKeys = Array.from({ length: n }, (_, j) => [Math.cos(j / 3), Math.sin(j / 3)]);
    const cache = store([headKeys, headKeys]);
    const seen = (j: number) => n - j;
    // sparse: entry 0 holds the attention; flat: every entry alike
    const sparse = Array.from({ length: n }, (_, j) => (j === 0 ? 0.9 : 1 / 64) * seen(j));
    const flat = Array.from({ length: n }, (_, j) => 0.125 * seen(j));
    const zero = [new Array<number>(n).fill(0), new Array<number>(n).fill(0)];
    const policy = createPolicy('ems:centres=3,recent=2,local_window=2,local_stride=1,theta=0.5', contextFor(d2));
    const decision = policy.afterPrefill(cache, prefill(n, [sparse, flat], [zero, zero]));
    const [h0, h1] = decision.layers![0]!;
    expect(h0!.merge ?? []).toEqual([]);
    expect(Array.from(h0!.keep)).toEqual([0, 1, 2, 6, 7]);
    expect(h1!.merge!.flatMap((g) => g.members.slice(1))).toEqual([3, 4, 5]);
    close(decision.measures!.merged_share, [0.5]);
    cache.apply(decision);
    expect([cache.length(0, 0), cache.length(0, 1)]).toEqual([5, 5]);
  });

  it('state: rows and per-head thresholds round-trip; attached without history the oldest are centres, weights by tokens', () => {
    const cache = store([KEYS]);
    const policy = createPolicy(spec, contextFor(dims));
    cache.apply(policy.afterPrefill(cache, prefill(8, [sums], [windowRows])));
    const saved = JSON.parse(JSON.stringify(policy.getState('session')));
    const other = createPolicy(spec, contextFor(dims));
    other.setState(saved);
    expect(other.getState('session')).toEqual(saved);

    const fresh = store([KEYS]);
    const attached = createPolicy(spec, contextFor(dims));
    expect(attached.withoutHistory).toMatch(/no attention history/);
    const decision = attached.onAttach!(fresh);
    const head = decision.layers![0]![0]!;
    // all scores 0: centres 0, 1, 2 (ties → older); 3, 4, 5 merge into their nearest centre (2), weights by tokens
    expect(Array.from(head.keep)).toEqual([0, 1, 6, 7]);
    expect(head.merge).toEqual([{ members: [2, 3, 4, 5], weights: [0.25, 0.25, 0.25, 0.25], anchor: 2, count: 4 }]);
  });

  it('weights by tokens count an already-merged member’s origin, not its count (merge_bias=none leaves it 1)', () => {
    const cache = store([KEYS]);
    // entries 4 and 5 merged by hand with count 1: entry 4 of the result stands for 2 tokens
    cache.apply({ layers: [[{ keep: [0, 1, 2, 3, 6, 7], merge: [{ members: [4, 5], weights: [0.5, 0.5], anchor: 4, count: 1 }] }]] });
    expect(Array.from(cache.counts(0, 0))).toEqual([1, 1, 1, 1, 1, 1, 1]);
    expect(cache.origin(0, 0, 4)).toEqual([4, 5]);
    for (const weights of ['uniform', 'attention']) {
      // attached without history: centres 0, 1, 2; entries 3 ([-1, 0]) and 4 (≈ [0.35, 0.9]) join centre 2 ([0, 1]);
      // weights=uniform by tokens, and weights=attention falls back to tokens (all zero)
      const policy = createPolicy(`ems:centres=3,recent=2,merge_bias=none,weights=${weights}`, contextFor(dims));
      const head = policy.onAttach!(cache).layers![0]![0]!;
      expectGroups(head.merge, [{ members: [2, 3, 4], weights: [0.25, 0.25, 0.5], anchor: 2, count: 1 }]);
    }
  });
});

describe('ems on the tiny fixture', () => {
  it('prefill 100 + 20 steps: every head at centres + recent, entries merged; snapshot/restore is exact', async () => {
    const session = await calibratedRun('ems:centres=16,recent=8', () => 24, null);
    let merged = 0;
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        expect(session.cache.length(l, h)).toBe(24);
        for (let i = 0; i < 24; i++) if (session.cache.origin(l, h, i).length > 1) merged++;
      }
    }
    expect(merged).toBeGreaterThan(0);
    const steps = session.trace.all().filter((e) => e.kind === 'step');
    expect(steps.some((e) => e.decision.merged > 0)).toBe(true);
  });
});
