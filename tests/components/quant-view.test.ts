/**
 * The quantization error view (QuantView.svelte and its charts) rendered in happy-dom from packed
 * views: a live view (gauge, bars, entries, error maps with the absolute / relative toggle, the
 * query's attention), a trace view (what it says it lacks), ThinK's saliency and a spectrum, the
 * empty states; then the explorer state asking the in-process worker for it while KIVI quantizes.
 */
import { flushSync } from 'svelte';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { render, unmountAll } from './render.ts';
import QuantView from '../../src/lib/components/QuantView.svelte';
import { QUANT_LIMITS } from '../../src/lib/worker/pack-quant.ts';
import type { QuantView as QuantViewData } from '../../src/lib/worker/protocol.ts';
import { explorer, until } from './in-process.ts';

afterEach(unmountAll);

const pieces = ['<s>', ' The', ' cat', ' sat', ' on', ' the'];
const D = 4;
const N = 4;

/** 4 entries (tokens 0, 1, 2, 4) of headDim 4: entries 0 and 1 quantized at 2 bits, 2 and 3 fp32 (the residual window). */
function liveView(overrides: Partial<QuantViewData> = {}): QuantViewData {
  const abs = Float32Array.from({ length: N * D }, (_, k) => (k < 2 * D ? ((k % 3) - 1) * 0.05 : 0));
  return {
    step: 2,
    layer: 0,
    kvHead: 0,
    tokens: 6,
    held: N,
    policy: 'kivi:bits=2,group=2,residual=2',
    source: 'live',
    limits: null,
    codecs: [{ name: 'kivi-k2v2', entries: 2, kBits: 2, vBits: 2, kElements: D, vElements: D, groupSize: 2, rank: null }],
    entries: {
      tokens: Int32Array.from([0, 1, 2, 4]),
      counts: Int32Array.from([1, 1, 1, 1]),
      codec: Int16Array.from([0, 0, -1, -1]),
      kBits: Float32Array.from([2, 2, 32, 32]),
      vBits: Float32Array.from([2, 2, 32, 32]),
      kError: Float32Array.from([0.12, 0.2, 0, 0]),
      vError: Float32Array.from([0.3, 0.1, 0, 0]),
    },
    elements: { headDim: D, kAbsolute: abs, vAbsolute: abs.map((x) => -x), kRelative: abs.map((x) => x * 10), vRelative: abs.map((x) => -x * 10), flags: Uint8Array.from({ length: N * D }, (_, k) => (k === 2 ? 1 : 0)) },
    layers: { k: Float32Array.from([0.08, 0.02]), v: Float32Array.from([0.1, 0.03]), held: Int32Array.from([8, 8]), encoded: Int32Array.from([4, 4]), unknown: Int32Array.from([0, 0]) },
    attention: {
      queryHeads: [0, 1],
      scale: 0.5,
      scoreError: Float32Array.from([0.02, -0.01, 0, 0, 0.03, 0.01, 0, 0]),
      exact: Float32Array.from([0.4, 0.3, 0.2, 0.1, 0.25, 0.25, 0.25, 0.25]),
      stored: Float32Array.from([0.41, 0.29, 0.2, 0.1, 0.24, 0.26, 0.25, 0.25]),
      outputError: [0.013, 0.004],
    },
    bits: { whole: 9.5, k: 10, v: 9, kBytes: 100, vBytes: 90, groupBytes: 8, fullBytes: 640, heldEntries: 16 },
    saliency: null,
    spectrum: null,
    madeInAllHeads: 6,
    ...overrides,
  };
}

const base = { pieces, head: 1, width: 700, onlayer: () => {}, quantizing: ['kivi', 'think', 'pca'] };

