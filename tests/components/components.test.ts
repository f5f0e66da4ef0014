/** Svelte components rendered in happy-dom: what they show and what they report back. */
import { flushSync } from 'svelte';
import { afterEach, describe, expect, it } from 'vitest';
import { render, unmountAll } from './render.ts';
import TokenStream from '../../src/lib/components/TokenStream.svelte';
import PolicyPicker from '../../src/lib/components/PolicyPicker.svelte';
import PolicyPickerHarness from './PolicyPickerHarness.svelte';
import { POLICIES } from '../../engine/policies/index.ts';
import MemoryGauge from '../../src/lib/components/MemoryGauge.svelte';
import TopK from '../../src/lib/components/TopK.svelte';
import ErrorBanner from '../../src/lib/components/ErrorBanner.svelte';
import LoadingPanel from '../../src/lib/components/LoadingPanel.svelte';
import type { StepRecord } from '../../src/lib/explorer/state.svelte.ts';
import type { PolicyInfo } from '../../src/lib/worker/protocol.ts';
import type { MemoryReport } from '../../engine/cache/store.ts';

afterEach(unmountAll);

const memory: MemoryReport = {
  tokens: 10,
  entries: [
    [8, 8],
    [8, 8],
  ],
  heldEntries: 32,
  kBytes: 32 * 32 * 4,
  vBytes: 32 * 32 * 4,
  bytes: 2 * 32 * 32 * 4,
  fullKBytes: 40 * 32 * 4,
  fullVBytes: 40 * 32 * 4,
  fullBytes: 2 * 40 * 32 * 4,
  ratio: 0.8,
  bitsPerElement: 32,
};

function step(i: number, piece: string, prob: number): StepRecord {
  return {
    step: i,
    tokenIndex: 3 + i,
    position: 3 + i,
    token: { id: 100 + i, piece, prob },
    sampleProb: prob,
    next: [],
    policy: 'full',
    evicted: 0,
    merged: 0,
    reencoded: 0,
    memory,
    timings: { forwardMs: 1, policyMs: 0, totalMs: 1 },
  };
}

describe('TokenStream', () => {
  it('shows prompt and generated tokens readably, with probabilities, and selects a step on click', () => {
    const picked: number[] = [];
    const el = render(TokenStream, {
      prompt: { ids: [1, 50, 51], pieces: ['<|bos|>', 'Hello', '\n'] },
      steps: [step(0, ' world', 0.42), step(1, '<0xE2>', 0.01), step(2, '\n', 0.2)],
      current: 1,
      following: false,
      onselect: (s: number) => picked.push(s),
    });
    const stream = el.querySelector('[data-testid="token-stream"]')!;
    expect(stream.textContent).toContain('Hello');
    expect(stream.textContent).toContain('↵');
    expect(stream.textContent).not.toContain('\uFFFD');
    const tokens = el.querySelectorAll<HTMLButtonElement>('[data-testid="token"]');
    expect(tokens).toHaveLength(3);
    expect(tokens[0].querySelector('.piece')!.textContent).toBe(' world');
    expect(tokens[0].querySelector('.p')!.textContent).toBe('0.42');
    expect(tokens[1].querySelector('.piece')!.textContent).toBe('<0xE2>');
    expect(tokens[1].classList.contains('current')).toBe(true);
    expect(el.querySelectorAll('br')).toHaveLength(2); // after the prompt's "\n" and the generated one
    tokens[2].click();
    expect(picked).toEqual([2]);
  });
});

