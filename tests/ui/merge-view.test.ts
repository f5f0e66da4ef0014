/**
 * The merge view's payload (src/lib/worker/pack-merges.ts) and the replay's memory of merges
 * (engine/trace/replay-merges.ts): a hand-made trace with merges written by an older engine (no
 * count, member tokens or similarity), newer merges, a merge of a merged entry and MiniCache's
 * measures and codec; then a real D2O session of the fixture model, held against the live store and
 * through an exported trace file.
 */
import { describe, expect, it } from 'vitest';
import { findPolicy } from '../../engine/policies/index.ts';
import { Session } from '../../engine/session.ts';
import { readTrace } from '../../engine/trace/read.ts';
import { CacheReplay } from '../../engine/trace/replay.ts';
import { ReplayTimeline } from '../../engine/trace/replay-timeline.ts';
import { exportTraceJson, type TraceEvent } from '../../engine/trace/schema.ts';
import { mergeViewAt, packMergeView, shownEvents } from '../../src/lib/worker/pack-merges.ts';
import { TraceViews } from '../../src/lib/worker/pack.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';

type Head = TraceEvent['decision']['heads'][number];
type Merge = Head['merged'][number];

function head(layer: number, before: number, after: number, merged: Merge[], reencoded: Head['reencoded'] = []): Head {
  return { layer, kvHead: 0, before, after, evictedTokens: [], evictedPositions: [], merged, reencoded, repositioned: 0 };
}

function decision(heads: Head[], measures?: Record<string, number[]>): TraceEvent['decision'] {
  const merged = heads.reduce((n, h) => n + h.merged.length, 0);
  const reencoded = heads.reduce((n, h) => n + h.reencoded.length, 0);
  return { heads, evicted: 0, merged, reencoded, scores: null, ...(measures ? { measures } : {}) };
}

/** Only the fields the replay and the packing read; the rest of an event does not matter here. */
function prefill(tokens: number, d: TraceEvent['decision']): TraceEvent {
  return { kind: 'prefill', firstToken: 0, tokenIds: Array.from({ length: tokens }, (_, i) => 10 + i), firstPosition: 0, policy: 'd2o', decision: d } as unknown as TraceEvent;
}
function step(n: number, tokenIndex: number, d: TraceEvent['decision'], policy = 'd2o'): TraceEvent {
  return { kind: 'step', step: n, tokenIndex, position: tokenIndex, policy, decision: d } as unknown as TraceEvent;
}

// 2 layers × 1 KV head, a prompt of 6 tokens (0–5), then tokens 6 and 7
const events: TraceEvent[] = [
  // written by an older engine: weights only
  prefill(6, decision([head(0, 6, 5, [{ into: 1, origins: [1, 2], weights: [0.5, 0.5] }])])),
  // newer: count, member tokens, similarity
  step(0, 6, decision([head(0, 6, 5, [{ into: 2, origins: [3, 4], weights: [0.4, 0.6], count: 2, memberTokens: [4, 3], similarity: [0.9, 0.8] }])])),
  // the merged entry [1, 2] is merged again with token 5; MiniCache-style measures and codec in layer 1
  step(
    1,
    7,
    decision(
      [
        head(0, 6, 5, [{ into: 1, origins: [1, 2, 5], weights: [2 / 3, 1 / 3], count: 3, memberTokens: [1, 5], similarity: [0.95, 0.7] }]),
        head(1, 8, 8, [], [0, 1, 2, 3].map((index) => ({ index, codec: index === 3 ? 'minicache-k' : 'minicache' }))),
      ],
      { layer_similarity: [Number.NaN, 0.92], pair_partner: [1, 0], retained_fraction: [1, 0.5] },
    ),
  ),
];

describe('shownEvents', () => {
  it('the step event, or every event for the newest step (a switch right after it included)', () => {
    expect(shownEvents(events, -1)).toEqual({ from: 0, count: 1 });
    expect(shownEvents(events, 0)).toEqual({ from: 1, count: 2 });
    expect(shownEvents(events, 1)).toEqual({ from: 2, count: 3 });
    expect(shownEvents(events, 2)).toBeNull();
    expect(shownEvents(events.slice(0, 1), -1)).toEqual({ from: 0, count: 1 });
    const switched = [...events, { kind: 'policy', atStep: 2, from: 'd2o', to: 'window', decision: decision([]) } as unknown as TraceEvent];
    expect(shownEvents(switched, 1)).toEqual({ from: 2, count: 4 });
  });
});

