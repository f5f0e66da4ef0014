/** The /compare link codec: the lanes' specs, prompt, sampler and seed survive a round trip; bad input is caught. */
import { describe, expect, it } from 'vitest';
import { formatPolicySpec } from '../../engine/policies/spec.ts';
import { decodeCompareQuery, encodeCompareQuery, MAX_PROMPT_CHARS, type CompareSetup } from '../../src/lib/compare/url.ts';

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
