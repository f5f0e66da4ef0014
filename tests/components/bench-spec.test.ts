/** The /bench spec task's pieces: the setup's plan (planSpec), the results table and the chart over a report. */
import { afterEach, describe, expect, it } from 'vitest';
import type { SpecReport, SpecRow } from '../../engine/eval/spec.ts';
import SpecChart from '../../src/lib/bench/SpecChart.svelte';
import SpecTable from '../../src/lib/bench/SpecTable.svelte';
import { defaultDrafterChoices, identicalText, MANIFEST_DRAFT, planSpec, planSpecText, specBars, specTableRows, type SpecSetup } from '../../src/lib/bench/spec.ts';
import { DRAFTER_SUGGESTIONS } from '../../src/lib/compare/state.svelte.ts';
import { DRAFTERS } from '../../engine/spec/index.ts';
import { render, unmountAll } from './render.ts';

afterEach(unmountAll);

const SETUP: SpecSetup = { drafters: defaultDrafterChoices(), policy: 'full', gammas: '', prompts: 1, promptTokens: 64, tokens: 16, temperature: 0, seed: 0, texts: ['python-doc', 'prose'] };

function row(spec: string, text: 'prose' | 'python-doc', calls: number, speedup: number, identical: boolean | null = true): SpecRow {
  return {
    text,
    spec,
    gamma: 4,
    prompts: 1,
    tokens: 16,
    acceptance_rate: 0.5,
    mean_accepted_length: 1 / calls,
    target_calls_per_token: calls,
    per_position_acceptance: [0.8, 0.5, 0.25, 0.1],
    plain_ms_per_token: 10,
    speculative_ms_per_token: 10 / speedup,
    speedup,
    draft_ms_per_token: 1,
    verify_ms_per_token: 5,
    identical_to_plain: identical,
    speculative: {} as SpecRow['speculative'],
    drafter: null,
  };
}

const REPORT: SpecReport = {
  format: 'kvscope-eval',
  version: 1,
  task: 'spec',
  model: { id: 'm', name: 'M', layers: 8, kvHeads: 2, context: 256 },
  settings: { prompts: 1, promptTokens: 64, tokens: 16, temperature: 0, seed: 0, policy: 'full', texts: ['prose', 'python-doc'], gammas: null },
  plain: [
    { text: 'prose', prompts: 1, tokens: 16, ms_per_token: 10 },
    { text: 'python-doc', prompts: 1, tokens: 16, ms_per_token: 11 },
  ],
  records: [
    { draft: 'lookup', id: 'lookup', rows: [row('lookup:max_ngram=3,k=10', 'prose', 0.9, 1.1), row('lookup:max_ngram=3,k=10', 'python-doc', 0.6, 1.6)] },
    { draft: 'model:gamma=4', id: 'model', rows: [row('model:gamma=4,model=kvscope-draft-2l,policy=full', 'prose', 0.5, 0.8, false), row('model:gamma=4,model=kvscope-draft-2l,policy=full', 'python-doc', 0.4, 0.9)] },
  ],
  cancelled: false,
  seconds: 3,
};

