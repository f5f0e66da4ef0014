/**
 * The quantization error view's payload (src/lib/worker/pack-quant.ts, pack-quant-trace.ts): a
 * hand-made trace (recorded errors matched by token, a later re-encode of keys only, the bars,
 * ThinK's and a low-rank method's head measures, the gauge from the event's memory); then a real
 * KIVI session of the fixture model, live at the newest step against the store and from the trace
 * at older steps; then the worker's `quant` command (live, older step, imported trace, bad head).
 */
import { describe, expect, it } from 'vitest';
import { loadModel } from '../../engine/model/load.ts';
import type { MemoryReport } from '../../engine/cache/view.ts';
import { Session } from '../../engine/session.ts';
import { ReplayTimeline } from '../../engine/trace/replay-timeline.ts';
import type { TraceEvent } from '../../engine/trace/schema.ts';
import { EngineHost } from '../../src/lib/worker/host.ts';
import { QUANT_LIMITS, quantViewAt } from '../../src/lib/worker/pack-quant.ts';
import { bitsView } from '../../src/lib/worker/pack-quant-trace.ts';
import type { Command, EngineEvent } from '../../src/lib/worker/protocol.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { EventLog, fakeServer, MemoryCache, MODELS_URL, ORIGIN } from './helpers.ts';

type Head = TraceEvent['decision']['heads'][number];

function head(layer: number, n: number, reencoded: Head['reencoded'], reencodedTokens: number[]): Head {
  return { layer, kvHead: 0, before: n, after: n, evictedTokens: [], evictedPositions: [], merged: [], reencoded, reencodedTokens, repositioned: 0 };
}

function memory(bits: number): MemoryReport {
  // 4 held entries × headDim 8 × 2 parts at `bits`: K takes 3/4 of the bytes
  const bytes = (4 * 8 * 2 * bits) / 8;
  return { tokens: 4, entries: [[4], [4]], heldEntries: 8, kBytes: bytes * 0.75, vBytes: bytes * 0.25, bytes, groupBytes: 2, fullKBytes: 256, fullVBytes: 256, fullBytes: 512, ratio: bytes / 512, bitsPerElement: bits };
}

function decision(heads: Head[], headMeasures?: Record<string, number[][][]>): TraceEvent['decision'] {
  return { heads, evicted: 0, merged: 0, reencoded: heads.reduce((n, h) => n + h.reencoded.length, 0), scores: null, ...(headMeasures ? { headMeasures } : {}) };
}

// 2 layers × 1 KV head, a prompt of 4 tokens (0–3), then token 4
const events: TraceEvent[] = [
  {
    kind: 'prefill',
    firstToken: 0,
    tokenIds: [10, 11, 12, 13],
    firstPosition: 0,
    policy: 'think + kivi',
    memory: memory(8),
    decision: decision(
      [
        head(0, 4, [{ index: 1, codec: 'kivi-2', vError: 0.1 }, { index: 2, codec: 'kivi-2', kError: 0.4, vError: 0.2 }], [1, 2]),
        head(1, 4, [{ index: 0, codec: 'think' }], [0]),
      ],
      { channel_saliency: [[[0.5, 0.1, 0.9, 0.05]], [[]]], pruned_channels: [[[3, 1]], [[]]] },
    ),
  } as unknown as TraceEvent,
  {
    kind: 'step',
    step: 0,
    tokenIndex: 4,
    position: 4,
    policy: 'think + kivi',
    memory: memory(6),
    // token 1's key block flushes: a key error, the value's stays as recorded at the prefill
    decision: decision([head(0, 5, [{ index: 1, codec: 'kivi-2', kError: 0.3 }], [1])], {
      k_singular_values: [[[4, 2, 1, 0.5]], [[]]],
      v_singular_values: [[[3, 1, 0.2, 0.1]], [[]]],
      k_rank: [[[2]], [[]]],
      v_rank: [[[1]], [[]]],
    }),
  } as unknown as TraceEvent,
];