describe('PolicyPicker', () => {
  const policies: PolicyInfo[] = [
    { id: 'full', label: 'Full cache', description: 'keeps all', paper: { short: 'V 2017', title: 't' }, params: [], needs: { attention: false, queries: false, calibration: false } },
    {
      id: 'demo',
      label: 'Demo',
      description: 'every kind of parameter',
      paper: { short: 'D 2024', title: 't', url: 'https://example.org' },
      params: [
        { name: 'size', kind: 'int', default: 128, min: 1, description: 'entries kept' },
        { name: 'ratio', kind: 'float', default: 0.5, min: 0, max: 1, description: 'a share' },
        { name: 'mode', kind: 'enum', default: 'a', choices: ['a', 'b'], description: 'a choice' },
        { name: 'flag', kind: 'bool', default: true, description: 'a switch' },
      ],
      needs: { attention: true, queries: false, calibration: false },
    },
  ];

  it('builds one control per typed parameter and reports changes', () => {
    const events: unknown[] = [];
    const el = render(PolicyPicker, {
      policies,
      value: [{ id: 'demo', params: { size: 128, ratio: 0.5, mode: 'a', flag: true } }],
      spec: 'demo:size=128,ratio=0.5,mode=a,flag=true',
      active: 'full',
      changed: true,
      disabled: false,
      onpick: (member: number, id: string) => events.push(['pick', member, id]),
      onparam: (member: number, name: string, v: unknown) => events.push([member, name, v]),
      onapply: () => events.push('apply'),
    });
    const select = el.querySelector<HTMLSelectElement>('[data-testid="policy-select"]')!;
    expect([...select.options].map((o) => o.value)).toEqual(['full', 'demo']);
    const size = el.querySelector<HTMLInputElement>('[data-testid="policy-param-size"]')!;
    expect(size.type).toBe('number');
    expect(size.min).toBe('1');
    expect(size.step).toBe('1');
    expect(el.querySelector<HTMLInputElement>('[data-testid="policy-param-ratio"]')!.max).toBe('1');
    expect(el.querySelectorAll('select')).toHaveLength(2); // policy + enum
    expect(el.querySelector('input[type="checkbox"]')).not.toBeNull();
    expect(el.querySelector('a')!.getAttribute('href')).toBe('https://example.org');
    size.value = '64';
    size.dispatchEvent(new Event('input', { bubbles: true }));
    select.value = 'full';
    select.dispatchEvent(new Event('change', { bubbles: true }));
    el.querySelector<HTMLButtonElement>('[data-testid="policy-apply"]')!.click();
    expect(events).toEqual([[0, 'size', 64], ['pick', 0, 'full'], 'apply']);
    // without onadd / onspec the picker offers no composition and no spec field
    expect(el.querySelector('[data-testid="policy-add-member"]')).toBeNull();
    expect(el.querySelector('[data-testid="policy-spec"]')).toBeNull();
  });

  it('explains an out-of-range value and blocks applying it', () => {
    const el = render(PolicyPicker, {
      policies,
      value: [{ id: 'demo', params: { size: 0, ratio: 0.5, mode: 'a', flag: true } }],
      spec: null,
      active: 'full',
      changed: true,
      disabled: false,
      onpick: () => {},
      onparam: () => {},
      onapply: () => {},
    });
    expect(el.querySelector('[role="alert"]')!.textContent).toContain('at least 1');
    expect(el.querySelector<HTMLButtonElement>('[data-testid="policy-apply"]')!.disabled).toBe(true);
  });

  // the registry's own policies, as the worker describes them to the page
  const registry: PolicyInfo[] = POLICIES.map((p) => ({ id: p.id, label: p.label, description: p.description, paper: p.paper, params: [...p.params], needs: p.needs }));
  const specField = (el: HTMLElement) => el.querySelector<HTMLTextAreaElement>('[data-testid="policy-spec"]')!;
  const type = (field: HTMLTextAreaElement | HTMLInputElement, text: string) => {
    field.value = text;
    field.dispatchEvent(new Event('input', { bubbles: true }));
    flushSync();
  };
  // the picker awaits onspec (the explorer's answers after a round trip to the worker)
  const settle = async () => {
    await new Promise((resolve) => setTimeout(resolve, 0));
    flushSync();
  };
  const press = (field: HTMLElement, key: string) => {
    field.dispatchEvent(new KeyboardEvent('keydown', { key, bubbles: true, cancelable: true }));
    flushSync();
  };

  it('composes: "then …" adds a member with its own policy and parameters, the spec follows, members can be removed', () => {
    const applied: (string | null)[] = [];
    const el = render(PolicyPickerHarness, { policies: registry, initial: 'window:size=32', onapplied: (spec: string | null) => applied.push(spec) });
    expect(specField(el).value).toBe('window:size=32');
    expect(el.querySelectorAll('[data-testid="policy-member"]')).toHaveLength(0);

    el.querySelector<HTMLButtonElement>('[data-testid="policy-add-member"]')!.click();
    flushSync();
    expect(el.querySelectorAll('[data-testid="policy-member"]')).toHaveLength(1);
    const second = el.querySelector<HTMLSelectElement>('[data-testid="policy-select-1"]')!;
    // the uncalibrated model cannot run RazorAttention: offered, but not selectable
    expect([...second.options].find((o) => o.value === 'razor')!.disabled).toBe(true);
    second.value = 'h2o';
    second.dispatchEvent(new Event('change', { bubbles: true }));
    flushSync();
    type(el.querySelector<HTMLInputElement>('[data-testid="policy-param-1-heavy"]')!, '8');
    type(el.querySelector<HTMLInputElement>('[data-testid="policy-param-1-recent"]')!, '8');
    // the first member keeps its own controls and ids
    expect(el.querySelector<HTMLInputElement>('[data-testid="policy-param-size"]')!.value).toBe('32');
    expect(specField(el).value).toBe('window:size=32 + h2o:heavy=8,recent=8,accumulate=sum,gqa=sum');
    expect(el.textContent).toContain('The members run in this order');

    // a third member at most
    el.querySelector<HTMLButtonElement>('[data-testid="policy-add-member"]')!.click();
    flushSync();
    expect(el.querySelectorAll('[data-testid="policy-member"]')).toHaveLength(2);
    expect(el.querySelector('[data-testid="policy-add-member"]')).toBeNull();
    el.querySelector<HTMLButtonElement>('[data-testid="policy-remove-2"]')!.click();
    flushSync();
    expect(el.querySelectorAll('[data-testid="policy-member"]')).toHaveLength(1);

    // a parameter out of range names the member and blocks Apply; the field keeps the last valid spec
    type(el.querySelector<HTMLInputElement>('[data-testid="policy-param-1-heavy"]')!, '-1');
    expect(el.querySelector('[role="alert"]')!.textContent).toContain('h2o heavy: at least 0');
    expect(el.querySelector<HTMLButtonElement>('[data-testid="policy-apply"]')!.disabled).toBe(true);
    expect(specField(el).value).toBe('window:size=32 + h2o:heavy=8,recent=8,accumulate=sum,gqa=sum');
    type(el.querySelector<HTMLInputElement>('[data-testid="policy-param-1-heavy"]')!, '4');
    el.querySelector<HTMLButtonElement>('[data-testid="policy-apply"]')!.click();
    expect(applied).toEqual(['window:size=32 + h2o:heavy=4,recent=8,accumulate=sum,gqa=sum']);
  });

  it('takes a typed spec on Enter; a spec the engine refuses is named next to the field and changes nothing', async () => {
    const applied: (string | null)[] = [];
    const el = render(PolicyPickerHarness, { policies: registry, initial: 'full', onapplied: (spec: string | null) => applied.push(spec) });
    const field = specField(el);

    type(field, 'window:size=32 + h2o:heavy=oops');
    expect(el.textContent).toContain('Enter or Apply now uses this spec');
    press(field, 'Enter');
    await settle();
    expect(el.querySelector('[data-testid="policy-spec-error"]')!.textContent).toMatch(/^h2o: heavy must be a number ≥ [\d.]+, got "oops"$/);
    expect(el.querySelector<HTMLSelectElement>('[data-testid="policy-select"]')!.value).toBe('full');
    expect(el.querySelectorAll('[data-testid="policy-member"]')).toHaveLength(0);
    expect(field.value).toBe('window:size=32 + h2o:heavy=oops'); // kept, to be fixed
    expect(applied).toEqual([]);

    // Esc restores the picked policy's spec
    press(field, 'Escape');
    expect(field.value).toBe('full');

    type(field, 'window:size=32+h2o:heavy=8,recent=8');
    press(field, 'Enter');
    await settle();
    expect(el.querySelector('[data-testid="policy-spec-error"]')).toBeNull();
    expect(el.querySelector<HTMLSelectElement>('[data-testid="policy-select"]')!.value).toBe('window');
    expect(el.querySelector<HTMLSelectElement>('[data-testid="policy-select-1"]')!.value).toBe('h2o');
    expect(el.querySelector<HTMLInputElement>('[data-testid="policy-param-1-heavy"]')!.value).toBe('8');
    // the field now shows the engine's canonical form of what was typed
    expect(field.value).toBe('window:size=32 + h2o:heavy=8,recent=8,accumulate=sum,gqa=sum');
  });
});

