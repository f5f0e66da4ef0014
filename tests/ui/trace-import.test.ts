/**
 * Trace export and import through the worker host (tiny fixture model in Node): the exported
 * header carries prompt, sampler, switches and reference-lane metrics; a fresh host with no model
 * replays the file read-only with the same tokens, cache maps, switches and metrics; a bad file is
 * refused by name and changes nothing. Also engine/trace/read.ts on its own.
 */
import { describe, expect, it } from 'vitest';
import { loadModel } from '../../engine/model/load.ts';
import { readTrace, TraceFormatError } from '../../engine/trace/read.ts';
import { TRACE_VERSION } from '../../engine/trace/schema.ts';
import { EngineHost } from '../../src/lib/worker/host.ts';
import type { Command, EngineEvent, SamplerSettings, StepView } from '../../src/lib/worker/protocol.ts';
import { EventLog, fakeServer, MemoryCache, MODELS_URL, ORIGIN } from './helpers.ts';

type CommandInput = Command extends infer C ? (C extends unknown ? Omit<C, 'id'> : never) : never;

const SAMPLED: SamplerSettings = { temperature: 0.9, topK: 40, topP: 0.95, seed: 7 };
const PROMPT = 'The cat sat on the mat. The dog sat on the log. The cat sat on the';

function harness(fullSteps = 4) {
  const server = fakeServer();
  const cache = new MemoryCache();
  const log = new EventLog();
  const host = new EngineHost(log.post, { loadModel, fetch: server.fetch, caches: { open: async () => cache }, fullSteps });
  let id = 0;
  const send = (command: CommandInput): number => {
    id++;
    host.handle({ ...command, id } as Command);
    return id;
  };
  const call = async <T extends EngineEvent['type']>(command: CommandInput, expected: T): Promise<Extract<EngineEvent, { type: T }>> => {
    const reply = await log.reply(send(command));
    if (reply.type !== expected) throw new Error(`expected ${expected}, got ${JSON.stringify(reply).slice(0, 300)}`);
    return reply as Extract<EngineEvent, { type: T }>;
  };
  const steps = async (n: number): Promise<StepView[]> => {
    const done = await call({ type: 'run', steps: n, stopAtEos: false }, 'done');
    return log.of('step', done.id).map((e) => e.view);
  };
  const load = () => call({ type: 'load', modelsUrl: MODELS_URL, wasmUrl: `${ORIGIN}/ort/ort-wasm-simd-threaded.wasm`, threads: 1 }, 'ready');
  return { log, send, call, steps, load };
}

/** A live run: H2O with the reference lane, 6 steps, a switch to a window, 4 more steps, exported. */
async function liveRun() {
  const t = harness();
  await t.load();
  await t.call({ type: 'reference', on: true }, 'ack');
  await t.call({ type: 'start', prompt: PROMPT, sampler: SAMPLED, policy: { id: 'h2o', params: { heavy: 4, recent: 4, accumulate: 'sum', gqa: 'sum' } } }, 'started');
  const first = await t.steps(6);
  const switched = await t.call({ type: 'set-policy', policy: { id: 'window', params: { size: 8 } } }, 'policy');
  const second = await t.steps(4);
  const done = t.log.of('done').at(-1)!;
  const exported = await t.call({ type: 'export-trace' }, 'trace');
  const inspected = (await t.call({ type: 'inspect', step: 1 }, 'inspected')).view;
  return { t, views: [...first, ...second], switched, done, exported, inspected };
}

let cached: ReturnType<typeof liveRun> | null = null;
const run = () => (cached ??= liveRun());

