/**
 * Experiment links (src/lib/links/): versioned, compact, capped, validated. Valid experiments
 * round-trip exactly; 10,000 fuzzed links (random text, mangled payloads, random wire objects)
 * give an experiment or one message, never an exception.
 */
import fc from 'fast-check';
import { deflateSync, strToU8 } from 'fflate';
import { describe, expect, it } from 'vitest';
import { encodePayload, experimentQuery, linkTooLong, MAX_PAYLOAD_CHARS, readExperimentQuery } from '../../src/lib/links/codec.ts';
import { DEFAULT_VIEW, experimentOfRun, plainSteps, type Experiment, type ExperimentAction } from '../../src/lib/links/experiment.ts';
import { toWire } from '../../src/lib/links/validate.ts';

const SHA = 'a'.repeat(64);

function sample(overrides: Partial<Experiment> = {}): Experiment {
  return {
    model: { id: 'kvscope-llama-8l', sha256: SHA },
    prompt: 'Once upon a time there was a cache.',
    sampler: { temperature: 0.8, topK: 40, topP: 0.95, seed: 7 },
    policy: 'h2o:heavy=64,recent=32',
    actions: [
      { kind: 'decode', steps: 5 },
      { kind: 'policy', spec: 'window:size=32 + kivi' },
      { kind: 'decode', steps: 3 },
    ],
    steps: 8,
    view: { step: 4, layer: 3, head: 2, scale: 'log', excludeSink: true, forgotten: 'head', live: false },
    ...overrides,
  };
}

