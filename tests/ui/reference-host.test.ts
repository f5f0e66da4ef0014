/**
 * The worker host's reference lane, live switches and the views behind the heavy-hitter,
 * forgotten-token and retrieval-head panels (tiny fixture model in Node).
 */
import { describe, expect, it } from 'vitest';
import { loadModel } from '../../engine/model/load.ts';
import { EngineHost } from '../../src/lib/worker/host.ts';
import { calibrationView, packEvictions, packScores } from '../../src/lib/worker/pack.ts';
import { CELL, type Command, type EngineEvent, type SamplerSettings, type StepView } from '../../src/lib/worker/protocol.ts';
import { EventLog, fakeServer, MemoryCache, MODELS_URL, ORIGIN } from './helpers.ts';

type CommandInput = Command extends infer C ? (C extends unknown ? Omit<C, 'id'> : never) : never;

const SAMPLED: SamplerSettings = { temperature: 0.9, topK: 40, topP: 0.95, seed: 11 };
const PROMPT = 'The cat sat on the mat. The dog sat on the log. The cat sat on the';

function harness() {
  const server = fakeServer();
  const cache = new MemoryCache();
  const log = new EventLog();
  const host = new EngineHost(log.post, { loadModel, fetch: server.fetch, caches: { open: async () => cache } });
  let id = 0;
  const call = async <T extends EngineEvent['type']>(command: CommandInput, expected: T): Promise<Extract<EngineEvent, { type: T }>> => {
    id++;
    host.handle({ ...command, id } as Command);
    const reply = await log.reply(id);
    if (reply.type !== expected) throw new Error(`expected ${expected}, got ${JSON.stringify(reply).slice(0, 300)}`);
    return reply as Extract<EngineEvent, { type: T }>;
  };
  const steps = async (n: number): Promise<StepView[]> => {
    const done = await call({ type: 'run', steps: n, stopAtEos: false }, 'done');
    return log.of('step', done.id).map((e) => e.view);
  };
  const load = () => call({ type: 'load', modelsUrl: MODELS_URL, wasmUrl: `${ORIGIN}/ort/ort-wasm-simd-threaded.wasm`, threads: 1 }, 'ready');
  return { log, call, steps, load };
}

describe('EngineHost: reference lane', () => {
  it('compares every step with a full-cache lane: full → KL 0, mass 1; a window → mass < 1', async () => {
    const t = harness();
    const ready = await t.load();
    expect(ready.calibration).toBeNull(); // the fixture ships no calibration.json
    await t.call({ type: 'start', prompt: PROMPT, sampler: SAMPLED, policy: { id: 'full', params: {} } }, 'started');
    const on = await t.call({ type: 'reference', on: true }, 'reference');
    expect(on.state.reference).toBe(true);

    const full = await t.steps(4);
    for (const v of full) {
      expect(v.reference!.kl).toBeLessThan(1e-6);
      expect(v.reference!.agree).toBe(true);
      expect(v.reference!.mass).toBeCloseTo(1, 5);
      expect(v.reference!.memoryRatio).toBe(1);
      expect(v.reference!.massByLayer).toHaveLength(2);
    }

    await t.call({ type: 'set-policy', policy: { id: 'window', params: { size: 8 } } }, 'policy');
    const windowed = await t.steps(6);
    expect(windowed.every((v) => v.reference!.mass < 1 && v.reference!.memoryRatio < 1)).toBe(true);
    const last = windowed.at(-1)!;
    expect(last.reference!.policyBytes).toBe(last.memory.bytes);
    expect(last.reference!.fullBytes).toBe(last.memory.fullBytes);

    // off: no more metrics
    const off = await t.call({ type: 'reference', on: false }, 'reference');
    expect(off.state.reference).toBe(false);
    const plain = await t.steps(1);
    expect(plain[0].reference).toBeNull();
  });

  it('stepping back keeps the lane in step: the replayed steps give the same metrics', async () => {
    const t = harness();
    await t.load();
    await t.call({ type: 'reference', on: true }, 'ack'); // no session yet: remembered for start
    const started = await t.call({ type: 'start', prompt: PROMPT, sampler: SAMPLED, policy: { id: 'h2o', params: { heavy: 6, recent: 6, accumulate: 'sum', gqa: 'sum' } } }, 'started');
    expect(started.state.reference).toBe(true);
    const first = await t.steps(9);
    await t.call({ type: 'back', steps: 5 }, 'rewound');
    const again = await t.steps(5);
    expect(again.map((v) => v.token.id)).toEqual(first.slice(4).map((v) => v.token.id));
    expect(again.map((v) => v.reference)).toEqual(first.slice(4).map((v) => v.reference));
  });
});