describe('exported trace header', () => {
  it('carries the prompt text, the sampler, every policy switch and the reference-lane metrics', async () => {
    const { exported, views, switched } = await run();
    const json = JSON.parse(exported.json);
    expect(json.version).toBe(TRACE_VERSION);
    expect(json.header.prompt).toBe(PROMPT);
    expect(json.header.sampler).toEqual({ temperature: 0.9, topK: 40, topP: 0.95, seed: 7 });
    expect(json.header.policy).toBe('h2o:heavy=4,recent=4,accumulate=sum,gqa=sum');
    expect(json.header.switches).toEqual([
      {
        atStep: 6,
        from: 'h2o:heavy=4,recent=4,accumulate=sum,gqa=sum',
        to: 'window:size=8',
        evicted: switched.evictions!.length / 3,
        ...(switched.note ? { note: switched.note } : {}),
        ...(switched.withoutHistory ? { withoutHistory: switched.withoutHistory } : {}),
      },
    ]);
    const reference = json.header.reference.steps;
    expect(reference.map((r: { step: number }) => r.step)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(reference[7].kl).toBeCloseTo(views[7].reference!.kl, 5);
    expect(reference[7].mass).toBeCloseTo(views[7].reference!.mass, 5);
    expect(json.header.next).toHaveLength(10);
  });
});

describe('import-trace: a read-only replay without the model', () => {
  it('shows the same tokens, cache maps, switches and metrics as the live run, and inspects old steps from the trace', async () => {
    const { exported, views, switched, done, inspected } = await run();
    const r = harness();
    // no load: the replay needs no model
    const { trace } = await r.call({ type: 'import-trace', json: exported.json, fileName: exported.fileName }, 'imported');
    expect(trace.fileName).toBe(exported.fileName);
    expect(trace.promptText).toBe(PROMPT);
    expect(trace.sampler).toEqual(SAMPLED);
    expect(trace.model).toMatchObject({ id: 'tiny-fixture', layers: 2, heads: 4, kvHeads: 2 });
    expect(trace.steps.map((s) => s.token.id)).toEqual(views.map((v) => v.token.id));
    expect(trace.steps.map((s) => s.token.piece)).toEqual(views.map((v) => v.token.piece));
    // the newest steps come with full views: the same cache maps as live
    for (const s of trace.steps.slice(-4)) expect(s.cacheMap!.codes, `step ${s.step}`).toEqual(views[s.step].cacheMap!.codes);
    expect(trace.state.cacheMap.codes).toEqual(done.state.cacheMap.codes);
    expect(trace.state).toMatchObject({ stepCount: 10, tokenCount: done.state.tokenCount, position: done.state.position, policy: 'window:size=8' });
    expect(trace.state.memory.heldEntries).toBe(done.state.memory.heldEntries);
    expect(trace.state.next.map((t) => t.id)).toEqual(done.state.next.map((t) => t.id));
    expect(trace.switches).toHaveLength(1);
    expect(trace.switches[0]).toMatchObject({ atStep: 6, to: 'window:size=8', evicted: switched.evictions!.length / 3 });
    expect(trace.switches[0].withoutHistory).toBe(switched.withoutHistory);
    expect(trace.switches[0].before.codes).toEqual(switched.before!.codes);
    expect(trace.steps[8].reference!.kl).toBeCloseTo(views[8].reference!.kl, 5);
    expect(trace.reference).toBe(true);
    expect(trace.notes.join(' ')).toMatch(/full attention was kept for the last 4 steps/);

    // an old, compacted step: the cache map as live, attention from the top-k summary
    const old = (await r.call({ type: 'inspect', step: 1 }, 'inspected')).view;
    expect(old.cacheMap!.codes).toEqual(inspected.cacheMap!.codes);
    expect(old.attentionTopOnly).toBe(8);
    expect(old.token.id).toBe(inspected.token.id);
    // where the summary knows a weight it is the full row's (rounded to 6 digits in the file)
    const a = old.attention!;
    let compared = 0;
    for (let i = 0; i < a.weights.length; i++) {
      if (a.weights[i] > 0) {
        expect(a.weights[i]).toBeCloseTo(inspected.attention!.weights[i], 5);
        compared++;
      }
      if (Number.isNaN(inspected.attention!.weights[i])) expect(a.weights[i]).toBeNaN();
    }
    expect(compared).toBeGreaterThan(8);

    // decoding needs the model: refused with a way out
    for (const command of [{ type: 'step' }, { type: 'run', steps: 2, stopAtEos: false }, { type: 'back', steps: 1 }] as CommandInput[]) {
      const refused = await r.log.reply(r.send(command));
      expect(refused).toMatchObject({ type: 'error', kind: 'session' });
      expect((refused as { message: string }).message).toMatch(/read-only replay of .*live mode/);
    }
    // exporting again writes the same events
    const again = await r.call({ type: 'export-trace' }, 'trace');
    expect(JSON.parse(again.json).events).toEqual(JSON.parse(exported.json).events);
    expect(JSON.parse(again.json).header.reference).toEqual(JSON.parse(exported.json).header.reference);
  });

  it('reads a trace without the header fields added for the app (an older file): the views stay, the notes say what is missing', async () => {
    const { exported, done } = await run();
    const json = JSON.parse(exported.json);
    for (const key of ['prompt', 'switches', 'reference', 'next', 'protects']) delete json.header[key];
    const r = harness();
    const { trace } = await r.call({ type: 'import-trace', json: JSON.stringify(json), fileName: 'old.json' }, 'imported');
    expect(trace.promptText).toBeNull();
    expect(trace.reference).toBe(false);
    expect(trace.state.cacheMap.codes).toEqual(done.state.cacheMap.codes);
    expect(trace.state.next).toEqual([]);
    expect(trace.notes.join(' ')).toMatch(/does not carry its prompt text/);
    expect(trace.switches).toHaveLength(1); // switches are events: the header list is only a summary
  });

  it('refuses a malformed, wrong-version, too-new or self-contradicting trace by name and changes nothing', async () => {
    const { exported } = await run();
    const good = JSON.parse(exported.json);
    const t = harness();
    await t.load();
    await t.call({ type: 'start', prompt: PROMPT, sampler: SAMPLED, policy: { id: 'window', params: { size: 6 } } }, 'started');
    const live = await t.steps(2);

    const tampered = structuredClone(good);
    const evicting = tampered.events.findIndex((e: { decision: { heads: { evictedTokens: number[] }[] } }) => e.decision.heads.some((h) => h.evictedTokens.length > 0));
    tampered.events[evicting].decision.heads.find((h: { evictedTokens: number[] }) => h.evictedTokens.length > 0).evictedTokens[0] = 999;
    const cases: [string, RegExp][] = [
      ['{"version": 1, "header": ', /bad\.json: not JSON/],
      ['', /the file is empty/],
      ['[1, 2]', /not a kvscope trace: expected an object with "version", "header" and "events"/],
      [JSON.stringify({ ...good, version: 99 }), /trace is version 99, written by a newer kvscope; this one reads trace version 1\. Open it with a newer kvscope/],
      [JSON.stringify({ ...good, version: 0 }), /trace version 0 is not one kvscope writes/],
      [JSON.stringify({ ...good, version: '1' }), /"version" is "1", expected a whole number/],
      [JSON.stringify({ ...good, header: { ...good.header, model: { ...good.header.model, kvHeads: 3 } } }), /header\.model: 4 query heads do not split into 3 KV heads/],
      [JSON.stringify({ ...good, events: good.events.slice(1) }), /events\[0\]\.kind: a trace starts with the prefill/],
      [JSON.stringify({ ...good, events: [good.events[0], { ...good.events[1], kind: 'verify' }] }), /events\[1\]\.kind: unknown event kind "verify"/],
      [JSON.stringify({ ...good, events: [good.events[0], { ...good.events[1], token: { id: 'x' } }] }), /events\[1\]\.token\.id: expected an integer/],
      [JSON.stringify(tampered), /the trace contradicts itself: event \d+ \(.*\), layer \d KV head \d: evicts token 999, which the head does not hold/],
    ];
    for (const [json, message] of cases) {
      const reply = await t.log.reply(t.send({ type: 'import-trace', json, fileName: 'bad.json' }));
      expect(reply.type, json.slice(0, 40)).toBe('error');
      expect(reply).toMatchObject({ kind: 'trace' });
      expect((reply as { message: string }).message).toMatch(message);
    }
    // nothing changed: the live session goes on where it was
    const more = await t.steps(1);
    expect(more[0].step).toBe(live[1].step + 1);
    const exportedLive = JSON.parse((await t.call({ type: 'export-trace' }, 'trace')).json);
    expect(exportedLive.header.prompt).toBe(PROMPT);
    expect(exportedLive.events.filter((e: { kind: string }) => e.kind === 'step')).toHaveLength(3);
  });

  it('replays a trace of the prompt alone (no steps yet)', async () => {
    const t = harness();
    await t.load();
    const started = await t.call({ type: 'start', prompt: PROMPT, sampler: SAMPLED, policy: { id: 'window', params: { size: 6 } } }, 'started');
    const exported = await t.call({ type: 'export-trace' }, 'trace');
    const r = harness();
    const { trace } = await r.call({ type: 'import-trace', json: exported.json, fileName: 'prompt.json' }, 'imported');
    expect(trace.steps).toEqual([]);
    expect(trace.state.cacheMap.codes).toEqual(started.state.cacheMap.codes);
    expect(trace.prefill.cacheMap.codes).toEqual(started.state.cacheMap.codes);
    expect(trace.prefill.evictions).toEqual(started.evictions);
    expect(trace.state.next.map((n) => n.id)).toEqual(started.state.next.map((n) => n.id));
    expect(trace.state).toMatchObject({ stepCount: 0, tokenCount: started.prompt.ids.length, position: started.state.position });
  });

  it('leaves the replay with the next start', async () => {
    const { exported } = await run();
    const r = harness();
    await r.call({ type: 'import-trace', json: exported.json, fileName: 'x.json' }, 'imported');
    await r.load();
    await r.call({ type: 'start', prompt: PROMPT, sampler: SAMPLED, policy: { id: 'full', params: {} } }, 'started');
    const steps = await r.steps(2);
    expect(steps.map((s) => s.step)).toEqual([0, 1]);
    expect((await r.call({ type: 'inspect', step: 0 }, 'inspected')).view.policy).toBe('full');
  });
});

describe('readTrace', () => {
  it('turns the JSON back into typed events that replay to the memory each event reports', async () => {
    const { exported } = await run();
    const trace = readTrace(exported.json);
    expect(trace.version).toBe(1);
    expect(trace.events[0].kind).toBe('prefill');
    const step = [...trace.events].reverse().find((e) => e.kind === 'step' && e.attention)!;
    if (step.kind !== 'step') throw new Error('no step');
    expect(step.attention![0].entries[0].tokens).toBeInstanceOf(Int32Array);
    expect(step.attention![0].weights[0]).toBeInstanceOf(Float32Array);
    expect(step.attentionTop!.weights).toBeInstanceOf(Float32Array);
    // NaN scores were written as null and come back as NaN
    const scored = trace.events.find((e) => e.decision.scores);
    if (scored?.decision.scores) expect(scored.decision.scores[0][0]).toBeInstanceOf(Float32Array);
  });

  it('names the first bad field', () => {
    expect(() => readTrace('{"version":1,"header":{},"events":[]}')).toThrow(TraceFormatError);
    expect(() => readTrace('{"version":1,"header":{},"events":[]}')).toThrow(/header\.model: expected an object/);
  });
});