describe('packMergeView on a hand-made trace', () => {
  const timeline = new ReplayTimeline({ layers: 2, kvHeads: 1 });
  const at = (s: number, layer = 0) => mergeViewAt(events, (count) => timeline.at(events, count), s, layer, 0);

  it('after the prompt: the older merge, without count, member tokens or similarity', () => {
    const view = at(-1);
    expect(view).toMatchObject({ step: -1, layer: 0, kvHead: 0, tokens: 6, held: 5, policy: 'd2o', madeInAllHeads: 1, detailed: false, depth: null });
    expect(view.entries).toEqual([
      {
        index: 1,
        first: 1,
        origins: [1, 2],
        count: null,
        bias: null,
        members: [
          { token: null, size: null, weight: 0.5, similarity: null },
          { token: null, size: null, weight: 0.5, similarity: null },
        ],
        madeAt: { kind: 'prefill', step: -1 },
        fresh: true,
      },
    ]);
  });

  it("step 0: this step's merge with its details; the prefill's kept, no longer fresh", () => {
    const view = at(0);
    expect(view.detailed).toBe(false);
    expect(view.entries.map((e) => [e.first, e.fresh, e.madeAt.kind])).toEqual([
      [1, false, 'prefill'],
      [3, true, 'step'],
    ]);
    const made = view.entries[1];
    expect(made).toMatchObject({ index: 2, origins: [3, 4], count: 2, madeAt: { kind: 'step', step: 0 } });
    expect(made.bias).toBeCloseTo(Math.log(2), 12);
    expect(made.members).toEqual([
      { token: 4, size: 1, weight: 0.4, similarity: 0.9 },
      { token: 3, size: 1, weight: 0.6, similarity: 0.8 },
    ]);
  });

  it('step 1: a merged entry merged again (its member stood for 2 tokens); the step-0 merge still shows its details', () => {
    const view = at(1);
    expect(view.detailed).toBe(true);
    expect(view.entries.map((e) => e.origins)).toEqual([
      [1, 2, 5],
      [3, 4],
    ]);
    const [again, older] = view.entries;
    expect(again).toMatchObject({ first: 1, count: 3, fresh: true, madeAt: { kind: 'step', step: 1 } });
    expect(again.bias).toBeCloseTo(Math.log(3), 12);
    expect(again.members.map((m) => [m.token, m.size, m.similarity])).toEqual([
      [1, 2, 0.95],
      [5, 1, 0.7],
    ]);
    expect(older).toMatchObject({ first: 3, count: 2, fresh: false, madeAt: { kind: 'step', step: 0 } });
    expect(older.members.map((m) => m.similarity)).toEqual([0.9, 0.8]);
  });

  it("MiniCache's depth: the measures of the latest event that has them, shared entries and the tokens a paired layer kept apart", () => {
    expect(at(0).depth).toBeNull();
    const depth = at(1, 1).depth!;
    expect(depth.from).toEqual({ kind: 'step', step: 1 });
    expect(depth.similarity[0]).toBeNaN();
    expect(depth.similarity[1]).toBe(0.92);
    expect(depth.partner).toEqual([1, 0]);
    expect(depth.retained).toEqual([1, 0.5]);
    expect(depth.shared).toEqual([0, 4]);
    expect(depth.unmerged).toEqual([
      [0, 1, 2, 3, 4, 5, 6, 7],
      [4, 5, 6, 7],
    ]);
    // layer 1 holds no merged entries: only the depth data
    expect(at(1, 1).entries).toEqual([]);
  });

  it('refuses a head or a step the trace does not have', () => {
    expect(() => at(5)).toThrow(RangeError);
    const replay = new CacheReplay({ layers: 2, kvHeads: 1 });
    replay.apply(events[0], 0);
    expect(() => packMergeView(events, { from: 0, count: 1 }, replay, -1, 2, 0)).toThrow(/no layer 2/);
  });

  it("a count of 1 (RazorAttention's count=one) gets no bias, whatever the entry stands for", () => {
    const one = [prefill(5, decision([head(0, 5, 3, [{ into: 1, origins: [1, 2, 3], weights: [1 / 3, 1 / 3, 1 / 3], count: 1, memberTokens: [1, 2, 3], similarity: [0.5, 0.6, 0.7] }])]))];
    const replay = new CacheReplay({ layers: 2, kvHeads: 1 });
    replay.apply(one[0], 0);
    expect(packMergeView(one, { from: 0, count: 1 }, replay, -1, 0, 0).entries[0]).toMatchObject({ origins: [1, 2, 3], count: 1, bias: 0 });
  });

  it('member tokens that name no entry give no member sizes (and no error)', () => {
    const odd = [prefill(4, decision([head(0, 4, 3, [{ into: 0, origins: [0, 1], weights: [0.5, 0.5], count: 2, memberTokens: [0, 9], similarity: [1, 1] }])]))];
    const replay = new CacheReplay({ layers: 2, kvHeads: 1 });
    replay.apply(odd[0], 0);
    const [entry] = packMergeView(odd, { from: 0, count: 1 }, replay, -1, 0, 0).entries;
    expect(entry.members.map((m) => [m.token, m.size])).toEqual([
      [0, null],
      [9, null],
    ]);
  });
});