describe('quantViewAt on a hand-made trace', () => {
  const timeline = new ReplayTimeline({ layers: 2, kvHeads: 1 });
  const at = (step: number, layer = 0) => quantViewAt(events, (count) => timeline.at(events, count), step, layer, 0, null);
  const shown = (a: Float32Array) => [...a].map((e) => (Number.isNaN(e) ? 'NaN' : +e.toFixed(6)));

  it('after the prompt: codecs from the replay, errors as recorded (NaN where none), the limits said', () => {
    const view = at(-1);
    expect(view).toMatchObject({ step: -1, layer: 0, kvHead: 0, tokens: 4, held: 4, policy: 'think + kivi', source: 'trace', limits: QUANT_LIMITS.trace, elements: null, attention: null, madeInAllHeads: 3 });
    expect(view.codecs).toEqual([{ name: 'kivi-2', entries: 2, kBits: null, vBits: null, kElements: null, vElements: null, groupSize: null, rank: null }]);
    expect([...view.entries.tokens]).toEqual([0, 1, 2, 3]);
    expect([...view.entries.codec]).toEqual([-1, 0, 0, -1]);
    expect([...view.entries.kBits]).toEqual([32, Number.NaN, Number.NaN, 32]);
    // token 1's value has an error recorded, its key none: the key was not re-encoded (0)
    expect([...view.entries.kError].map((e) => +e.toFixed(6))).toEqual([0, 0, 0.4, 0]);
    expect([...view.entries.vError].map((e) => +e.toFixed(6))).toEqual([0, 0.1, 0.2, 0]);
    // bars: plain entries count 0; an entry whose method recorded no error is left out (and counted)
    expect(view.layers.k[0]).toBeCloseTo(0.4 / 4, 6);
    expect(view.layers.v[0]).toBeCloseTo(0.3 / 4, 6);
    expect([...view.layers.encoded]).toEqual([2, 1]);
    expect([...view.layers.unknown]).toEqual([0, 1]);
    // layer 1: the method recorded no error for entry 0 at all
    expect(shown(at(-1, 1).entries.kError)).toEqual(['NaN', 0, 0, 0]);
    expect(view.layers.k[1]).toBe(0);
    expect(view.saliency).toEqual({ from: { kind: 'prefill', step: -1 }, saliency: [0.5, 0.1, 0.9, 0.05], pruned: [1, 3] });
    expect(view.spectrum).toBeNull();
    expect(view.bits).toMatchObject({ whole: 8, k: 12, v: 4, groupBytes: 2, fullBytes: 512, heldEntries: 8 });
  });

  it("step 0: a keys-only re-encode updates the key's error and keeps the value's; the spectrum and ranks", () => {
    const view = at(0);
    expect(view.held).toBe(5);
    expect(view.entries.kError[1]).toBeCloseTo(0.3, 6);
    expect(view.entries.vError[1]).toBeCloseTo(0.1, 6);
    expect(view.madeInAllHeads).toBe(1);
    expect(view.spectrum).toEqual({ from: { kind: 'step', step: 0 }, k: [4, 2, 1, 0.5], v: [3, 1, 0.2, 0.1], kRank: 2, vRank: 1 });
    // ThinK measured at the prefill: still the latest measure for this head
    expect(view.saliency?.from).toEqual({ kind: 'prefill', step: -1 });
    expect(view.bits.whole).toBe(6);
    // layer 1's head has no measures
    expect(at(0, 1).saliency).toBeNull();
    expect(at(0, 1).spectrum).toBeNull();
  });

  it('refuses a head or a step the trace does not have', () => {
    expect(() => at(3)).toThrow(/no step 3/);
    expect(() => at(0, 2)).toThrow(/no layer 2/);
  });

  it('the gauge: keys and values alone from the bytes', () => {
    expect(bitsView({ ...memory(4), bytes: 0, kBytes: 0, vBytes: 0 })).toMatchObject({ whole: 4, k: 0, v: 0 });
  });
});

describe('quantViewAt on a KIVI session of the fixture model', () => {
  it('live at the newest step: per-element error against the store, attention with and without the codec; older steps from the trace', async () => {
    const session = new Session(await fixtureModel(), { policy: 'kivi:bits=2,group=4,residual=4', keepQueries: true, sampler: { seed: 3 }, trace: { fullSteps: 100 } });
    await session.prefill([1, ...tokenSequence(21, 5)]);
    const timeline = new ReplayTimeline({ layers: 2, kvHeads: 2 });
    const live = { cache: session.cache, queries: session.lastQueries(), groupSize: session.dims.groupSize };
    const { headDim: d, groupSize } = session.dims;
    for (let s = 0; s < 5; s++) {
      await session.step();
      live.queries = session.lastQueries();
      for (const [l, h] of [
        [0, 0],
        [1, 1],
      ]) {
        const view = quantViewAt(session.trace.all(), (count) => timeline.at(session.trace.all(), count), s, l, h, live);
        expect(view.source).toBe('live');
        expect(view.limits).toBeNull();
        const n = session.cache.length(l, h);
        expect(view.held).toBe(n);
        const names = Array.from({ length: n }, (_, i) => session.cache.codec(l, h, i)?.name ?? null);
        expect(Array.from(view.entries.codec, (c) => (c < 0 ? null : view.codecs[c].name))).toEqual(names);
        expect(names.some((c) => c !== null), 'KIVI re-encoded').toBe(true);
        expect(view.elements!.kAbsolute.length).toBe(n * d);
        expect(view.bits.whole).toBeLessThan(32);
        expect(view.bits.whole).toBeCloseTo(session.memory().bitsPerElement, 9);
        const a = view.attention!;
        expect(a.queryHeads).toEqual(Array.from({ length: groupSize }, (_, g) => h * groupSize + g));
        for (let g = 0; g < groupSize; g++) {
          expect(a.exact.subarray(g * n, (g + 1) * n).reduce((x, y) => x + y, 0)).toBeCloseTo(1, 5);
          expect(a.stored.subarray(g * n, (g + 1) * n).reduce((x, y) => x + y, 0)).toBeCloseTo(1, 5);
        }
        // the same point from the trace alone: the same codecs, KIVI's recorded errors = the measured ones
        const traced = quantViewAt(session.trace.all(), (count) => timeline.at(session.trace.all(), count), s, l, h, null);
        expect(traced.source).toBe('trace');
        expect([...traced.entries.codec]).toEqual([...view.entries.codec]);
        // KIVI records the relative L2 error of each part it quantizes, as the report measures it
        traced.entries.kError.forEach((e, i) => expect(e, `K error of entry ${i}`).toBeCloseTo(view.entries.kError[i], 4));
        traced.entries.vError.forEach((e, i) => expect(e, `V error of entry ${i}`).toBeCloseTo(view.entries.vError[i], 4));
        for (let layer = 0; layer < 2; layer++) {
          expect(traced.layers.k[layer]).toBeCloseTo(view.layers.k[layer], 4);
          expect(traced.layers.v[layer]).toBeCloseTo(view.layers.v[layer], 4);
        }
      }
    }
    // an older step is the trace's, even with the live store at hand
    const older = quantViewAt(session.trace.all(), (count) => timeline.at(session.trace.all(), count), 1, 0, 0, live);
    expect(older).toMatchObject({ source: 'trace', limits: QUANT_LIMITS.trace, elements: null, attention: null });
  });
});

