/** Svelte components rendered in happy-dom: what they show and what they report back. */
import { flushSync, mount, unmount, type Component } from 'svelte';
import { afterEach, describe, expect, it } from 'vitest';
import TokenStream from '../../src/lib/components/TokenStream.svelte';
import PolicyPicker from '../../src/lib/components/PolicyPicker.svelte';
import MemoryGauge from '../../src/lib/components/MemoryGauge.svelte';
import TopK from '../../src/lib/components/TopK.svelte';
import ErrorBanner from '../../src/lib/components/ErrorBanner.svelte';
import LoadingPanel from '../../src/lib/components/LoadingPanel.svelte';
import type { StepRecord } from '../../src/lib/explorer/state.svelte.ts';
import type { PolicyInfo } from '../../src/lib/worker/protocol.ts';
import type { MemoryReport } from '../../engine/cache/store.ts';

const mounted: ReturnType<typeof mount>[] = [];
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function render(component: Component<any>, props: Record<string, unknown>): HTMLElement {
  const target = document.createElement('div');
  document.body.appendChild(target);
  mounted.push(mount(component, { target, props }));
  flushSync();
  return target;
}
afterEach(() => {
  for (const c of mounted.splice(0)) unmount(c);
  document.body.innerHTML = '';
});

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
      value: { id: 'demo', params: { size: 128, ratio: 0.5, mode: 'a', flag: true } },
      active: 'full',
      changed: true,
      disabled: false,
      onpick: (id: string) => events.push(['pick', id]),
      onparam: (name: string, v: unknown) => events.push([name, v]),
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
    expect(events).toEqual([['size', 64], ['pick', 'full'], 'apply']);
  });

  it('explains an out-of-range value and blocks applying it', () => {
    const el = render(PolicyPicker, {
      policies,
      value: { id: 'demo', params: { size: 0, ratio: 0.5, mode: 'a', flag: true } },
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
