/**
 * The speculative-decoding view (SpecView.svelte, SpecRounds, SpecCharts, SpecSpeed) and the
 * drafter picker rendered in happy-dom from a packed fixture (pack-spec.ts over a hand-made trace):
 * colours and marks per origin, q and p in every drafted token's hover text, the histogram, calls
 * per token, the speed-up and the empty states; the picker's spec, Apply and inline error.
 */
import { flushSync } from 'svelte';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { render, unmountAll } from './render.ts';
import SpecView from '../../src/lib/components/SpecView.svelte';
import DrafterPicker from '../../src/lib/components/DrafterPicker.svelte';
import { packSpecView } from '../../src/lib/worker/pack-spec.ts';
import { drafterInfo } from '../../src/lib/worker/spec-host.ts';
import type { DraftedToken, StepTrace, TraceEvent } from '../../engine/trace/schema.ts';
import { SPEC_COLORS } from '../../src/lib/charts/spec-colors.ts';

afterEach(unmountAll);

function step(n: number, token: number, speculative: StepTrace['speculative']): TraceEvent {
  return { kind: 'step', step: n, tokenIndex: 4 + n, position: 4 + n, token: { id: token, piece: ` w${token}`, prob: 0.5 }, speculative } as unknown as TraceEvent;
}
const d = (id: number, q: number, p: number | null, accepted: boolean): DraftedToken => ({ id, piece: ` w${id}`, q, p, accepted });
const events: TraceEvent[] = [
  step(0, 10, { round: 0, row: 0, origin: 'target' }),
  step(1, 11, {
    round: 0,
    row: 1,
    origin: 'draft',
    verify: { drafter: 'lookup:max_ngram=3,k=3', gamma: 3, drafted: [d(11, 0.9, 0.8, true), d(12, 0.7, 0.1, false), d(13, 1, null, false)], accepted: 1, next: { id: 20, piece: ' w20', origin: 'correction' }, end: 'rejected', draftMs: 1, verifyMs: 5 },
  }),
  step(2, 20, { round: 1, row: 0, origin: 'correction' }),
  step(3, 21, {
    round: 1,
    row: 1,
    origin: 'draft',
    verify: { drafter: 'lookup:max_ngram=3,k=3', gamma: 1, drafted: [d(21, 1, 0.95, true)], accepted: 1, next: { id: 30, piece: ' w30', origin: 'bonus' }, end: 'all-accepted', draftMs: 1, verifyMs: 5 },
  }),
  step(4, 30, { round: 2, row: 0, origin: 'bonus', verify: { drafter: 'lookup:max_ngram=3,k=3', gamma: 3, drafted: [], accepted: 0, next: { id: 40, piece: ' w40', origin: 'target' }, end: 'no-draft', draftMs: 0, verifyMs: 5 } }),
];
const speedup = { drafter: 'lookup:max_ngram=3,k=3', fromStep: 0, toStep: 5, tokens: 5, speculativeMs: 30, plainMs: 45, plainRunsMs: [45, 47], speculativeMsPerToken: 6, plainMsPerToken: 9, ratio: 1.5, sameTokens: true };

