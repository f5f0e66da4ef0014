/**
 * engine/trace/replay.ts rebuilds what every layer × KV head holds from trace events alone. These
 * tests hold it against the live cache store: after every event of real sessions of the tiny
 * fixture model (evicting, merging, repositioning, prefill-only and calibrated policies, live
 * switches, stepping back), and against the store directly under random decisions that also
 * re-encode. A replay that misplaced, kept or dropped one entry fails them.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { KVCacheStore, type CacheView } from '../../engine/cache/store.ts';
import type { Decision, HeadDecision } from '../../engine/policies/types.ts';
import { Session } from '../../engine/session.ts';
import { CacheReplay, TraceReplayError, type HeldEntries } from '../../engine/trace/replay.ts';
import { ReplayTimeline } from '../../engine/trace/replay-timeline.ts';
import type { DecisionTrace, TraceEvent } from '../../engine/trace/schema.ts';
import { nextPositionAfter, packCacheMap, policyAfter, stepCountOf } from '../../src/lib/worker/pack.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { tinyCalibration } from '../policies/helpers/calibration.ts';

/** One line per head: entries in order, merged entries as [a,b,…], re-encoded ones with their codec. */
function describeHeld(held: HeldEntries): string[] {
  const out: string[] = [];
  for (let l = 0; l < held.layers; l++) {
    for (let h = 0; h < held.kvHeads; h++) {
      const tokens = held.tokens(l, h);
      const parts: string[] = [];
      for (let i = 0; i < tokens.length; i++) {
        const origin = held.origin(l, h, i);
        const codec = held.codec(l, h, i);
        parts.push(`${tokens[i]}${origin.length > 1 ? `[${origin.join(',')}]` : ''}${codec ? `:${codec}` : ''}`);
      }
      out.push(`L${l} kv${h}: ${parts.join(' ')}`);
    }
  }
  return out;
}

/** The live store seen through the same interface (the oracle). */
function storeHeld(cache: CacheView): HeldEntries {
  return {
    layers: cache.nLayers,
    kvHeads: cache.nKvHeads,
    tokenCount: cache.tokenCount,
    length: (l, h) => cache.length(l, h),
    tokens: (l, h) => cache.tokens(l, h),
    origin: (l, h, i) => cache.origin(l, h, i),
    codec: (l, h, i) => cache.codec(l, h, i)?.name ?? null,
  };
}

interface Tally {
  evicted: number;
  merged: number;
  events: number;
}

/** Applies the events the session recorded since the last call and compares with the store. */
function follow(session: Session, replay: CacheReplay, tally: Tally): void {
  const events = session.trace.all();
  for (let i = replay.applied; i < events.length; i++) {
    replay.apply(events[i], i);
    tally.evicted += events[i].decision.evicted;
    tally.merged += events[i].decision.merged;
    tally.events++;
  }
  const where = `after ${events.length} events (${session.policySpec})`;
  expect(describeHeld(replay), where).toEqual(describeHeld(storeHeld(session.cache)));
  expect(replay.tokenCount, where).toBe(session.tokens.length);
  const last = events[events.length - 1].decision;
  expect(packCacheMap(replay, last).codes, where).toEqual(packCacheMap(storeHeld(session.cache), last).codes);
  // the rest of the session state the views show is read from the trace too
  expect(nextPositionAfter(events), where).toBe(session.position);
  expect(stepCountOf(events), where).toBe(session.stepCount);
  expect(policyAfter(events, session.trace.header.policy), where).toBe(session.policySpec);
}

const SPECS: { spec: string; then: string; calibrated?: boolean; merges?: boolean }[] = [
  { spec: 'window:size=12', then: 'streaming:sinks=2,recent=6,positions=p2' },
  { spec: 'streaming:sinks=2,recent=10,positions=p2', then: 'h2o:heavy=4,recent=4' },
  { spec: 'h2o:heavy=6,recent=6', then: 'window:size=8' },
  { spec: 'tova:budget=12', then: 'full' },
  { spec: 'snapkv:budget=16,window=4', then: 'tova:budget=10' },
  { spec: 'lacache:cache_size=16,start=2,span=4', then: 'window:size=10' },
  { spec: 'd2o:heavy=6,recent=6', then: 'd2o:heavy=4,recent=4', merges: true },
  { spec: 'razor:recent=8,recent_min=4,induction_pct=0.3,compensation=weighted', then: 'razor:recent=6,recent_min=4,compensation=plain', calibrated: true, merges: true },
  { spec: 'compresskv:budget=16,window=4,min_layer=4', then: 'window:size=12', calibrated: true },
];