describe("the worker's quant command", () => {
  it('live at the newest step, from the trace at an older one and in an imported trace; a bad head is a session error', async () => {
    const log = new EventLog();
    const server = fakeServer();
    const cache = new MemoryCache();
    const host = new EngineHost(log.post, { loadModel, fetch: server.fetch, caches: { open: async () => cache } });
    let id = 0;
    const call = async (command: Omit<Command, 'id'>): Promise<EngineEvent> => {
      id++;
      host.handle({ ...command, id } as Command);
      return log.reply(id);
    };
    expect((await call({ type: 'load', modelsUrl: MODELS_URL, wasmUrl: `${ORIGIN}/ort/ort-wasm-simd-threaded.wasm`, threads: 1 } as Omit<Command, 'id'>)).type).toBe('ready');
    const policy = { id: 'kivi', params: { bits: 2, group: 4, residual: 4 } };
    expect((await call({ type: 'start', prompt: 'The cat sat on the mat. The dog sat on the log.', sampler: { temperature: 0, topK: 0, topP: 1, seed: 0 }, policy } as Omit<Command, 'id'>)).type).toBe('started');
    for (let s = 0; s < 4; s++) expect((await call({ type: 'step' } as Omit<Command, 'id'>)).type).toBe('done');

    const newest = await call({ type: 'quant', step: 3, layer: 1, kvHead: 0 } as Omit<Command, 'id'>);
    if (newest.type !== 'quant') throw new Error(JSON.stringify(newest));
    expect(newest.view).toMatchObject({ step: 3, layer: 1, kvHead: 0, source: 'live', limits: null });
    expect(newest.view.elements).not.toBeNull();
    expect(newest.view.attention!.queryHeads).toEqual([0, 1]);
    expect(newest.view.bits.whole).toBeLessThan(32);

    const older = await call({ type: 'quant', step: 1, layer: 1, kvHead: 0 } as Omit<Command, 'id'>);
    if (older.type !== 'quant') throw new Error(JSON.stringify(older));
    expect(older.view).toMatchObject({ step: 1, source: 'trace', elements: null, attention: null });

    const bad = await call({ type: 'quant', step: 3, layer: 9, kvHead: 0 } as Omit<Command, 'id'>);
    expect(bad).toMatchObject({ type: 'error', kind: 'session' });
    expect((bad as { message: string }).message).toMatch(/no layer 9/);

    const exported = await call({ type: 'export-trace' } as Omit<Command, 'id'>);
    if (exported.type !== 'trace') throw new Error(JSON.stringify(exported));
    expect((await call({ type: 'import-trace', json: exported.json, fileName: 't.json' } as Omit<Command, 'id'>)).type).toBe('imported');
    const replayed = await call({ type: 'quant', step: 3, layer: 1, kvHead: 0 } as Omit<Command, 'id'>);
    if (replayed.type !== 'quant') throw new Error(JSON.stringify(replayed));
    expect(replayed.view).toMatchObject({ source: 'trace', held: newest.view.held, elements: null });
    expect([...replayed.view.entries.codec]).toEqual([...newest.view.entries.codec]);
    replayed.view.entries.kError.forEach((e, i) => expect(e).toBeCloseTo(newest.view.entries.kError[i], 4));
    expect(replayed.view.bits.whole).toBeCloseTo(newest.view.bits.whole, 4);
  });
});
