/**
 * The worker host (src/lib/worker/host.ts) over the tiny fixture model in Node: the protocol the
 * page relies on — loading with progress and a sha256-keyed cache, prefill, steps, step back,
 * run/pause, policy switches, inspecting old steps, trace export and every error path.
 */
import { describe, expect, it } from 'vitest';
import { loadModel } from '../../engine/model/load.ts';
import { EngineHost } from '../../src/lib/worker/host.ts';
import { blobKey, MODEL_CACHE_NAME } from '../../src/lib/worker/model-cache.ts';
import { CELL, type Command, type EngineEvent, type SamplerSettings, type StepView } from '../../src/lib/worker/protocol.ts';
import { EventLog, fakeServer, MemoryCache, MODELS_URL, ORIGIN, type FakeServer } from './helpers.ts';

type CommandInput = Command extends infer C ? (C extends unknown ? Omit<C, 'id'> : never) : never;

const GREEDY: SamplerSettings = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const SAMPLED: SamplerSettings = { temperature: 0.9, topK: 40, topP: 0.95, seed: 7 };
const FULL = { id: 'full', params: {} };

function setup(options: { server?: FakeServer; cache?: MemoryCache | null; fullSteps?: number } = {}) {
  const server = options.server ?? fakeServer();
  const cache = options.cache === undefined ? new MemoryCache() : options.cache;
  const log = new EventLog();
  const host = new EngineHost(log.post, {
    loadModel,
    fetch: server.fetch,
    caches: cache ? { open: async (name: string) => (name === MODEL_CACHE_NAME ? cache : new MemoryCache()) } : null,
    fullSteps: options.fullSteps,
  });
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
  const load = () => call({ type: 'load', modelsUrl: MODELS_URL, wasmUrl: `${ORIGIN}/ort/ort-wasm-simd-threaded.wasm`, threads: 1 }, 'ready');
  return { server, cache, log, host, send, call, load };
}

/** Sum of the non-NaN weights of one head's row. */
function rowSum(view: StepView, layer: number, head: number): number {
  const a = view.attention!;
  let sum = 0;
  for (let t = 0; t < a.tokens; t++) {
    const w = a.weights[(layer * a.heads + head) * a.tokens + t];
    if (!Number.isNaN(w)) sum += w;
  }
  return sum;
}