describe('planSpec', () => {
  it('plans the chosen drafters with canonical specs, texts in registry order, the canonical target policy', () => {
    const plan = planSpec({ ...SETUP, policy: 'window:size=32' });
    expect('runs' in plan && plan.runs.map((r) => r.spec)).toEqual(['model:gamma=4,model=,policy=full', 'lookup:max_ngram=3,k=10']);
    expect('config' in plan && plan.config).toEqual({
      drafts: ['model:gamma=4', 'lookup:max_ngram=3,k=10'],
      settings: { prompts: 1, promptTokens: 64, tokens: 16, temperature: 0, seed: 0, policy: 'window:size=32', texts: ['prose', 'python-doc'], gammas: null },
    });
  });

  it('expands γ values over specs that do not set theirs; explains bad setups', () => {
    // lookup without its γ (k) so that the list expands it (the registry's example sets k)
    const drafters = SETUP.drafters.map((d) => ({ ...d, spec: d.id === 'lookup' ? 'lookup' : d.spec, on: d.id === 'lookup' || d.id === 'self' }));
    const plan = planSpec({ ...SETUP, drafters, gammas: '2, 8' });
    // self sets its γ in the spec: it runs once
    expect('runs' in plan && plan.runs.map((r) => r.gamma)).toEqual([2, 8, 4]);
    expect(planSpec({ ...SETUP, drafters: drafters.map((d) => ({ ...d, on: false })) })).toEqual({ problem: 'choose at least one drafter' });
    expect(planSpec({ ...SETUP, drafters: drafters.map((d) => (d.id === 'lookup' ? { ...d, spec: ' ' } : d)) })).toMatchObject({ problem: expect.stringMatching(/^lookup: give a spec/) });
    expect(planSpec({ ...SETUP, drafters: drafters.map((d) => (d.id === 'lookup' ? { ...d, spec: 'none' } : d)) })).toMatchObject({ problem: expect.stringMatching(/^drafter: "none" is plain decoding/) });
    expect(planSpec({ ...SETUP, policy: 'nosuch' })).toMatchObject({ problem: expect.stringMatching(/^target policy: /) });
    expect(planSpec({ ...SETUP, drafters, gammas: '0' })).toMatchObject({ problem: expect.stringMatching(/^drafter: /) });
    expect(planSpec({ ...SETUP, texts: [] })).toEqual({ problem: 'choose at least one text set' });
    expect(planSpec({ ...SETUP, tokens: 0 })).toEqual({ problem: 'tokens must be a positive integer' });
    expect(planSpec({ ...SETUP, temperature: -1 })).toMatchObject({ problem: expect.stringMatching(/temperature/) });
  });

  it('offers every registered drafter with an example spec', () => {
    // the registry's examples (DrafterDefinition.example), in registry order
    expect(defaultDrafterChoices().map((d) => d.spec)).toEqual(DRAFTERS.map((d) => d.example.spec));
    expect(defaultDrafterChoices().map((d) => d.spec)).toEqual(['model:gamma=4', 'lookup:max_ngram=3,k=10', 'infinigram:gamma=4', 'omnidraft:max_gamma=8', 'online:gamma=4', 'self:gamma=4,policy=streaming(sinks=4,recent=60)']);
    // compare's drafter field suggests every one of them, then its extras
    expect(DRAFTER_SUGGESTIONS.slice(0, DRAFTERS.length).map((d) => d.spec)).toEqual(DRAFTERS.map((d) => d.example.spec));
    expect(DRAFTER_SUGGESTIONS.map((d) => d.spec)).toContain('self:gamma=4,policy=window(size=32)');
    expect(identicalText(null)).toBe('—');
    // the plan names an empty draft model id (the manifest's) instead of writing `model=`
    expect(planSpecText('model:gamma=4,model=,policy=full')).toBe(`model:gamma=4,model=${MANIFEST_DRAFT},policy=full`);
    expect(planSpecText('omnidraft:max_gamma=8,model=')).toBe(`omnidraft:max_gamma=8,model=${MANIFEST_DRAFT}`);
    expect(planSpecText('model:gamma=4,model=kvscope-draft-2l,policy=full')).toBe('model:gamma=4,model=kvscope-draft-2l,policy=full');
    expect(planSpecText('self:gamma=4,policy=streaming(sinks=4,recent=60)')).toBe('self:gamma=4,policy=streaming(sinks=4,recent=60)');
    expect(specTableRows(REPORT).map((r) => r.id)).toEqual(['lookup', 'lookup', 'model', 'model']);
    expect(specBars(REPORT, 'speedup').map((b) => b.value)).toEqual([1.1, 1.6, 0.8, 0.9]);
  });
});

describe('SpecTable', () => {
  it('one row per drafter run and text set with every figure; NO where greedy diverged', () => {
    const el = render(SpecTable, { report: REPORT });
    const rows = [...el.querySelectorAll('[data-testid="bench-spec-row"]')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent?.trim().replace(/\s+/g, ' ')));
    expect(rows).toHaveLength(4);
    expect(rows[0]).toEqual(['lookup:max_ngram=3,k=10', 'prose', '0.500', '1.11', '0.900', '0.80 0.50 0.25 0.10', '10.00', '9.09', '1.10×', 'yes']);
    expect(rows[2][9]).toBe('NO');
    expect(el.querySelectorAll('[data-testid="spec-positions"]')[0].querySelectorAll('.bar')).toHaveLength(4);
    expect(el.querySelector('[data-testid="spec-positions"] .bars')!.getAttribute('role')).toBe('img');
    // long specs break after their commas, not mid-word
    expect(el.querySelector('[data-testid="bench-spec-row"] code')!.innerHTML.replace(/<!---->/g, '')).toBe('lookup:max_ngram=3,<wbr>k=10');
    expect(el.querySelector('[data-testid="bench-spec-plain"]')!.textContent).toMatch(/prose 10\.00 ms\/token \(1 prompt\) · python-doc 11\.00/);
  });
});

describe('SpecChart', () => {
  it('draws a bar per run and text set in both panels, with the 1 / 1× reference lines', () => {
    for (const width of [1100, 360]) {
      const el = render(SpecChart, { report: REPORT, width });
      for (const metric of ['target_calls_per_token', 'speedup']) {
        const panel = el.querySelector(`[data-testid="spec-chart-${metric}"]`)!;
        expect(panel.querySelectorAll('[data-testid="spec-bar"]')).toHaveLength(4);
        expect(panel.querySelectorAll('[data-testid="spec-reference"]')).toHaveLength(1);
      }
      const svg = el.querySelector('svg')!;
      expect(Number(svg.getAttribute('width'))).toBe(width);
      expect(svg.textContent).toContain('1.60×');
      // ticks about 60 px apart: at phone width, few enough that their labels never touch
      const ticks = el.querySelectorAll('[data-testid="spec-chart-speedup"] [data-testid="spec-tick"]');
      expect(ticks.length).toBeGreaterThanOrEqual(2);
      if (width === 360) expect(ticks.length).toBeLessThanOrEqual(5);
      // a value label never sits on the dashed reference line (0.90 ends just left of 1×)
      const panel = el.querySelector('[data-testid="spec-chart-speedup"]')!;
      const ref = Number(panel.querySelector('[data-testid="spec-reference"]')!.getAttribute('x1'));
      for (const label of panel.querySelectorAll('[data-testid="spec-value"]')) {
        const x = Number(label.getAttribute('x')) - 66;
        const w = (label.textContent ?? '').length * 6;
        expect(ref < x - 1 || ref > x + w).toBe(true);
      }
      unmountAll();
    }
  });
});