describe('SpecView', () => {
  it('colours tokens per origin, strikes rejected drafts and gives q and p on hover', () => {
    const view = packSpecView(events, { source: 'live', drafter: 'lookup:max_ngram=3,k=3', since: 0, speedup });
    const root = render(SpecView, { view, width: 900 });
    expect(root.querySelector('[data-testid="spec-view"]')).not.toBeNull();
    const tokens = [...root.querySelectorAll<HTMLElement>('[data-testid="spec-token"]')];
    expect(tokens.map((t) => t.dataset.origin)).toEqual(['target', 'draft', 'rejected', 'unverified', 'correction', 'draft', 'bonus']);
    expect(root.querySelectorAll('[data-testid="spec-round"]')).toHaveLength(3);
    expect(tokens[1].getAttribute('style')).toContain(SPEC_COLORS.draft);
    expect(tokens[2].getAttribute('style')).toContain(SPEC_COLORS.rejected);
    expect(tokens[4].getAttribute('style')).toContain(SPEC_COLORS.correction);
    expect(tokens[6].getAttribute('style')).toContain(SPEC_COLORS.bonus);
    expect(tokens[1].getAttribute('aria-label')).toMatch(/q 0\.90 · target p 0\.80/);
    expect(tokens[2].getAttribute('aria-label')).toMatch(/rejected draft token.*q 0\.70 · target p 0\.10/);
    expect(tokens[3].getAttribute('aria-label')).toMatch(/not verified/);
    expect(tokens[4].getAttribute('aria-label')).toMatch(/correction/);
    // hover and focus show the same text in the detail line
    tokens[2].dispatchEvent(new Event('mouseenter'));
    flushSync();
    expect(root.querySelector('[data-testid="spec-detail"]')!.textContent).toMatch(/q 0\.70 · target p 0\.10/);
    tokens[1].dispatchEvent(new FocusEvent('focus'));
    flushSync();
    expect(root.querySelector('[data-testid="spec-detail"]')!.textContent).toMatch(/q 0\.90/);

    expect(root.querySelector('[data-testid="spec-calls-value"]')!.textContent).toBe((3 / 5).toFixed(3));
    expect(root.querySelector('[data-testid="spec-speedup-value"]')!.textContent).toBe('1.5×');
    const bars = [...root.querySelectorAll<SVGElement>('[data-testid="spec-histogram-bar"]')].map((b) => [b.dataset.length, b.dataset.rounds]);
    expect(bars).toEqual([['0', '1'], ['1', '2']]);
    expect(root.querySelector('[data-testid="spec-positions"]')).not.toBeNull();
    expect(root.querySelector('[data-testid="spec-over-time"] [data-testid="spec-average"]')).not.toBeNull();
    expect(root.textContent).toMatch(/statistics count since the prompt/);
  });

  it('says how to set a drafter when none is, and since when statistics count', () => {
    const empty = packSpecView([], { source: 'live', drafter: null, since: 0 });
    const root = render(SpecView, { view: empty, width: 390 });
    expect(root.querySelector('[data-testid="spec-empty"]')!.textContent).toMatch(/No drafter is set.*Apply/s);
    unmountAll();
    const later = packSpecView(events, { source: 'live', drafter: 'lookup:max_ngram=3,k=3', since: 2 });
    const again = render(SpecView, { view: later, width: 390 });
    expect(again.textContent).toMatch(/since the drafter was set \(after step 1\)/);
    expect(again.querySelector('[data-testid="spec-speedup-value"]')!.textContent).toMatch(/measured after a Run/);
  });
});

describe('DrafterPicker', () => {
  it('builds a spec from the registry, applies it and keeps a refused input with its error', async () => {
    const onapply = vi.fn(async () => false);
    const root = render(DrafterPicker, { drafters: drafterInfo(), active: null, error: 'lookup: k must be at least 1', onapply });
    const select = root.querySelector<HTMLSelectElement>('[data-testid="drafter-picker"]')!;
    expect([...select.options].map((o) => o.value)).toEqual(['none', ...drafterInfo().map((x) => x.id)]);
    expect([...select.options].map((o) => o.value)).toContain('self');
    select.value = 'self';
    select.dispatchEvent(new Event('change', { bubbles: true }));
    flushSync();
    const spec = root.querySelector<HTMLInputElement>('[data-testid="drafter-spec"]')!;
    expect(spec.value).toBe('self:gamma=4,policy=streaming(sinks=4,recent=60)');
    const gamma = root.querySelector<HTMLInputElement>('[data-testid="drafter-param-gamma"]')!;
    gamma.value = '6';
    gamma.dispatchEvent(new Event('input', { bubbles: true }));
    flushSync();
    expect(spec.value).toBe('self:gamma=6,policy=streaming(sinks=4,recent=60)');
    spec.value = 'lookup:k=0';
    spec.dispatchEvent(new Event('input', { bubbles: true }));
    flushSync();
    // a hand-typed spec: the picker says so instead of naming a drafter it no longer describes
    expect(select.value).toBe('typed');
    expect(root.querySelector('[data-testid="drafter-param-gamma"]')).toBeNull();
    root.querySelector<HTMLButtonElement>('[data-testid="apply-drafter"]')!.click();
    await Promise.resolve();
    expect(onapply).toHaveBeenCalledWith('lookup:k=0');
    expect(spec.value).toBe('lookup:k=0');
    expect(root.querySelector('[data-testid="drafter-error"]')!.textContent).toMatch(/k must be/);
  });
});