describe('charts', () => {
  it('MemoryGauge shows held vs full bytes, the ratio and the effective bits', () => {
    const el = render(MemoryGauge, { memory, history: [], step: 3, width: 500 });
    const text = el.textContent ?? '';
    expect(text).toContain('8.0 KiB held of 10 KiB full cache');
    expect(text).toContain('80%');
    expect(text).toContain('32.0 bits per stored element');
    expect(text).toContain('32 of 40 entries');
    expect(el.querySelectorAll('svg rect').length).toBeGreaterThanOrEqual(6);
  });

  it('TopK draws one bar per candidate and marks the token drawn next', () => {
    const tokens = [
      { id: 5, piece: ' the', prob: 0.5 },
      { id: 6, piece: ' a', prob: 0.3 },
      { id: 7, piece: '\n', prob: 0.1 },
    ];
    const el = render(TopK, { tokens, chosen: 6, width: 300 });
    const labels = [...el.querySelectorAll('text')].map((t) => t.textContent);
    expect(labels).toContain('␣the');
    expect(labels).toContain('↵');
    expect(labels).toContain('token drawn next');
    const fills = [...el.querySelectorAll('g > rect')].slice(0, 3).map((r) => r.getAttribute('fill'));
    expect(fills).toEqual(['#0072B2', '#E69F00', '#0072B2']);
  });

  it('ErrorBanner offers the right way out', () => {
    let retried = 0;
    const el = render(ErrorBanner, {
      error: { kind: 'model', message: 'model.onnx.part1: file is missing', action: 'retry' },
      onretry: () => retried++,
      onrestart: () => {},
      ondismiss: () => {},
    });
    expect(el.textContent).toContain('The model could not be loaded');
    expect(el.querySelector('[data-testid="error-message"]')!.textContent).toBe('model.onnx.part1: file is missing');
    el.querySelector<HTMLButtonElement>('[data-testid="retry"]')!.click();
    expect(retried).toBe(1);
  });

  it('LoadingPanel shows the phase, the file and the bytes', () => {
    const el = render(LoadingPanel, {
      progress: { phase: 'download', file: 'model.onnx.part0', loaded: 1048576, total: 2097152, overallLoaded: 1048576, overallTotal: 4194304, cached: false },
    });
    expect(el.textContent).toContain('Downloading model.onnx.part0: 1.00 MiB of 2.00 MiB');
    expect(el.querySelector('[role="progressbar"]')!.getAttribute('aria-valuenow')).toBe('25');
  });
});