describe('CacheReplay against the live store', () => {
  it.each(SPECS)('$spec, then a switch to $then and a step back', async ({ spec, then, calibrated, merges }) => {
    const model = await fixtureModel();
    const session = new Session(model, {
      policy: spec,
      sampler: { temperature: 1, seed: 3 },
      trace: { fullSteps: 4 },
      ...(calibrated ? { calibration: await tinyCalibration() } : {}),
    });
    const replay = new CacheReplay({ layers: session.dims.nLayers, kvHeads: session.dims.nKvHeads });
    const tally: Tally = { evicted: 0, merged: 0, events: 0 };
    await session.prefill([1, ...tokenSequence(31, 5)]);
    follow(session, replay, tally);
    for (let s = 0; s < 12; s++) {
      await session.step();
      follow(session, replay, tally);
    }
    const snapshot = session.snapshot();
    const atSnapshot = replay.snapshot();
    const applied = replay.applied;
    session.setPolicy(then);
    follow(session, replay, tally);
    for (let s = 0; s < 8; s++) {
      await session.step();
      follow(session, replay, tally);
    }
    // stepping back: the store is restored, the replay too; both go on the same way again
    session.restore(snapshot);
    replay.restore(atSnapshot, applied);
    expect(describeHeld(replay)).toEqual(describeHeld(storeHeld(session.cache)));
    for (let s = 0; s < 3; s++) {
      await session.step();
      follow(session, replay, tally);
    }
    // the sessions really exercised what is replayed
    expect(tally.evicted + tally.merged, 'the policies evicted or merged').toBeGreaterThan(0);
    if (merges) expect(tally.merged, 'the policy merged').toBeGreaterThan(0);
  });

  it('matches what each recorded step attended to (the cache as fed, before the decision)', async () => {
    const session = new Session(await fixtureModel(), { policy: 'd2o:heavy=5,recent=5', sampler: { seed: 1 }, trace: { fullSteps: 100 } });
    await session.prefill([1, ...tokenSequence(23, 9)]);
    for (let s = 0; s < 10; s++) await session.step();
    const events = session.trace.all();
    const replay = new CacheReplay({ layers: 2, kvHeads: 2 });
    events.forEach((e, i) => {
      if (e.kind === 'step' && e.attention) {
        // the replay after the previous event, plus the new token, is what the query saw
        for (let l = 0; l < 2; l++) {
          for (let h = 0; h < 2; h++) {
            const seen = e.attention[l].entries[h];
            expect([...replay.tokens(l, h), e.tokenIndex], `step ${e.step} L${l} kv${h}`).toEqual([...seen.tokens]);
            seen.origins?.forEach((origin, k) => {
              if (origin) expect([...replay.origin(l, h, k)]).toEqual(origin);
            });
          }
        }
      }
      replay.apply(e, i);
    });
  });
});

describe('ReplayTimeline', () => {
  it('reaches any event from checkpoints, follows a trace cut back and regrown differently', async () => {
    const session = new Session(await fixtureModel(), { policy: 'h2o:heavy=5,recent=5', sampler: { temperature: 1, seed: 11 } });
    await session.prefill([1, ...tokenSequence(20, 2)]);
    const states: string[][] = [describeHeld(storeHeld(session.cache))];
    for (let s = 0; s < 40; s++) {
      await session.step();
      states.push(describeHeld(storeHeld(session.cache)));
    }
    const timeline = new ReplayTimeline({ layers: 2, kvHeads: 2 }, 8);
    const events = session.trace.all();
    // random access in both directions
    for (const count of [41, 3, 40, 17, 1, 33, 41, 9]) expect(describeHeld(timeline.at(events, count)), `after ${count} events`).toEqual(states[count - 1]);

    // step back 10, switch policy there, go on: the timeline must notice the different history
    const snapshot = session.snapshot();
    for (let s = 0; s < 10; s++) await session.step();
    expect(describeHeld(timeline.at(session.trace.all()))).toEqual(describeHeld(storeHeld(session.cache)));
    session.restore(snapshot);
    expect(describeHeld(timeline.at(session.trace.all()))).toEqual(describeHeld(storeHeld(session.cache)));
    session.setPolicy('window:size=6');
    for (let s = 0; s < 5; s++) await session.step();
    expect(describeHeld(timeline.at(session.trace.all()))).toEqual(describeHeld(storeHeld(session.cache)));
    // and an older point of the new history
    expect(describeHeld(timeline.at(session.trace.all(), 20))).toEqual(states[19]);
  });
});