describe('QuantView', () => {
  it('a live view: gauge, per-layer bars, entries, K and V error maps and the query’s attention', () => {
    const el = render(QuantView, { ...base, view: liveView() });
    const summary = el.querySelector('[data-testid="quant-summary"]')!.textContent!.replace(/\s+/g, ' ');
    expect(summary).toMatch(/layer 0, KV head 0 · step 2 · 4 entries held of 6 tokens · 2 re-encoded \(kivi-k2v2 × 2 2-bit \(group 2\)\), 2 full precision · 6 re-encoded by the shown decision/);
    expect(el.querySelector('[data-testid="quant-limits"]')).toBeNull();
    const gauge = el.querySelector('[data-testid="quant-gauge"]')!;
    expect(gauge.getAttribute('data-bits')).toBe('9.5');
    expect(gauge.textContent).toMatch(/9\.50 bits per stored element \(fp32 = 32, fp16 = 16\) · K 10\.0 · V 9\.00/);
    expect(gauge.textContent).toMatch(/fp16 = 16.*fp32 = 32/s);
    expect(el.querySelectorAll('[data-testid="quant-layer"]')).toHaveLength(2);
    expect(el.querySelector('[data-testid="quant-layer"][data-layer="0"]')!.getAttribute('aria-pressed')).toBe('true');
    expect(el.querySelector('[data-testid="quant-entries"]')!.textContent).toMatch(/2-bit.*full precision \(fp32\)/s);
    expect(el.querySelector('[data-testid="quant-heatmap-k"]')).not.toBeNull();
    expect(el.querySelector('[data-testid="quant-heatmap-v"]')).not.toBeNull();
    expect(el.querySelector('[data-testid="quant-map-k"]')!.textContent).toMatch(/keys: x − x̂ \(exact − stored, K\/V units\)/);
    // the attention starts at the page's query head (1), which reads this KV head
    const att = el.querySelector('[data-testid="quant-attention"]')!;
    const heads = [...att.querySelectorAll<HTMLInputElement>('[data-testid="quant-query-head"]')];
    expect(heads.map((h) => [h.value, h.checked])).toEqual([
      ['0', false],
      ['1', true],
    ]);
    expect(el.querySelector('[data-testid="quant-output-error"]')!.textContent).toMatch(/‖o − ô‖ \/ ‖o‖ = 0\.004/);
    expect(att.querySelector('[data-testid="quant-attention-exact"]')!.getAttribute('d')).toMatch(/^M/);
    expect(att.querySelector('[data-testid="quant-attention-stored"]')!.getAttribute('d')).toMatch(/^M/);
    heads[0].click();
    flushSync();
    expect(el.querySelector('[data-testid="quant-output-error"]')!.textContent).toMatch(/= 0\.013/);
    expect(att.querySelector('[data-testid="quant-score-down"]')!.getAttribute('d')).not.toBe('');
  });

  it('the absolute / relative toggle is a radio group; the legend says the units', () => {
    const el = render(QuantView, { ...base, view: liveView() });
    const relative = el.querySelector<HTMLInputElement>('[data-testid="quant-mode-relative"]')!;
    expect(el.querySelector<HTMLInputElement>('[data-testid="quant-mode-absolute"]')!.checked).toBe(true);
    expect(el.querySelector('[data-testid="quant-heatmap-k"]')!.getAttribute('data-max')).toBe(String(Math.fround(0.05)));
    relative.click();
    flushSync();
    expect(el.querySelector('[data-testid="quant-map-v"]')!.textContent).toMatch(/values: \(x − x̂\) \/ RMS of the exact vector/);
    expect(Number(el.querySelector('[data-testid="quant-heatmap-k"]')!.getAttribute('data-max'))).toBeCloseTo(0.5, 6);
  });

  it('keyboard: arrow keys read a cell of the map (outliers named), ← / → an entry; none reaches the page', () => {
    const page = vi.fn();
    window.addEventListener('keydown', page);
    const el = render(QuantView, { ...base, view: liveView() });
    const map = el.querySelector<HTMLCanvasElement>('[data-testid="quant-heatmap-k"]')!;
    expect(map.getAttribute('tabindex')).toBe('0');
    map.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowDown', bubbles: true }));
    map.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowDown', bubbles: true }));
    flushSync();
    expect(el.querySelector('[data-testid="quant-readout-k"]')!.textContent).toMatch(/entry 0: token #0 “<s>” · kivi-k2v2, 2-bit · relative error ‖x − x̂‖\/‖x‖ K 0\.12, V 0\.3 · keys channel 2: x − x̂ 0\.05 \(stored exactly \(outlier\)\)/);
    const entries = el.querySelector<SVGElement>('[data-testid="quant-entries"]')!;
    entries.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowRight', bubbles: true }));
    entries.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowRight', bubbles: true }));
    flushSync();
    expect(entries.getAttribute('aria-valuenow')).toBe('2');
    expect(el.querySelector('[data-testid="quant-readout-k"]')!.textContent).toMatch(/entry 2: token #2 “␣cat” · fp32, full precision \(fp32\)/);
    expect(el.querySelectorAll('[data-testid="quant-cursor"]')).toHaveLength(1);
    expect(page).not.toHaveBeenCalled();
    window.removeEventListener('keydown', page);
  });

  it('keyboard: Home / End jump to the first / last entry in the attention chart and the map', () => {
    const el = render(QuantView, { ...base, view: liveView() });
    const att = el.querySelector<SVGElement>('[data-testid="quant-attention"] svg')!;
    att.dispatchEvent(new KeyboardEvent('keydown', { key: 'End', bubbles: true }));
    flushSync();
    expect(att.getAttribute('aria-valuenow')).toBe(String(N - 1));
    att.dispatchEvent(new KeyboardEvent('keydown', { key: 'Home', bubbles: true }));
    flushSync();
    expect(att.getAttribute('aria-valuenow')).toBe('0');
    const map = el.querySelector<HTMLCanvasElement>('[data-testid="quant-heatmap-k"]')!;
    map.dispatchEvent(new KeyboardEvent('keydown', { key: 'End', bubbles: true }));
    flushSync();
    expect(el.querySelector('[data-testid="quant-readout-k"]')!.textContent).toMatch(/^entry 3: /);
  });

  it('a NaN score error does not turn the scale into NaN', () => {
    const view = liveView();
    const attention = { ...view.attention!, scoreError: Float32Array.from([0.02, Number.NaN, 0, 0, 0.03, 0.01, 0, 0]) };
    const el = render(QuantView, { ...base, view: { ...view, attention } });
    const line = el.querySelector('[data-testid="quant-output-error"]')!.textContent!;
    expect(line).toMatch(/max \|score error\| 0\.0[23]/);
    expect(line).not.toMatch(/NaN/);
  });

  it('a per-layer bar selects its layer (click, Enter)', () => {
    const onlayer = vi.fn();
    const el = render(QuantView, { ...base, view: liveView(), onlayer });
    const bar = el.querySelector<SVGGElement>('[data-testid="quant-layer"][data-layer="1"]')!;
    expect(bar.getAttribute('aria-label')).toMatch(/layer 1: mean relative error K 0\.02, V 0\.03 · 4 of 8 entries re-encoded/);
    bar.dispatchEvent(new MouseEvent('click', { bubbles: true }));
    expect(onlayer).toHaveBeenLastCalledWith(1);
    onlayer.mockClear();
    bar.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
    expect(onlayer).toHaveBeenLastCalledWith(1);
  });

  it('from a trace: the entries and recorded errors, no per-channel map, and it says why', () => {
    const view = liveView({
      source: 'trace',
      limits: QUANT_LIMITS.trace,
      elements: null,
      attention: null,
      codecs: [{ name: 'kivi-k2v2', entries: 2, kBits: null, vBits: null, kElements: null, vElements: null, groupSize: null, rank: null }],
    });
    view.entries.kBits = Float32Array.from([Number.NaN, Number.NaN, 32, 32]);
    view.entries.kError = Float32Array.from([Number.NaN, 0.2, 0, 0]);
    const el = render(QuantView, { ...base, view });
    expect(el.querySelector('[data-testid="quant-limits"]')!.textContent).toMatch(/^From the trace: per-channel error.*newest step of a live session only/);
    expect(el.querySelector('[data-testid="quant-heatmap-k"]')).toBeNull();
    expect(el.querySelector('[data-testid="quant-attention"]')).toBeNull();
    expect(el.querySelector('[data-testid="quant-entries"]')!.textContent).toContain('re-encoded (bits not in the trace)');
    expect(el.textContent).toContain('grey ticks: re-encoded entries whose method recorded no error');
  });

  it("ThinK's saliency with its pruned channels, and a low-rank spectrum with the ranks kept", () => {
    const el = render(QuantView, {
      ...base,
      view: liveView({
        saliency: { from: { kind: 'prefill', step: -1 }, saliency: [0.5, 0.1, 0.9, 0.05], pruned: [1, 3] },
        spectrum: { from: { kind: 'step', step: 1 }, k: [4, 2, 1, 0.5], v: [3, 1, 0.2, 0.1], kRank: 2, vRank: 1 },
      }),
    });
    const saliency = el.querySelector('[data-testid="quant-saliency"]')!;
    expect(saliency.textContent).toMatch(/measured at the prefill · 2 of 4 key channels pruned \(the lowest-saliency ones\): 1, 3/);
    expect([...saliency.querySelectorAll('[data-testid="quant-channel"]')].map((c) => c.getAttribute('data-pruned'))).toEqual(['false', 'true', 'false', 'true']);
    const spectrum = el.querySelector('[data-testid="quant-spectrum"]')!;
    expect(spectrum.textContent).toMatch(/measured at step 1 · rank kept: K 2, V 1 of 4/);
    expect(spectrum.querySelector('[data-testid="quant-rank-k"]')).not.toBeNull();
    expect(spectrum.querySelector('[data-testid="quant-spectrum-v"]')!.getAttribute('d')).toMatch(/^M/);
  });

  it('pruned keys read as fewer channels, not as full precision; a part no codec touched is a line, not an empty map', () => {
    const view = liveView({ codecs: [{ name: 'think', entries: 2, kBits: 32, vBits: 32, kElements: 2, vElements: D, groupSize: null, rank: null }] });
    view.entries.kBits = Float32Array.from([32, 32, 32, 32]);
    view.entries.vBits = Float32Array.from([32, 32, 32, 32]);
    view.entries.vError = new Float32Array(N);
    view.elements = { ...view.elements!, vAbsolute: new Float32Array(N * D), vRelative: new Float32Array(N * D) };
    const el = render(QuantView, { ...base, view });
    const strip = el.querySelector('[data-testid="quant-entries"]')!.textContent!;
    expect(strip).toContain('fp32 × 2 of 4 channels');
    expect(strip).toContain('full precision (fp32)');
    expect(el.querySelector('[data-testid="quant-heatmap-k"]')).not.toBeNull();
    expect(el.querySelector('[data-testid="quant-heatmap-v"]')).toBeNull();
    expect(el.querySelector('[data-testid="quant-untouched-v"]')!.textContent).toMatch(/values: every entry of this head is stored in full precision, nothing lost/);
  });

  it('empty states: a policy without codecs names the quantizing ones; a quantizing one says to step on; before a prompt; errors', () => {
    const plain = liveView({ policy: 'h2o:heavy=8,recent=8', codecs: [], elements: null, attention: null });
    plain.entries.codec = Int16Array.from([-1, -1, -1, -1]);
    let el = render(QuantView, { ...base, view: plain });
    expect(el.querySelector('[data-testid="quant-empty"]')!.textContent).toMatch(/No quantized entries: the policy \(h2o:heavy=8,recent=8\) stores every entry in fp32\. Pick a quantization method such as kivi, think, pca and step/);
    // the gauge and the bars still show (32 bits for a plain cache)
    expect(el.querySelector('[data-testid="quant-gauge"]')).not.toBeNull();
    el = render(QuantView, { ...base, view: { ...plain, policy: 'window:size=8 + kivi:bits=2' } });
    expect(el.querySelector('[data-testid="quant-empty"]')!.textContent).toMatch(/has re-encoded nothing in layer 0, KV head 0 by step 2: .*KIVI's residual.*ThinK/);
    el = render(QuantView, { ...base, view: null, started: false });
    expect(el.querySelector('[data-testid="quant-not-started"]')!.textContent).toMatch(/Run or step a prompt with a quantization method/);
    el = render(QuantView, { ...base, view: null });
    expect(el.textContent).toMatch(/Packing the quantization view/);
    const error = '<b>no layer 9</b> / KV head 0';
    el = render(QuantView, { ...base, view: liveView(), error });
    expect(el.querySelector('[data-testid="quant-error"]')!.textContent).toContain(`showing the last one packed): ${error}`);
    expect(el.querySelector('[data-testid="quant-error"] b')).toBeNull();
  });

  it('stays within its width at 280 px (no chart wider than the view)', () => {
    const el = render(QuantView, { ...base, width: 280, view: liveView({ saliency: { from: { kind: 'prefill', step: -1 }, saliency: Array(32).fill(1), pruned: [] } }) });
    for (const svg of el.querySelectorAll('svg')) {
      const w = Number(svg.getAttribute('width'));
      if (Number.isFinite(w) && w > 0) expect(w, svg.getAttribute('aria-label') ?? svg.getAttribute('class') ?? 'svg').toBeLessThanOrEqual(280);
    }
  });
});

describe('ExplorerState and the quantization view', () => {
  it('asks the worker for the view of the shown step and head: live while KIVI quantizes, the trace at an older step', async () => {
    const app = explorer();
    void app.load();
    await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
    app.ensureQuant();
    await until(() => app.quant !== null, 'the first quant view');
    expect(app.quant!.codecs).toEqual([]);
    expect(app.quant!.bits.whole).toBe(32);
    expect(await app.applySpec('kivi:bits=2,group=2,residual=2')).toBe(true);
    for (let i = 0; i < 3; i++) {
      await app.step();
      await until(() => app.steps.length === i + 1, `step ${i}`);
    }
    app.ensureQuant();
    await until(() => app.quantCurrent && app.quant!.step === 2, 'the view of step 2');
    expect(app.quant!.source).toBe('live');
    expect(app.quant!.codecs.length).toBeGreaterThan(0);
    expect(app.quant!.bits.whole).toBeLessThan(32);
    app.select(0);
    app.ensureQuant();
    await until(() => app.quantCurrent && app.quant!.step === 0, 'the view of step 0');
    expect(app.quant!.source).toBe('trace');
    expect(app.quant!.elements).toBeNull();
    // a packing error (a KV head the model lacks) is named in the view; the last good view stays
    const good = app.quant;
    app.head = app.model!.heads * 4;
    app.ensureQuant();
    await until(() => app.quantError !== null, 'the packing error');
    expect(app.quantError).toMatch(/no layer \d+ \/ KV head \d+/);
    expect(app.quant).toBe(good);
    expect(app.error).toBeNull();
  });
});