describe('merge views of real sessions', () => {
  async function run(policy: string, steps: number) {
    const session = new Session(await fixtureModel(), { policy, sampler: { seed: 3 }, trace: { fullSteps: 100 } });
    await session.prefill([1, ...tokenSequence(23, 5)]);
    const timeline = new ReplayTimeline({ layers: 2, kvHeads: 2 });
    const views = [];
    for (let s = 0; s < steps; s++) {
      await session.step();
      // what the live store holds after this step, against the view of the newest step
      for (let l = 0; l < 2; l++) {
        for (let h = 0; h < 2; h++) {
          const view = mergeViewAt(session.trace.all(), (count) => timeline.at(session.trace.all(), count), s, l, h);
          const counts = session.cache.counts(l, h);
          const merged = [];
          for (let i = 0; i < session.cache.length(l, h); i++) if (session.cache.origin(l, h, i).length > 1) merged.push({ index: i, origins: [...session.cache.origin(l, h, i)], count: counts[i] });
          expect(view.entries.map((e) => ({ index: e.index, origins: e.origins, count: e.count })), `step ${s} L${l} kv${h}`).toEqual(merged);
          views.push(view);
        }
      }
    }
    return { session, views };
  }

  it('D2O with the log-count bias: counts, member sizes and weights agree with the store', async () => {
    const { session, views } = await run('d2o:heavy=5,recent=5,merge_bias=log_count', 12);
    const entries = views.flatMap((v) => v.entries);
    expect(entries.length, 'D2O merged').toBeGreaterThan(0);
    expect(views.every((v) => v.detailed)).toBe(true);
    for (const e of entries) {
      // log-count: the entry counts for the tokens it stands for
      expect(e.count).toBe(e.origins.length);
      expect(e.bias).toBeCloseTo(Math.log(e.origins.length), 12);
      expect(e.members.reduce((n, m) => n + m.size!, 0)).toBe(e.origins.length);
      expect(e.members.reduce((n, m) => n + m.weight!, 0)).toBeCloseTo(1, 5);
      for (const m of e.members) {
        expect(e.origins).toContain(m.token);
        expect(m.similarity).toBeGreaterThanOrEqual(-1 - 1e-6);
        expect(m.similarity).toBeLessThanOrEqual(1 + 1e-6);
      }
    }
    expect(views.some((v) => v.entries.some((e) => e.fresh)) && views.some((v) => v.entries.some((e) => !e.fresh))).toBe(true);

    // an exported file replays to the same views (floats to the 6 digits the export keeps)
    const file = new TraceViews(readTrace(exportTraceJson(session.trace)));
    const live = new ReplayTimeline({ layers: 2, kvHeads: 2 });
    for (const s of [0, 5, 11]) {
      const fromFile = file.merges(s, 1, 0);
      const fromLive = mergeViewAt(session.trace.all(), (count) => live.at(session.trace.all(), count), s, 1, 0);
      expect(fromFile.entries.map((e) => [e.origins, e.count, e.fresh, e.madeAt])).toEqual(fromLive.entries.map((e) => [e.origins, e.count, e.fresh, e.madeAt]));
      fromFile.entries.forEach((e, k) => e.members.forEach((m, j) => expect(m.similarity!).toBeCloseTo(fromLive.entries[k].members[j].similarity!, 4)));
    }
  });
});

describe('MiniCache depth from a real session', () => {
  // MiniCache is registered by its own change; until then there is nothing to hold the view against
  it.runIf(findPolicy('minicache') !== undefined)('shared entries and the tokens kept apart agree with the store’s codecs', async () => {
    const session = new Session(await fixtureModel(), { policy: 'minicache:start=0,recent=2,block=2', sampler: { seed: 2 } });
    await session.prefill([1, ...tokenSequence(23, 8)]);
    for (let s = 0; s < 4; s++) await session.step();
    const timeline = new ReplayTimeline({ layers: 2, kvHeads: 2 });
    for (let h = 0; h < 2; h++) {
      const depth = mergeViewAt(session.trace.all(), (count) => timeline.at(session.trace.all(), count), 3, 0, h).depth;
      expect(depth, 'MiniCache measured').not.toBeNull();
      for (let l = 0; l < 2; l++) {
        const codecs = Array.from({ length: session.cache.length(l, h) }, (_, i) => session.cache.codec(l, h, i)?.name ?? null);
        expect(depth!.shared[l]).toBe(codecs.filter((c) => c?.startsWith('minicache')).length);
        if (depth!.unmerged[l]) {
          const apart = codecs.flatMap((c, i) => (c?.startsWith('minicache') ? [] : [...session.cache.origin(l, h, i)]));
          expect(depth!.unmerged[l]).toEqual(apart.sort((a, b) => a - b));
        }
      }
      expect(depth!.partner.some((p) => Number.isFinite(p)), 'some layer is paired').toBe(true);
    }
  });
});