describe('EngineHost', () => {
  it('loads with progress for every phase, then serves the files from the sha256-keyed cache', async () => {
    const t = setup();
    const ready = await t.load();
    expect(ready.model).toMatchObject({ id: 'tiny-fixture', layers: 2, heads: 4, kvHeads: 2, context: 256 });
    expect(ready.policies.map((p) => p.id)).toEqual(expect.arrayContaining(['full', 'window']));
    expect(ready.policies.find((p) => p.id === 'window')!.params[0]).toMatchObject({ name: 'size', kind: 'int' });
    const phases = new Set(t.log.of('progress').map((e) => e.progress.phase));
    expect([...phases]).toEqual(expect.arrayContaining(['runtime', 'manifest', 'download', 'verify', 'session']));
    const last = t.log.of('progress').filter((e) => e.progress.phase === 'download').at(-1)!.progress;
    expect(last.overallTotal).toBeGreaterThan(1_000_000);
    expect(ready.cache).toMatchObject({ available: true, hits: 0, misses: 3 });
    const stored = [...t.cache!.entries.keys()].filter((k) => k.includes('/sha256/'));
    expect(stored).toHaveLength(3);

    // a second visit: nothing but manifest/index from the network, every file from the cache
    const again = setup({ cache: t.cache });
    const warm = await again.load();
    expect(warm.cache).toMatchObject({ hits: 3, misses: 0 });
    expect(again.server.requests.filter((r) => !r.endsWith('.json'))).toEqual([]);
    expect(again.log.of('progress').some((e) => e.progress.cached)).toBe(true);
  });

  it('deletes cached files of old model versions and recovers from a damaged cache entry', async () => {
    const cache = new MemoryCache();
    const stale = blobKey(ORIGIN, 'f'.repeat(64));
    cache.entries.set(stale, new Uint8Array([1, 2, 3]));
    const t = setup({ cache });
    const ready = await t.load();
    expect(ready.cache.removed).toBe(1);
    expect(cache.entries.has(stale)).toBe(false);

    // damage one cached file: loading notices the sha256 mismatch, refetches and succeeds
    const key = [...cache.entries.keys()].find((k) => k.includes('/sha256/'))!;
    cache.entries.set(key, new Uint8Array(cache.entries.get(key)!.length));
    const again = setup({ cache });
    const warm = await again.load();
    expect(warm.model.id).toBe('tiny-fixture');
    expect(warm.cache.misses).toBeGreaterThan(0);
  });

  it('works offline from the cache once loaded', async () => {
    const cache = new MemoryCache();
    await setup({ cache }).load();
    const server = fakeServer();
    server.offline = true;
    const offline = setup({ server, cache });
    const ready = await offline.load();
    expect(ready.cache.hits).toBe(3);
  });

  it('reports a missing or corrupt model file by name, and loads after the fault is gone', async () => {
    const server = fakeServer();
    server.faults.set('tiny/model.onnx', 404);
    const t = setup({ server, cache: null });
    const error = await t.log.reply(t.send({ type: 'load', modelsUrl: MODELS_URL, wasmUrl: '', threads: 1 }));
    expect(error).toMatchObject({ type: 'error', kind: 'model' });
    expect((error as { message: string }).message).toMatch(/model\.onnx: file is missing/);

    server.faults.set('tiny/model.onnx', new Uint8Array(1165924));
    const corrupt = await t.log.reply(t.send({ type: 'load', modelsUrl: MODELS_URL, wasmUrl: '', threads: 1 }));
    expect((corrupt as { message: string }).message).toMatch(/model\.onnx: sha256 mismatch/);

    server.faults.clear();
    await t.load();
  });

  it('prefills a prompt, steps with full attention views, and refuses a prompt longer than the context', async () => {
    const t = setup();
    await t.load();
    const started = await t.call({ type: 'start', prompt: 'The cat sat on the mat.', sampler: GREEDY, policy: FULL }, 'started');
    expect(started.prompt.ids[0]).toBe(1); // BOS
    expect(started.prompt.pieces).toHaveLength(started.prompt.ids.length);
    expect(started.state.stepCount).toBe(0);
    expect(started.state.next).toHaveLength(10);
    const n = started.prompt.ids.length;
    expect(started.state.cacheMap.codes.length).toBe(2 * 2 * n);
    expect([...started.state.cacheMap.codes].every((c) => c === CELL.HELD)).toBe(true);

    const done = await t.call({ type: 'run', steps: 5, stopAtEos: false }, 'done');
    expect(done).toMatchObject({ reason: 'length', steps: 5 });
    const steps = t.log.of('step').map((e) => e.view);
    expect(steps.map((s) => s.step)).toEqual([0, 1, 2, 3, 4]);
    for (const view of steps) {
      expect(view.attention!.tokens).toBe(view.tokenIndex + 1);
      for (let l = 0; l < 2; l++) for (let h = 0; h < 4; h++) expect(rowSum(view, l, h)).toBeCloseTo(1, 4);
      expect(view.cacheMap!.tokens).toBe(view.tokenIndex + 1);
      expect(view.topK[0].prob).toBeGreaterThan(0);
      expect(view.next.length).toBe(10);
    }
    // greedy: the token drawn at step k+1 is the most likely of step k's "next"
    expect(steps[1].token.id).toBe(steps[0].next[0].id);

    const tokenized = await t.call({ type: 'tokenize', text: 'hello world' }, 'tokenized');
    expect(tokenized.count).toBeGreaterThan(1);
    expect(tokenized.context).toBe(256);

    const long = await t.log.reply(t.send({ type: 'start', prompt: 'word '.repeat(400), sampler: GREEDY, policy: FULL }));
    expect(long).toMatchObject({ type: 'error', kind: 'prompt' });
    expect((long as { message: string }).message).toMatch(/context holds 256/);
  });

  it('steps back through snapshots and replays the same tokens (sampled, deterministic)', async () => {
    const t = setup();
    await t.load();
    await t.call({ type: 'start', prompt: 'Once upon a time', sampler: SAMPLED, policy: FULL }, 'started');
    await t.call({ type: 'run', steps: 40, stopAtEos: false }, 'done');
    const first = t.log.of('step').map((e) => e.view.token.id);
    expect(first).toHaveLength(40);

    const rewound = await t.call({ type: 'back', steps: 3 }, 'rewound');
    expect(rewound.state.stepCount).toBe(37);
    const far = await t.call({ type: 'back', steps: 30 }, 'rewound');
    expect(far.state.stepCount).toBe(7);
    expect(far.state.tokenCount).toBe(t.log.of('started')[0].prompt.ids.length + 7);

    const before = t.log.of('step').length;
    await t.call({ type: 'run', steps: 33, stopAtEos: false }, 'done');
    const replayed = t.log.of('step').slice(before).map((e) => e.view.token.id);
    expect(replayed).toEqual(first.slice(7));
  });

  it('pauses a run, switches policy live and shows evictions in the cache map', async () => {
    const t = setup();
    await t.load();
    await t.call({ type: 'start', prompt: 'a b c d e f g h i j k l m n o p', sampler: GREEDY, policy: FULL }, 'started');
    const runId = t.send({ type: 'run', steps: 200, stopAtEos: false });
    while (t.log.of('step', runId).length < 3) await new Promise((r) => setTimeout(r, 1));
    t.send({ type: 'pause' });
    const done = (await t.log.reply(runId)) as Extract<EngineEvent, { type: 'done' }>;
    expect(done.reason).toBe('paused');
    expect(done.steps).toBeLessThan(200);

    const switched = await t.call({ type: 'set-policy', policy: { id: 'window', params: { size: 8 } } }, 'policy');
    expect(switched.to).toBe('window:size=8');
    expect(switched.state.memory.heldEntries).toBe(2 * 2 * 8);
    const codes = switched.state.cacheMap.codes;
    expect(codes.filter((c) => c === CELL.HELD).length).toBe(2 * 2 * 8);
    expect(codes.filter((c) => c === CELL.EVICTED).length).toBeGreaterThan(0);

    const stepId = t.send({ type: 'step' });
    await t.log.reply(stepId);
    const view = t.log.of('step', stepId)[0].view;
    expect(view.policy).toBe('window:size=8');
    expect(view.evicted).toBe(2 * 2); // one entry per KV head per layer
    expect(view.cacheMap!.codes.filter((c) => c === CELL.EVICTED).length).toBe(4);
    // the attention of a window head covers exactly its 8 + 1 entries
    const a = view.attention!;
    let held = 0;
    for (let tk = 0; tk < a.tokens; tk++) if (!Number.isNaN(a.weights[tk])) held++;
    expect(held).toBe(9);

    const bad = await t.log.reply(t.send({ type: 'set-policy', policy: { id: 'window', params: { size: 0 } } }));
    expect(bad).toMatchObject({ type: 'error', kind: 'policy' });
  });

  it('starts and switches to compositions given as members; the host formats them with the engine', async () => {
    const t = setup();
    await t.load();
    const window8 = { id: 'window', params: { size: 8 } };
    const h2o = { id: 'h2o', params: { heavy: 2, recent: 2 } };
    const started = await t.call({ type: 'start', prompt: 'a b c d e f g h i j k l m n o p', sampler: GREEDY, policy: [window8, h2o] }, 'started');
    expect(started.state.policy).toBe('window:size=8 + h2o:heavy=2,recent=2,accumulate=sum,gqa=sum');
    expect(started.state.memory.heldEntries).toBe(2 * 2 * 4);
    await t.call({ type: 'step' }, 'done');
    // one member as a list, or as a single choice (older pages and tests send one)
    expect((await t.call({ type: 'set-policy', policy: [FULL] }, 'policy')).to).toBe('full');
    const switched = await t.call({ type: 'set-policy', policy: [{ id: 'window', params: { size: 6 } }, window8] }, 'policy');
    expect(switched.from).toBe('full');
    expect(switched.to).toBe('window:size=6 + window:size=8');
    // what the first composition evicted does not come back: each head still holds its 4
    expect(switched.state.memory.heldEntries).toBe(2 * 2 * 4);
    // an empty composition or a bad member is the engine's error; the session keeps its policy
    for (const policy of [[], [window8, { id: 'h2o', params: { heavy: 'lots' } }], [{ id: 'nosuch', params: {} }]]) {
      const bad = await t.log.reply(t.send({ type: 'set-policy', policy }));
      expect(bad).toMatchObject({ type: 'error', kind: 'policy' });
    }
    const step = await t.call({ type: 'step' }, 'done');
    expect(step.state.policy).toBe('window:size=6 + window:size=8');
  });

  it('recomputes an old step exactly from a snapshot', async () => {
    const t = setup({ fullSteps: 4 });
    await t.load();
    await t.call({ type: 'start', prompt: 'In the beginning', sampler: SAMPLED, policy: FULL }, 'started');
    await t.call({ type: 'run', steps: 30, stopAtEos: false }, 'done');
    const live = t.log.of('step')[5].view;
    const inspected = await t.call({ type: 'inspect', step: 5 }, 'inspected');
    expect(inspected.view.token).toEqual(live.token);
    expect(inspected.view.memory).toEqual(live.memory);
    expect(Array.from(inspected.view.attention!.weights)).toEqual(Array.from(live.attention!.weights));
    expect(Array.from(inspected.view.cacheMap!.codes)).toEqual(Array.from(live.cacheMap!.codes));
    const latest = await t.call({ type: 'inspect', step: 29 }, 'inspected');
    expect(latest.view.step).toBe(29);
    const missing = await t.log.reply(t.send({ type: 'inspect', step: 30 }));
    expect(missing).toMatchObject({ type: 'error', kind: 'session' });
  });

  it('stops at a full context and exports the trace as JSON', async () => {
    const t = setup();
    await t.load();
    const prompt = 'one two three four five six seven eight nine ten '.repeat(40);
    const tokenized = await t.call({ type: 'tokenize', text: prompt }, 'tokenized');
    const words = prompt.split(' ');
    // trim the prompt to leave exactly 4 free positions
    let text = prompt;
    let count = tokenized.count;
    while (count > 252) {
      words.pop();
      text = words.join(' ');
      count = (await t.call({ type: 'tokenize', text }, 'tokenized')).count;
    }
    await t.call({ type: 'start', prompt: text, sampler: GREEDY, policy: FULL }, 'started');
    const done = await t.call({ type: 'run', steps: 50, stopAtEos: false }, 'done');
    expect(done.reason).toBe('context-full');
    expect(done.steps).toBe(256 - count);
    expect(done.message).toMatch(/context is full/);
    const again = await t.call({ type: 'step' }, 'done');
    expect(again).toMatchObject({ reason: 'context-full', steps: 0 });

    const trace = await t.call({ type: 'export-trace' }, 'trace');
    const json = JSON.parse(trace.json);
    expect(json.version).toBe(1);
    expect(json.header.model.id).toBe('tiny-fixture');
    expect(json.events.filter((e: { kind: string }) => e.kind === 'step')).toHaveLength(done.steps);
    expect(trace.fileName).toMatch(/^kvscope-trace-tiny-fixture-full-\d+steps\.json$/);
  });

  it('runs every registered policy with its default parameters (or explains what it lacks)', async () => {
    const t = setup();
    const ready = await t.load();
    for (const policy of ready.policies) {
      const params = Object.fromEntries(policy.params.map((p) => [p.name, p.default]));
      const started = await t.log.reply(t.send({ type: 'start', prompt: 'one two three four five six seven eight nine ten', sampler: GREEDY, policy: { id: policy.id, params } }));
      if (started.type === 'error') {
        // a policy may need calibration data the fixture model does not have
        expect(policy.needs.calibration, `${policy.id}: ${started.message}`).toBe(true);
        expect(started.kind).toBe('policy');
        continue;
      }
      expect(started.type, policy.id).toBe('started');
      const id = t.send({ type: 'run', steps: 6, stopAtEos: false });
      const done = await t.log.reply(id);
      expect(done.type, `${policy.id}: ${JSON.stringify(done).slice(0, 200)}`).toBe('done');
      for (const { view } of t.log.of('step', id)) {
        const codes = view.cacheMap!.codes;
        expect([...codes].every((c) => c <= CELL.EVICTED), policy.id).toBe(true);
        expect(view.memory.heldEntries, policy.id).toBeGreaterThan(0);
      }
    }
  });

  it('answers commands before a model or a prompt with a clear session error', async () => {
    const t = setup();
    const early = await t.log.reply(t.send({ type: 'step' }));
    expect(early).toMatchObject({ type: 'error', kind: 'session' });
    await t.load();
    const noPrompt = await t.log.reply(t.send({ type: 'back', steps: 1 }));
    expect((noPrompt as { message: string }).message).toMatch(/no prompt/);
    const badSampler = await t.log.reply(t.send({ type: 'start', prompt: 'x', sampler: { ...GREEDY, topP: 0 }, policy: FULL }));
    expect(badSampler).toMatchObject({ type: 'error', kind: 'session' });
  });
});
