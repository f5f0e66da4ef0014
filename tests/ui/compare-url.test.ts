/** The /compare link codec: the lanes' specs, prompt, sampler and seed survive a round trip; bad input is caught. */
import { describe, expect, it } from 'vitest';
import { formatPolicySpec } from '../../engine/policies/spec.ts';
import { decodeCompareQuery, drafterProblem, encodeCompareQuery, laneSpec, MAX_PROMPT_CHARS, splitLaneSpec, type CompareSetup } from '../../src/lib/compare/url.ts';

const DEFAULTS: CompareSetup = { prompt: 'default prompt', sampler: { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 }, lanes: ['full', 'window:size=32'] };

describe('compare URL', () => {
  it('round-trips lanes, prompt (any text) and sampler', () => {
    const setup: CompareSetup = {
      prompt: 'Line one\nline two: ünïcödé & = ? # 🙂',
      sampler: { temperature: 0, topK: 0, topP: 1, seed: 4294967295 },
      lanes: ['full', 'h2o:heavy=32,recent=32,accumulate=sum,gqa=sum', 'streaming:sinks=4,recent=0.5,positions=p1', 'snapkv:budget=1e-6'],
    };
    const query = encodeCompareQuery(setup);
    expect(query).toMatch(/^v=1&lane=full&lane=h2o/);
    const { setup: back, problems, present } = decodeCompareQuery(`?${query}`, DEFAULTS);
    expect(problems).toEqual([]);
    expect(present).toBe(true);
    expect(back).toEqual(setup);
  });

  it('carries a composed lane whole (its "+" and spaces survive the query string)', () => {
    const composed = 'window:size=32 + h2o:heavy=8,recent=8,accumulate=sum,gqa=sum';
    const query = encodeCompareQuery({ ...DEFAULTS, lanes: ['full', composed] });
    expect(query).toContain('lane=window%3Asize%3D32+%2B+h2o');
    const { setup, problems } = decodeCompareQuery(query, DEFAULTS);
    expect(problems).toEqual([]);
    expect(setup.lanes).toEqual(['full', composed]);
    // three of the longest canonical specs still fit in a link
    const long = ['compresskv', 'd2o', 'razor'].map((id) => formatPolicySpec({ id, params: {} })).join(' + ');
    expect(long.length).toBeGreaterThan(300);
    expect(decodeCompareQuery(encodeCompareQuery({ ...DEFAULTS, lanes: ['full', long] }), DEFAULTS).setup.lanes).toEqual(['full', long]);
    // a dangling "+" is not a spec
    expect(decodeCompareQuery('lane=full&lane=window%3Asize%3D8+%2B', DEFAULTS).problems.join()).toMatch(/not a policy spec/);
  });

  it('falls back to the defaults for what is missing, and says what it ignored', () => {
    expect(decodeCompareQuery('', DEFAULTS)).toEqual({ setup: DEFAULTS, problems: [], present: false });
    const { setup, problems } = decodeCompareQuery('lane=full&lane=<script>&seed=-3&t=abc&k=2.5&p=0&prompt=hi&v=9', DEFAULTS);
    expect(setup.prompt).toBe('hi');
    expect(setup.sampler).toEqual(DEFAULTS.sampler);
    expect(setup.lanes).toEqual(['full', 'full']);
    expect(problems.join(' | ')).toMatch(/version 9/);
    expect(problems.join(' | ')).toMatch(/not a policy spec/);
    expect(problems.join(' | ')).toMatch(/seed/);
    expect(problems.join(' | ')).toMatch(/temperature/);
    expect(problems.join(' | ')).toMatch(/top-k/);
    expect(problems.join(' | ')).toMatch(/top-p/);
  });

  it('caps the number of lanes and the prompt length', () => {
    const many = Array.from({ length: 6 }, (_, i) => `lane=window%3Asize%3D${i + 1}`).join('&');
    const { setup, problems } = decodeCompareQuery(`${many}&prompt=${'x'.repeat(MAX_PROMPT_CHARS + 10)}`, DEFAULTS);
    expect(setup.lanes).toHaveLength(4);
    expect(setup.prompt).toHaveLength(MAX_PROMPT_CHARS);
    expect(problems.some((p) => /past the 4th/.test(p))).toBe(true);
    expect(problems.some((p) => /cut/.test(p))).toBe(true);
  });
});