describe('EngineHost: switch, scores and evictions for the views', () => {
  it('a live switch reports the cache before it, its step and what it evicted', async () => {
    const t = harness();
    await t.load();
    await t.call({ type: 'start', prompt: PROMPT, sampler: SAMPLED, policy: { id: 'full', params: {} } }, 'started');
    await t.steps(3);
    const event = await t.call({ type: 'set-policy', policy: { id: 'window', params: { size: 8 } } }, 'policy');
    expect(event.atStep).toBe(3);
    const before = event.before!;
    const after = event.state.cacheMap;
    expect(before.tokens).toBe(after.tokens);
    expect(before.codes.every((c) => c === CELL.HELD)).toBe(true);
    const evicted = after.codes.filter((c) => c === CELL.EVICTED).length;
    expect(evicted).toBeGreaterThan(0);
    expect(event.evictions!.length / 3).toBe(evicted);
    // every triple names a cell the map marks as evicted by the switch
    for (let k = 0; k < event.evictions!.length; k += 3) {
      const [l, h, tok] = [event.evictions![k], event.evictions![k + 1], event.evictions![k + 2]];
      expect(after.codes[(l * after.kvHeads + h) * after.tokens + tok]).toBe(CELL.EVICTED);
    }
  });

  it('H2O steps carry their scores by token and their evictions; SnapKV scores once, at prefill', async () => {
    const t = harness();
    await t.load();
    await t.call({ type: 'start', prompt: PROMPT, sampler: SAMPLED, policy: { id: 'h2o', params: { heavy: 4, recent: 4, accumulate: 'sum', gqa: 'sum' } } }, 'started');
    const views = await t.steps(3);
    const v = views.at(-1)!;
    expect(v.scores).toBeTruthy();
    const { scores, cacheMap } = v as Required<StepView>;
    expect(scores!.tokens).toBe(v.tokenIndex + 1);
    // H2O scores every entry it saw: 8 held + the new token per head
    const scored = Array.from(scores!.values.subarray(0, scores!.tokens)).filter((x) => !Number.isNaN(x)).length;
    expect(scored).toBe(9);
    expect(v.evictions!.length).toBe(3 * v.evicted);
    for (let k = 0; k < v.evictions!.length; k += 3) {
      const [l, h, tok] = [v.evictions![k], v.evictions![k + 1], v.evictions![k + 2]];
      expect(cacheMap!.codes[(l * cacheMap!.kvHeads + h) * cacheMap!.tokens + tok]).toBe(CELL.EVICTED);
      expect(Number.isNaN(scores!.values[(l * scores!.kvHeads + h) * scores!.tokens + tok])).toBe(false);
    }

    const snap = await t.call(
      { type: 'start', prompt: PROMPT, sampler: SAMPLED, policy: { id: 'snapkv', params: { budget: 10, window: 4, kernel: 3, pool: 'avg', gqa: 'mean', pyramid: false, beta: 20 } } },
      'started',
    );
    expect(snap.scores).toBeTruthy();
    expect(snap.scores!.tokens).toBe(snap.prompt.ids.length);
    expect(snap.evictions!.length).toBeGreaterThan(0);
    const after = await t.steps(1);
    expect(after[0].scores).toBeNull(); // decode appends: no decision scores
  });

  it('packs scores, evictions and calibration scores for the page', () => {
    const grid = packScores([[Float32Array.of(0.5, Number.NaN, 2), null]], () => [4, 5, 6], 8)!;
    expect(grid).toMatchObject({ layers: 1, kvHeads: 2, tokens: 8 });
    expect(Array.from(grid.values.subarray(0, 8)).map((x) => (Number.isNaN(x) ? null : x))).toEqual([null, null, null, null, 0.5, null, 2, null]);
    expect(packScores([[null, null]], () => [0], 4)).toBeNull();
    const triples = packEvictions({
      heads: [{ layer: 1, kvHead: 0, before: 3, after: 1, evictedTokens: [2, 7], evictedPositions: [2, 7], merged: [], reencoded: [], repositioned: 0 }],
      evicted: 2,
      merged: 0,
      reencoded: 0,
      scores: null,
    });
    expect(Array.from(triples)).toEqual([1, 0, 2, 1, 0, 7]);
    expect(calibrationView(null)).toBeNull();
    const view = calibrationView({
      format: 'kvscope-calibration',
      formatVersion: 1,
      model: { id: 'x', nLayers: 1, nHeads: 2, nKvHeads: 1, graph: [] },
      createdBy: 'test',
      razor: { repeatLength: 8, repeats: 4, sequences: 2, seed: 3, rows: 24, echo: [[0.1, 0.2]], induction: [[0.3, 0.4]] },
    })!;
    expect(view).toMatchObject({ echo: [[0.1, 0.2]], induction: [[0.3, 0.4]], wu: null, semantic: null, threshold: null });
    expect(view.notes[0]).toMatch(/8 random tokens repeated 4×/);
  });
});
