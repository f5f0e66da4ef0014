/**
 * The /bench link codec: every field of the setup survives a round trip (fast-check over valid
 * setups), a malformed field is named and takes its default while the rest stands, another
 * version is refused, and no query string — 10,000 fuzzed ones — makes decoding throw.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { POLICIES } from '../../engine/policies/index.ts';
import { DRAFTERS } from '../../engine/spec/index.ts';
import { benchDefaults, type BenchSetup } from '../../src/lib/bench/setup.ts';
import { SPEC_TEXT_SETS } from '../../src/lib/bench/spec.ts';
import { decodeBenchQuery, encodeBenchQuery } from '../../src/lib/bench/url.ts';

const DEFAULTS = benchDefaults();

const list = (values: fc.Arbitrary<number>) =>
  fc.tuple(fc.array(values, { minLength: 1, maxLength: 5 }), fc.constantFrom(', ', ' ', ',', ' ,  ')).map(([v, sep]) => v.map(String).join(sep));

const validSetup: fc.Arbitrary<BenchSetup> = fc.record({
  task: fc.constantFrom('ppl' as const, 'needle' as const, 'spec' as const),
  chosen: fc.shuffledSubarray(POLICIES.map((p) => p.id)),
  extra: fc.array(fc.constantFrom('h2o:accumulate=mean', 'window:size=64 + h2o:heavy=16,recent=16', 'snapkv', 'streaming:sinks=4,recent=60'), { maxLength: 3 }).map((a) => a.join(' ')),
  budgets: list(fc.integer({ min: 1, max: 4096 })),
  seed: fc.integer({ min: 0, max: 0xffffffff }),
  windows: fc.integer({ min: 1, max: 16 }),
  tokens: fc.integer({ min: 16, max: 8192 }),
  prefix: fc.integer({ min: 1, max: 8192 }),
  lengths: list(fc.integer({ min: 1, max: 8192 })),
  depths: list(fc.double({ min: 0, max: 1, noNaN: true })),
  trials: fc.integer({ min: 1, max: 100 }),
  drafters: fc.tuple(...DRAFTERS.map((d) => fc.record({ id: fc.constant(d.id), spec: fc.constantFrom(d.example.spec, '', `${d.id}`), on: fc.boolean() }))),
  targetPolicy: fc.constantFrom('full', 'window:size=64', 'snapkv:budget=32 + kivi', ''),
  gammas: fc.oneof(fc.constant(''), list(fc.integer({ min: 1, max: 16 }))),
  specPrompts: fc.integer({ min: 1, max: 64 }),
  specPromptTokens: fc.integer({ min: 2, max: 4096 }),
  specTokens: fc.integer({ min: 1, max: 4096 }),
  temperature: fc.double({ min: 0, max: 10, noNaN: true }),
  texts: fc.shuffledSubarray([...SPEC_TEXT_SETS]),
});

describe('bench URL', () => {
  it('round-trips every valid setup exactly', () => {
    fc.assert(
      fc.property(validSetup, (setup) => {
        const query = encodeBenchQuery(setup);
        expect(query.startsWith('v=1&task=')).toBe(true);
        expect(decodeBenchQuery(`?${query}`, DEFAULTS)).toEqual({ setup, problems: [], present: true });
      }),
      { numRuns: 500 },
    );
  });

  it('a bare address is the defaults, and not a link', () => {
    expect(decodeBenchQuery('', DEFAULTS)).toEqual({ setup: DEFAULTS, problems: [], present: false });
    expect(decodeBenchQuery('v=1', DEFAULTS).present).toBe(false);
  });

  it('writes every field, so the link keeps its meaning when defaults change', () => {
    const q = new URLSearchParams(encodeBenchQuery(DEFAULTS));
    for (const key of ['task', 'policies', 'extra', 'budgets', 'seed', 'windows', 'tokens', 'prefix', 'lengths', 'depths', 'trials', 'drafters', 'target', 'gammas', 'spec-prompts', 'spec-prompt-tokens', 'spec-tokens', 'temperature', 'texts']) {
      expect(q.has(key), key).toBe(true);
    }
    for (const d of DRAFTERS) expect(q.get(`draft.${d.id}`)).toBe(d.example.spec);
    expect(q.get('policies')).toBe('full,window,streaming,h2o,razor');
    expect(q.get('drafters')).toBe('model,lookup');
  });

  it('names each malformed field, takes its default and keeps the rest', () => {
    const cases: [string, keyof BenchSetup, RegExp][] = [
      ['task=mmlu', 'task', /task="mmlu".*the tasks are ppl, needle, spec/],
      ['policies=full,nosuch', 'chosen', /policies=.*unknown policy "nosuch"/],
      ['policies=full,full', 'chosen', /listed twice/],
      ['extra=%3Cscript%3E', 'extra', /extra=.*is not a policy spec/],
      ['budgets=64,abc', 'budgets', /budgets=.*"abc" is not an integer/],
      ['budgets=0', 'budgets', /budgets=.*not a positive integer/],
      ['budgets=', 'budgets', /budgets=.*give at least one value/],
      ['seed=-1', 'seed', /seed="-1".*0\.\.4294967295/],
      ['windows=17', 'windows', /windows=.*1\.\.16/],
      ['tokens=8', 'tokens', /tokens=/],
      ['prefix=1.5', 'prefix', /prefix=/],
      ['lengths=256,x', 'lengths', /lengths=/],
      ['depths=0,2', 'depths', /depths=.*2 is not a depth in \[0, 1\]/],
      ['trials=0', 'trials', /trials=/],
      ['target=%3E%3E', 'targetPolicy', /target=.*not a policy spec/],
      ['gammas=2,x', 'gammas', /gammas=/],
      ['spec-prompts=65', 'specPrompts', /spec-prompts=/],
      ['spec-prompt-tokens=1', 'specPromptTokens', /spec-prompt-tokens=/],
      ['spec-tokens=abc', 'specTokens', /spec-tokens=/],
      ['temperature=-1', 'temperature', /temperature=.*0\.\.10/],
      ['texts=prose,poetry', 'texts', /texts=.*unknown text set "poetry"/],
      [`budgets=${'1,'.repeat(150)}1`, 'budgets', /longer than 200 characters/],
    ];
    for (const [field, key, message] of cases) {
      const others = field.startsWith('task=') ? ['windows=3'] : ['windows=3', 'task=needle'];
      const { setup, problems } = decodeBenchQuery(['v=1', field, ...others].join('&'), DEFAULTS);
      expect(problems, field).toHaveLength(1);
      expect(problems[0], field).toMatch(message);
      expect(setup[key], field).toEqual(DEFAULTS[key]);
      if (!field.startsWith('windows=')) expect(setup.windows, field).toBe(3);
      if (!field.startsWith('task=')) expect(setup.task, field).toBe('needle');
    }
  });

  it('checks the drafters: unknown ids, specs the engine refuses', () => {
    const { setup, problems } = decodeBenchQuery('drafters=lookup,lookahead&draft.lookup=lookup%3Amax_ngrm%3D3&draft.model=model%3Agamma%3D8&draft.nosuch=x', DEFAULTS);
    expect(problems).toHaveLength(3);
    expect(problems[0]).toMatch(/drafters=.*unknown drafter "lookahead"/);
    expect(problems[1]).toMatch(/draft\.lookup=.*did you mean max_ngram/);
    expect(problems[2]).toMatch(/"draft\.nosuch".*no drafter "nosuch"/);
    // the bad list leaves the default choice; the good spec is taken
    expect(setup.drafters.find((d) => d.id === 'model')).toEqual({ id: 'model', spec: 'model:gamma=8', on: true });
    expect(setup.drafters.find((d) => d.id === 'lookup')!.spec).toBe(DEFAULTS.drafters.find((d) => d.id === 'lookup')!.spec);
  });

  it('refuses another version politely, leaving the defaults', () => {
    const newer = decodeBenchQuery('v=2&task=needle&budgets=32', DEFAULTS);
    expect(newer.setup).toEqual(DEFAULTS);
    expect(newer.problems).toEqual([expect.stringMatching(/made by a newer kvscope \(bench link version 2; this page reads version 1\)/)]);
    expect(decodeBenchQuery('v=banana&task=needle', DEFAULTS).problems[0]).toMatch(/version "banana" is not one this page reads/);
  });

  it('never throws on 10,000 fuzzed query strings, and what it reads is a setup that writes a clean link', () => {
    const keys = ['v', 'task', 'policies', 'extra', 'budgets', 'seed', 'windows', 'tokens', 'prefix', 'lengths', 'depths', 'trials', 'drafters', 'draft.model', 'draft.lookup', 'draft.self', 'draft.x', 'target', 'gammas', 'spec-prompts', 'spec-prompt-tokens', 'spec-tokens', 'temperature', 'texts'];
    const value = fc.oneof(fc.string({ maxLength: 30 }), fc.string({ unit: 'binary', maxLength: 30 }), fc.integer().map(String), fc.double().map(String), fc.constantFrom('1', '0', '', 'full', 'lookup', 'prose', '__proto__', '%', '%E0%A4%A', 'x'.repeat(3000)));
    // values escaped, or raw (stray "%", "&", "=" and all)
    const pair = fc.tuple(fc.constantFrom(...keys), value, fc.boolean()).map(([k, v, raw]) => `${k}=${raw ? v : encodeURIComponent(v)}`);
    const structured = fc.array(pair, { maxLength: 12 }).map((pairs) => pairs.join('&'));
    const query = fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 200 }), structured);
    fc.assert(
      fc.property(query, (search) => {
        const { setup, problems } = decodeBenchQuery(search, DEFAULTS);
        expect(Array.isArray(problems)).toBe(true);
        const again = decodeBenchQuery(encodeBenchQuery(setup), DEFAULTS);
        expect(again.problems).toEqual([]);
        expect(again.setup).toEqual(setup);
      }),
      { numRuns: 10_000 },
    );
  });
});