describe('compare URL: speculative lanes (`policy | drafter`)', () => {
  it('round-trips a drafter per lane; a lane without one is written as before', () => {
    const setup: CompareSetup = {
      ...DEFAULTS,
      lanes: ['full', 'full | lookup:max_ngram=3,k=10', 'window:size=32 | model:gamma=4', 'window:size=32 + kivi | self:gamma=4,policy=streaming(sinks=4,recent=60)+kivi(bits=4)'],
    };
    const query = encodeCompareQuery(setup);
    expect(query).toContain('lane=full&lane=full+%7C+lookup%3Amax_ngram%3D3%2Ck%3D10&');
    const { setup: back, problems } = decodeCompareQuery(query, DEFAULTS);
    expect(problems).toEqual([]);
    expect(back).toEqual(setup);
    expect(back.lanes.map(splitLaneSpec)).toEqual([
      { policy: 'full', drafter: null },
      { policy: 'full', drafter: 'lookup:max_ngram=3,k=10' },
      { policy: 'window:size=32', drafter: 'model:gamma=4' },
      { policy: 'window:size=32 + kivi', drafter: 'self:gamma=4,policy=streaming(sinks=4,recent=60)+kivi(bits=4)' },
    ]);
  });

  it('opens every existing link exactly as before', () => {
    const old = 'v=1&lane=full&lane=window%3Asize%3D32&prompt=Once+upon+a+time&seed=2&t=0.8&k=40&p=0.95';
    const { setup, problems } = decodeCompareQuery(old, DEFAULTS);
    expect(problems).toEqual([]);
    expect(setup).toEqual({ prompt: 'Once upon a time', sampler: { temperature: 0.8, topK: 40, topP: 0.95, seed: 2 }, lanes: ['full', 'window:size=32'] });
    expect(setup.lanes.map(splitLaneSpec).every((l) => l.drafter === null)).toBe(true);
    expect(encodeCompareQuery(setup)).toBe(old);
  });

  it('normalises the separator; `| none` and a bare `|` are plain lanes', () => {
    const { setup, problems } = decodeCompareQuery('lane=full|lookup&lane=window%3Asize%3D8%7Cnone&lane=full+%7C+', DEFAULTS);
    expect(problems).toEqual([]);
    expect(setup.lanes).toEqual(['full | lookup', 'window:size=8', 'full']);
    expect(laneSpec('full', null)).toBe('full');
    expect(laneSpec('full', ' none ')).toBe('full');
    expect(laneSpec('full', 'lookup')).toBe('full | lookup');
  });

  it('keeps a lane whose drafter is bad, plain, and says why', () => {
    const { setup, problems } = decodeCompareQuery('lane=full&lane=full+%7C+lookahead&lane=window%3Asize%3D8+%7C+lookup%3Ak%3D0&lane=full|model:gamma=4|x', DEFAULTS);
    expect(setup.lanes).toEqual(['full', 'full', 'window:size=8', 'full']);
    expect(problems).toHaveLength(3);
    expect(problems[0]).toMatch(/lane 2 \(full\) decodes without a drafter: .*unknown drafter "lookahead" \(known: model, lookup/);
    expect(problems[1]).toMatch(/lane 3 .*lookup.*k/);
    expect(problems[2]).toMatch(/lane 4 .*no "\|"/);
    // a bad policy before the "|" is still not a lane
    expect(decodeCompareQuery('lane=full&lane=%3Cscript%3E+%7C+lookup', DEFAULTS).problems.join()).toMatch(/not a policy spec/);
    expect(drafterProblem('lookup:max_ngram=3')).toBeNull();
    expect(drafterProblem('lookup:max_ngrm=3')).toMatch(/did you mean max_ngram/);
    expect(drafterProblem('')).toBeNull();
  });
});

describe('compare URL: the run length (`steps`) and the selected step (`at`)', () => {
  it('round-trips both; a setup without them writes the link it always wrote', () => {
    const setup: CompareSetup = { ...DEFAULTS, steps: 6, at: 3 };
    const query = encodeCompareQuery(setup);
    expect(query).toMatch(/&steps=6&at=3$/);
    expect(decodeCompareQuery(query, DEFAULTS)).toEqual({ setup, problems: [], present: true });
    // following the newest step: no `at`
    const newest = encodeCompareQuery({ ...DEFAULTS, steps: 40, at: null });
    expect(newest).toMatch(/&steps=40$/);
    expect(decodeCompareQuery(newest, DEFAULTS).setup).toEqual({ ...DEFAULTS, steps: 40 });
    expect(encodeCompareQuery(DEFAULTS)).not.toMatch(/steps|at=/);
  });

  it('an old link has neither: nothing is decoded when it opens', () => {
    const { setup } = decodeCompareQuery('v=1&lane=full&lane=window%3Asize%3D32&prompt=hi&seed=2&t=0.8&k=40&p=0.95', DEFAULTS);
    expect(setup.steps).toBeUndefined();
    expect(setup.at).toBeUndefined();
  });

  it('names a bad run length or selected step and falls back (the rest of the link stands)', () => {
    for (const bad of ['0', '-2', '2.5', 'abc', '', '99999']) {
      const { setup, problems } = decodeCompareQuery(`lane=full&lane=window%3Asize%3D8&prompt=hi&steps=${bad}`, DEFAULTS);
      expect(setup.steps, bad).toBeUndefined();
      expect(setup.prompt).toBe('hi');
      expect(problems, bad).toEqual([`ignored run length (steps) ${JSON.stringify(bad)} in the link`]);
    }
    const bad = decodeCompareQuery('lane=full&lane=full&steps=6&at=x', DEFAULTS);
    expect(bad.setup.steps).toBe(6);
    expect(bad.setup.at).toBeUndefined();
    expect(bad.problems).toEqual(['ignored selected step (at) "x" in the link']);
    const past = decodeCompareQuery('lane=full&lane=full&steps=6&at=6', DEFAULTS);
    expect(past.setup.at).toBeUndefined();
    expect(past.problems).toEqual(['ignored the selected step 6 in the link: it decodes 6 step(s), numbered from 0']);
    const none = decodeCompareQuery('lane=full&lane=full&at=2', DEFAULTS);
    expect(none.setup.at).toBeUndefined();
    expect(none.problems).toEqual(['ignored the selected step 2 in the link: it decodes no steps']);
  });
});