describe('a trace that disagrees with itself fails the replay, naming the event', () => {
  async function trace(): Promise<TraceEvent[]> {
    const session = new Session(await fixtureModel(), { policy: 'd2o:heavy=4,recent=4', sampler: { seed: 4 } });
    await session.prefill([1, ...tokenSequence(15, 6)]);
    for (let s = 0; s < 6; s++) await session.step();
    return [...session.trace.all()];
  }
  const replayAll = (events: TraceEvent[]) => {
    const replay = new CacheReplay({ layers: 2, kvHeads: 2 });
    events.forEach((e, i) => replay.apply(e, i));
  };
  /** a copy of event `index` whose decision's first head with evictions / merges is changed */
  function tamper(events: TraceEvent[], change: (head: DecisionTrace['heads'][number]) => boolean): TraceEvent[] {
    for (let i = 0; i < events.length; i++) {
      const heads = events[i].decision.heads.map((h) => ({ ...h, evictedTokens: [...h.evictedTokens], merged: h.merged.map((m) => ({ ...m, origins: [...m.origins] })) }));
      const k = heads.findIndex((h) => change(h));
      if (k >= 0) {
        const copy = [...events];
        copy[i] = { ...events[i], decision: { ...events[i].decision, heads } } as TraceEvent;
        return copy;
      }
    }
    throw new Error('nothing to tamper with');
  }

  it('accepts the real trace', async () => {
    const events = await trace();
    expect(() => replayAll(events)).not.toThrow();
  });
  it('an evicted token it never held', async () => {
    const events = tamper(await trace(), (h) => (h.evictedTokens.length > 0 ? ((h.evictedTokens[0] = 9999), true) : false));
    expect(() => replayAll(events)).toThrow(/event \d+ \(.*\), layer \d KV head \d: evicts token 9999, which the head does not hold/);
  });
  it('an eviction left out (the lengths disagree)', async () => {
    const events = tamper(await trace(), (h) => {
      if (h.evictedTokens.length !== 1) return false;
      h.evictedTokens.pop();
      h.evictedPositions = [];
      return true;
    });
    expect(() => replayAll(events)).toThrow(/the decision left \d+ entries, the replay \d+/);
  });
  it('a merged entry put at another place: caught, or the replay shows a different cache', async () => {
    const honest = await trace();
    const events = tamper(honest, (h) => (h.merged.length > 0 && h.after > 1 ? ((h.merged[0].into = h.merged[0].into === 0 ? 1 : 0), true) : false));
    const replay = new CacheReplay({ layers: 2, kvHeads: 2 });
    const real = new CacheReplay({ layers: 2, kvHeads: 2 });
    let noticed = false;
    for (let i = 0; i < events.length && !noticed; i++) {
      try {
        replay.apply(events[i], i);
      } catch (error) {
        noticed = error instanceof TraceReplayError;
        break;
      }
      real.apply(honest[i], i);
      noticed = describeHeld(replay).join() !== describeHeld(real).join();
    }
    expect(noticed).toBe(true);
  });
});

describe('CacheReplay against the store under random decisions (evict, merge, re-encode)', () => {
  const dims = { nLayers: 1, nKvHeads: 2, nHeads: 2, headDim: 2 };
  const codec = { name: 'q4', kBits: 4, vBits: 4, kElements: 2, vElements: 2, kMetaBytes: 2, vMetaBytes: 2 };

  /** A random valid head decision over n entries, drawn from `r` (numbers in [0, 1)). */
  function headDecision(n: number, r: () => number): HeadDecision {
    const role = Array.from({ length: n }, () => r()); // < .3 evict, < .5 merge, else keep
    const keep: number[] = [];
    const mergeable: number[] = [];
    role.forEach((x, i) => (x < 0.3 ? undefined : x < 0.5 ? mergeable.push(i) : keep.push(i)));
    if (keep.length === 0 && mergeable.length < 2) keep.push(n - 1);
    const merge = [];
    for (let i = 0; i + 1 < mergeable.length; i += 2) {
      const members = [mergeable[i], mergeable[i + 1]];
      merge.push({ members, weights: [0.5, 0.5], anchor: r() < 0.5 ? members[0] : members[1], ...(r() < 0.3 ? { count: 1 } : {}) });
    }
    if (mergeable.length % 2 === 1 && !keep.includes(mergeable[mergeable.length - 1])) keep.push(mergeable[mergeable.length - 1]);
    keep.sort((a, b) => a - b);
    const reencode = keep.filter(() => r() < 0.3).map((index) => ({ index, codec }));
    return { keep, merge, reencode };
  }

  it('agrees after every decision', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0, max: 0.999, noNaN: true }), { minLength: 400, maxLength: 400 }), fc.integer({ min: 1, max: 4 }), (randoms, perStep) => {
        let k = 0;
        const r = () => randoms[k++ % randoms.length];
        const store = new KVCacheStore(dims);
        const replay = new CacheReplay({ layers: 1, kvHeads: 2 });
        let tokens = 0;
        for (let round = 0; round < 12; round++) {
          const q = round === 0 ? 6 : perStep;
          store.appendForward([new Float32Array(2 * q * 2)], [new Float32Array(2 * q * 2)], q, Array.from({ length: q }, (_, i) => tokens + i), tokens);
          const decision: Decision = { layers: [[0, 1].map((h) => (r() < 0.8 ? headDecision(store.length(0, h), r) : null))] };
          const applied = store.apply(decision);
          const event = {
            kind: 'prefill',
            firstToken: tokens,
            tokenIds: Array.from({ length: q }, () => 5),
            pieces: [],
            firstPosition: tokens,
            chunks: 1,
            policy: 'test',
            decision: { ...applied, scores: null },
            memory: store.memory(),
            timings: { forwardMs: 0, policyMs: 0, totalMs: 0 },
          } as TraceEvent;
          replay.apply(event, round);
          tokens += q;
          expect(describeHeld(replay)).toEqual(describeHeld(storeHeld(store)));
        }
      }),
      { numRuns: 60 },
    );
  });
});