function payloadOf(wire: unknown): string {
  const bytes = deflateSync(strToU8(JSON.stringify(wire)));
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function read(query: string) {
  return readExperimentQuery(query);
}

const specs = fc.constantFrom('full', 'window:size=32', 'h2o:heavy=8,recent=8', 'snapkv:budget=64', 'streaming:sinks=4,recent=60 + kivi');
const drafters = fc.constantFrom('lookup', 'model:gamma=4', 'infinigram:gamma=3', 'self:gamma=4,policy=streaming(sinks=4,recent=60)');
const plainAction: fc.Arbitrary<ExperimentAction> = fc.oneof(
  fc.integer({ min: 1, max: 500 }).map((steps) => ({ kind: 'decode' as const, steps })),
  specs.map((spec) => ({ kind: 'policy' as const, spec })),
  fc.boolean().map((on) => ({ kind: 'reference' as const, on })),
);
const anyAction: fc.Arbitrary<ExperimentAction> = fc.oneof(
  plainAction,
  fc.integer({ min: 1, max: 9 }).map((count) => ({ kind: 'round' as const, count })),
  fc.record({ kind: fc.constant('run' as const), steps: fc.integer({ min: 1, max: 500 }), stopAtEos: fc.boolean() }),
  fc.integer({ min: 2, max: 500 }).chain((steps) => fc.integer({ min: 1, max: steps - 1 }).map((cut) => ({ kind: 'run' as const, steps, stopAtEos: false, cut }))),
  fc.integer({ min: 0, max: 50 }).map((steps) => ({ kind: 'keep' as const, steps })),
  fc.integer({ min: 1, max: 50 }).map((steps) => ({ kind: 'back' as const, steps })),
  fc.option(drafters, { nil: null }).map((spec) => ({ kind: 'drafter' as const, spec })),
);
const experiments: fc.Arbitrary<Experiment> = fc
  .record({
    id: fc.stringMatching(/^[a-z][a-z0-9.-]{0,20}$/),
    sha: fc.stringMatching(/^[0-9a-f]{64}$/),
    prompt: fc.string({ maxLength: 300, unit: 'grapheme' }),
    temperature: fc.double({ min: 0, max: 2, noNaN: true }),
    topK: fc.integer({ min: 0, max: 100 }),
    topP: fc.double({ min: 0.01, max: 1, noNaN: true }),
    seed: fc.integer({ min: 0, max: 0xffffffff }),
    policy: specs,
    actions: fc.array(anyAction, { maxLength: 12 }),
    layer: fc.integer({ min: 0, max: 7 }),
    head: fc.integer({ min: 0, max: 7 }),
    log: fc.boolean(),
    sink: fc.boolean(),
    forgotten: fc.constantFrom('off' as const, 'all' as const, 'head' as const),
    live: fc.boolean(),
    spare: fc.integer({ min: 0, max: 400 }),
    pick: fc.option(fc.integer({ min: 0, max: 400 }), { nil: null }),
  })
  .map((r) => {
    const steps = plainSteps(r.actions) ?? r.spare;
    return {
      model: { id: r.id, sha256: r.sha },
      prompt: r.prompt,
      sampler: { temperature: r.temperature, topK: r.topK, topP: r.topP, seed: r.seed },
      policy: r.policy,
      actions: r.actions,
      steps,
      view: { step: r.pick === null || steps === 0 ? null : r.pick % steps, layer: r.layer, head: r.head, scale: r.log ? 'log' : 'linear', excludeSink: r.sink, forgotten: r.forgotten, live: r.live },
    } satisfies Experiment;
  });

describe('experiment links', () => {
  it('round-trip every valid experiment exactly, with the unapplied prompt edit when there is one', () => {
    fc.assert(
      fc.property(experiments, fc.option(fc.string({ maxLength: 80 }), { nil: null }), (experiment, draft) => {
        const query = experimentQuery(experiment, draft);
        expect(query).not.toBeNull();
        expect(query!.startsWith('v=1&x=')).toBe(true);
        const reading = read(`?${query}`);
        expect(reading).toEqual({ kind: 'experiment', experiment, draft });
      }),
      { numRuns: 500 },
    );
  });

  it('are compact: a 1,000-character prompt and a busy timeline fit in well under the cap', () => {
    const actions: ExperimentAction[] = [];
    for (let i = 0; i < 40; i++) actions.push({ kind: 'decode', steps: 3 }, { kind: 'policy', spec: i % 2 ? 'window:size=32' : 'h2o:heavy=8,recent=8' });
    const prompt = 'The quick brown fox jumps over the lazy dog. '.repeat(23).slice(0, 1000);
    const query = experimentQuery(sample({ prompt, actions, steps: 120, view: DEFAULT_VIEW }))!;
    expect(query.length).toBeLessThan(1500);
  });

  it('refuse an experiment past the 8 KB cap and say how to share it instead', () => {
    let state = 1;
    const noise = Array.from({ length: 14000 }, () => String.fromCharCode(33 + ((state = (state * 1103515245 + 12345) >>> 0) % 90))).join('');
    const big = sample({ prompt: noise });
    expect(encodePayload(big).length).toBeGreaterThan(MAX_PAYLOAD_CHARS);
    expect(experimentQuery(big)).toBeNull();
    expect(linkTooLong(big)).toMatch(/more than the 8 KB a link may carry.*notebook.*bundle/);
    expect(linkTooLong(sample())).toBeNull();
  });

  it('say there is none when the address carries none, and refuse a newer version politely', () => {
    expect(read('')).toEqual({ kind: 'none' });
    expect(read('?foo=1')).toEqual({ kind: 'none' });
    const newer = read(`?v=2&x=${encodePayload(sample())}`);
    expect(newer.kind).toBe('error');
    expect(newer.kind === 'error' && newer.message).toMatch(/newer kvscope \(link version 2\); this app opens version 1 links/);
    const odd = read(`?v=banana&x=${encodePayload(sample())}`);
    expect(odd.kind === 'error' && odd.message).toMatch(/version "banana" is not one this app knows/);
  });

  it('name what is damaged: base64, compression, JSON, and each field by its name', () => {
    const message = (q: string) => {
      const r = read(q);
      return r.kind === 'error' ? r.message : `no error (${r.kind})`;
    };
    expect(message('?v=1&x=@@@')).toMatch(/not base64url/);
    expect(message(`?v=1&x=${encodePayload(sample()).slice(0, 20)}`)).toMatch(/cannot be decompressed|not JSON/);
    expect(message(`?v=1&x=${payloadOf('x').slice(0, 3)}AAAA`)).toMatch(/damaged/);
    const wire = toWire(sample());
    const broken = (patch: Record<string, unknown>) => message(`?v=1&x=${payloadOf({ ...wire, ...patch })}`);
    expect(broken({ p: 42 })).toMatch(/p \(the prompt\) must be text/);
    expect(broken({ s: [0.8, 40, 0.95] })).toMatch(/s \(the sampler\) must be a list of 4 values/);
    expect(broken({ s: [-1, 40, 0.95, 1] })).toMatch(/s\[0\] \(temperature\) must be a number from 0 to 10/);
    expect(broken({ P: '<script>alert(1)</script>' })).toMatch(/P \(the policy\) is not a policy spec/);
    expect(broken({ m: ['../../etc', SHA] })).toMatch(/m\[0\] \(model id\) may hold only/);
    expect(broken({ m: ['kvscope-llama-8l', 'xyz'] })).toMatch(/m\[1\] \(model sha256\) must be 64 lower-case hex digits/);
    expect(broken({ a: [['d', 5], ['zap']] })).toMatch(/a\[1\]\[0\] is not an action kind \("zap"\)/);
    expect(broken({ a: [['d', 0]] })).toMatch(/a\[0\]\[1\] must be a whole number from 1/);
    expect(broken({ a: [['D', 'warp:speed=9']] })).toMatch(/a\[0\]\[1\] is not a drafter spec/);
    expect(broken({ n: 9 })).toMatch(/n \(steps decoded\) is 9, but the actions decode 8 steps/);
    expect(broken({ w: [50, 0, 0, 0, 0, 'all', 1] })).toMatch(/w\[0\] \(selected step\) must be a whole number from -1 to 7/);
    expect(broken({ w: [1, 0, 0, 0, 0, 'some', 1] })).toMatch(/w\[5\] \(forgotten tokens\) must be one of off, all, head/);
    expect(message(`?v=1&x=${payloadOf([1, 2])}`)).toMatch(/the experiment must be an object/);
  });

  it('turn 10,000 fuzzed links into an experiment or one message, never an exception', () => {
    const valid = encodePayload(sample());
    const wire = toWire(sample()) as Record<string, unknown>;
    const mangled = fc.oneof(
      // random text where the payload goes
      fc.string({ maxLength: 200 }).map((x) => `v=1&x=${encodeURIComponent(x)}`),
      // the valid payload with characters changed, cut or added
      fc.tuple(fc.nat(valid.length - 1), fc.constantFrom(...'ABCxyz019-_=+/%'), fc.nat(3)).map(([at, ch, how]) => {
        const p = how === 0 ? valid.slice(0, at) + ch + valid.slice(at + 1) : how === 1 ? valid.slice(0, at) : how === 2 ? valid + ch.repeat(at % 7) : ch + valid.slice(at);
        return `v=1&x=${p}`;
      }),
      // wire objects with any field replaced by any JSON value
      fc.tuple(fc.constantFrom(...Object.keys(wire), 'zz'), fc.jsonValue()).map(([key, value]) => `v=1&x=${payloadOf({ ...wire, [key]: value })}`),
      // any JSON value as the whole experiment
      fc.jsonValue().map((value) => `v=1&x=${payloadOf(value)}`),
      // whole random query strings
      fc.string({ maxLength: 120 }),
    );
    let experiments = 0;
    fc.assert(
      fc.property(mangled, (query) => {
        const reading = readExperimentQuery(query);
        expect(['none', 'experiment', 'error']).toContain(reading.kind);
        if (reading.kind === 'error') expect(reading.message).toMatch(/^This link/);
        if (reading.kind === 'experiment') experiments++;
      }),
      { numRuns: 10_000 },
    );
    expect(experiments).toBeGreaterThan(0);
  });

  it('make the experiment of a /compare lane or a /bench cell: its drafter, then its steps', () => {
    const base = { model: { id: 'm', sha256: SHA }, prompt: 'x', sampler: { temperature: 0, topK: 0, topP: 1, seed: 0 }, policy: 'full' };
    expect(experimentOfRun({ ...base, steps: 6 }).actions).toEqual([{ kind: 'decode', steps: 6 }]);
    expect(experimentOfRun({ ...base, drafter: 'lookup', steps: 6, view: { step: 3 } })).toMatchObject({
      actions: [{ kind: 'drafter', spec: 'lookup' }, { kind: 'run', steps: 6, stopAtEos: false }],
      steps: 6,
      view: { step: 3, layer: 0 },
    });
    // one token with a drafter: the explorer's Run of one is a Step (an uncut round), so one round kept to one token
    expect(experimentOfRun({ ...base, drafter: 'lookup', steps: 1 }).actions).toEqual([
      { kind: 'drafter', spec: 'lookup' },
      { kind: 'round', count: 1 },
      { kind: 'keep', steps: 1 },
    ]);
  });
});
