/**
 * The views of the eviction family (reference lane, heavy hitters, retrieval heads, budgets,
 * forgotten tokens, switch markers) rendered in happy-dom, and their bookkeeping helpers.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { render, unmountAll } from './render.ts';
import ReferenceMetrics from '../../src/lib/components/ReferenceMetrics.svelte';
import HeavyHitters from '../../src/lib/components/HeavyHitters.svelte';
import RetrievalHeads from '../../src/lib/components/RetrievalHeads.svelte';
import BudgetBars from '../../src/lib/components/BudgetBars.svelte';
import TokenStream from '../../src/lib/components/TokenStream.svelte';
import CacheMap from '../../src/lib/components/CacheMap.svelte';
import MemoryGauge from '../../src/lib/components/MemoryGauge.svelte';
import {
  buildEvictionLog,
  describeMoment,
  forgottenMarks,
  headScores,
  NEVER,
  prefillMoment,
  ranksOf,
  stepMoment,
  switchMoment,
  topTokens,
} from '../../src/lib/explorer/forgotten.ts';
import type { StepRecord } from '../../src/lib/explorer/state.svelte.ts';
import { CELL, type CacheMapView, type CalibrationView, type ReferenceView, type ScoreGrid } from '../../src/lib/worker/protocol.ts';
import type { MemoryReport } from '../../engine/cache/store.ts';

afterEach(unmountAll);

/** 2 layers × 2 KV heads × `tokens` grid from per-head arrays (NaN = unscored). */
function grid(tokens: number, heads: number[][]): ScoreGrid {
  const values = new Float32Array(2 * 2 * tokens).fill(Number.NaN);
  heads.forEach((row, i) => row.forEach((v, t) => (values[i * tokens + t] = v)));
  return { layers: 2, kvHeads: 2, tokens, values };
}
function cacheMap(tokens: number, codes: number[][]): CacheMapView {
  const out = new Uint8Array(2 * 2 * tokens);
  codes.forEach((row, i) => row.forEach((c, t) => (out[i * tokens + t] = c)));
  return { layers: 2, kvHeads: 2, tokens, codes: out };
}
const H = CELL.HELD;
const E = CELL.EVICTED;
const O = CELL.EMPTY;

describe('eviction log and forgotten tokens', () => {
  it('orders prefill, step decisions and switches; keeps the first loss per head', () => {
    expect([prefillMoment(), stepMoment(0), switchMoment(1), stepMoment(1)]).toEqual([0, 2, 3, 4]);
    expect(describeMoment(0)).toBe('by the prefill decision');
    expect(describeMoment(stepMoment(4))).toBe('at step 4');
    expect(describeMoment(switchMoment(3), () => 'window')).toBe('by the switch to window after step 2');
    expect(describeMoment(switchMoment(0))).toBe('by the switch after the prompt');

    const log = buildEvictionLog(2, 2, 6, [
      { moment: stepMoment(1), evictions: Int32Array.of(0, 0, 2, 1, 1, 2) },
      { moment: prefillMoment(), evictions: Int32Array.of(0, 0, 1) },
      { moment: switchMoment(2), evictions: Int32Array.of(0, 1, 2, 0, 0, 2, 9, 9, 9) },
    ]);
    expect(log.at[0 * 6 + 1]).toBe(0);
    expect(log.at[0 * 6 + 2]).toBe(stepMoment(1)); // first loss wins over the later switch
    expect(log.at[1 * 6 + 2]).toBe(switchMoment(2));
    expect(log.at[3 * 6 + 2]).toBe(stepMoment(1));
    expect(log.at[2 * 6 + 2]).toBe(NEVER);
    // up to the decision of step 1: the switch after step 1 is not in yet
    expect(buildEvictionLog(2, 2, 6, [{ moment: switchMoment(2), evictions: Int32Array.of(0, 1, 2) }], stepMoment(1)).at[1 * 6 + 2]).toBe(NEVER);

    const all = forgottenMarks(log, null, 6, () => 'window');
    expect(all.heads).toBe(4);
    expect(Array.from(all.share)).toEqual([0, 0.25, 0.75, 0, 0, 0]);
    expect(all.titles[2]).toBe('forgotten by 3 of 4 KV heads (75%): evicted first at step 1 (L0 kv0), last by the switch to window after step 1');
    expect(all.titles[0]).toBe('');
    const one = forgottenMarks(log, [0, 1], 6, () => 'window');
    expect(Array.from(one.share)).toEqual([0, 0, 1, 0, 0, 0]);
    expect(one.titles[2]).toBe('forgotten by L0 kv1: evicted by the switch to window after step 1');
  });

  it('finds the keep threshold (the budget cut) and ranks tokens', () => {
    // L0 kv0: token 0 is a sink kept by score; 3 was evicted; 4 (recent) is kept below the cut
    const g = grid(6, [[9, 2, 5, 1, 0.5, Number.NaN]]);
    const map = cacheMap(6, [[H, H, H, E, H, O]]);
    const head = headScores(g, map, 0, 0);
    expect(head.tokens).toEqual([0, 1, 2, 3, 4]);
    expect(head.kept).toEqual([true, true, true, false, true]);
    expect(head.threshold).toBe(2);
    expect(head.aboveCut).toBe(3);
    expect(topTokens(head, 2)).toEqual([0, 2]);
    expect(ranksOf(g, 0, 0, [0, 3, 5])).toEqual([1, 4, null]);
    // nothing evicted: no threshold
    expect(headScores(g, cacheMap(6, [[H, H, H, H, H, O]]), 0, 0).threshold).toBeNull();
  });
});

function ref(kl: number, agree: boolean, mass: number, memoryRatio: number): ReferenceView {
  return { kl, agree, mass, massByLayer: [mass, mass], memoryRatio, policyBytes: memoryRatio * 1000, fullBytes: 1000 };
}

describe('ReferenceMetrics', () => {
  it('draws four panels with axes, a gap where the lane was off, switch markers and the shown values', () => {
    const history = [
      { step: 0, reference: null },
      { step: 1, reference: ref(0, true, 1, 1) },
      { step: 2, reference: ref(0.2, false, 0.8, 0.5) },
      { step: 3, reference: ref(0.1, true, 0.7, 0.4) },
    ];
    const el = render(ReferenceMetrics, { history, current: 2, switches: [2], width: 800 });
    const text = el.querySelector('[data-testid="reference-values"]')!.textContent!;
    expect(text).toMatch(/KL 0\.200 nats/);
    expect(text).toMatch(/top-1 differs/);
    expect(text).toMatch(/80\.0%/);
    expect(text).toMatch(/50\.0%/);
    const svg = el.querySelector('svg')!;
    const paths = [...svg.querySelectorAll('path')].map((p) => p.getAttribute('d') ?? '');
    expect(paths).toHaveLength(4);
    // three points with data → "M…L…L…" (the step without data is left out)
    for (const d of paths) expect((d.match(/[ML]/g) ?? []).length).toBe(3);
    expect(svg.textContent).toContain('KL(full ‖ policy)');
    expect(svg.textContent).toContain('attention mass held');
    expect(svg.textContent).toContain('memory ratio');
    expect(svg.querySelectorAll('line[stroke-dasharray="3 3"]')).toHaveLength(4); // one switch marker per panel
    expect(el.textContent).toContain('mass held per layer');
  });

  it('says when there is no data for the shown step', () => {
    const el = render(ReferenceMetrics, { history: [{ step: 0, reference: null }], current: 0, switches: [], width: 500 });
    expect(el.querySelector('[data-testid="reference-values"]')!.textContent).toMatch(/No reference data yet/);
  });
});

describe('HeavyHitters', () => {
  const g = grid(6, [[9, 2, 5, 1, 0.5, Number.NaN]]);
  const map = cacheMap(6, [[H, H, H, E, H, O]]);
  const pieces = ['<s>', 'a', 'b', 'c', 'd', 'e'];

  it('shows the scored entries, the keep threshold and the rank history', () => {
    const history = [
      { step: 4, grid: grid(6, [[5, 3, 1, 2, Number.NaN, Number.NaN]]) },
      { step: 5, grid: g },
    ];
    const el = render(HeavyHitters, { grid: g, map, source: 'step', history, layer: 0, kvHead: 0, pieces, log: false, width: 700 });
    const summary = el.querySelector('[data-testid="heavy-hitters-summary"]')!.textContent!;
    expect(summary).toMatch(/5 scored entries/);
    expect(summary).toMatch(/keep threshold 2\.00 \(3 entries at or above it, 1 evicted/);
    expect(el.querySelector('[data-testid="keep-threshold"]')).not.toBeNull();
    expect(el.querySelector('[data-testid="heavy-hitters-bars"]')).not.toBeNull();
    expect(el.textContent).toContain('budget cut');
    expect(el.textContent).toContain('#0 “<s>”');
    // one rank line per top token
    expect(el.querySelectorAll('path')).toHaveLength(Math.min(6, 5));
  });

  it('labels prefill scores and shows no rank history for them', () => {
    const el = render(HeavyHitters, { grid: g, map, source: 'prefill', history: [], layer: 0, kvHead: 0, pieces, log: true, width: 500 });
    expect(el.textContent).toMatch(/the prefill decision/);
    expect(el.textContent).not.toContain('budget cut');
  });
});

describe('RetrievalHeads', () => {
  const calibration: CalibrationView = {
    echo: [
      [0.1, 0.2, 0.3, 0.4],
      [0.5, 0.6, 0.7, 0.8],
    ],
    induction: [
      [0, 0, 0, 0],
      [0.9, 0, 0, 0],
    ],
    wu: [
      [0, 0.3, 0, 0],
      [0, 0, 0, 0.05],
    ],
    semantic: null,
    threshold: 0.1,
    notes: ['probe notes'],
  };

  it('draws one map per score, outlines protected heads, marks Wu heads and selects on click', () => {
    const picked: [number, number][] = [];
    const protects = { description: 'retrieval heads keep the full cache', kvHeads: [[false, false], [true, false]], queryHeads: null };
    const el = render(RetrievalHeads, {
      calibration,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      protects,
      policy: 'razor:echo_pct=0.01',
      layer: 0,
      head: 0,
      width: 900,
      onselect: (l: number, h: number) => picked.push([l, h]),
    });
    const svg = el.querySelector('svg')!;
    expect(svg.textContent).toContain('echo (Razor)');
    expect(svg.textContent).toContain('retrieval (Wu et al.)');
    expect(svg.textContent).not.toContain('semantic');
    // KV head 0 of layer 1 = query heads 0 and 1, outlined in each of the 3 maps
    expect(el.querySelectorAll('[data-protected="true"]')).toHaveLength(2 * 3);
    expect(el.textContent).toMatch(/razor.*protects 2 of 8 query heads/);
    expect(svg.querySelectorAll('circle')).toHaveLength(1); // Wu 0.3 > 0.1
    const cell = svg.querySelector<SVGRectElement>('rect[aria-label="layer 1 head 2: 0.70"]')!;
    cell.dispatchEvent(new MouseEvent('click', { bubbles: true }));
    expect(picked).toEqual([[1, 2]]);
  });

  it('says when the policy protects nothing', () => {
    const el = render(RetrievalHeads, { calibration, layers: 2, heads: 4, kvHeads: 2, protects: null, policy: 'h2o:heavy=4', layer: 0, head: 0, width: 600 });
    expect(el.textContent).toMatch(/The current policy \(h2o\) protects no heads/);
    expect(el.querySelectorAll('[data-protected="true"]')).toHaveLength(0);
  });
});

const memory: MemoryReport = {
  tokens: 40,
  entries: [
    [40, 12],
    [20, 12],
  ],
  heldEntries: 84,
  kBytes: 84 * 32 * 4,
  vBytes: 84 * 32 * 4,
  bytes: 2 * 84 * 32 * 4,
  fullKBytes: 160 * 32 * 4,
  fullVBytes: 160 * 32 * 4,
  fullBytes: 2 * 160 * 32 * 4,
  ratio: 84 / 160,
  bitsPerElement: 32,
};

describe('BudgetBars', () => {
  it('draws one bar per layer × KV head against the full count, starring whole heads', () => {
    const protects = { description: 'x', kvHeads: [[true, false], [false, false]], queryHeads: null };
    const el = render(BudgetBars, { memory, protects, layer: 1, kvHead: 0, width: 500 });
    const bars = [...el.querySelectorAll('rect')].filter((r) => r.querySelector('title'));
    expect(bars.map((r) => r.querySelector('title')!.textContent)).toEqual([
      'layer 0, KV head 0: 40 of 40 entries',
      'layer 0, KV head 1: 12 of 40 entries',
      'layer 1, KV head 0: 20 of 40 entries',
      'layer 1, KV head 1: 12 of 40 entries',
    ]);
    expect(bars[2].getAttribute('stroke')).toBe('#000'); // the selected head
    expect(el.textContent).toContain('★');
    expect(el.textContent).toMatch(/84 of 160 entries held/);
    expect(el.textContent).toMatch(/budgets differ/);
  });
});

function step(i: number, piece: string): StepRecord {
  return {
    step: i,
    tokenIndex: 3 + i,
    position: 3 + i,
    token: { id: 100 + i, piece, prob: 0.5 },
    sampleProb: 0.5,
    next: [],
    policy: 'full',
    evicted: 0,
    merged: 0,
    reencoded: 0,
    memory,
    timings: { forwardMs: 1, policyMs: 0, totalMs: 1 },
  };
}

describe('TokenStream overlays', () => {
  it('dims and strikes forgotten tokens with a tooltip, and marks policy switches', () => {
    const share = Float32Array.of(0, 1, 0.25, 0, 0.75, 0);
    const titles = ['', 'gone from every head', 'a quarter', '', 'most heads', ''];
    const el = render(TokenStream, {
      prompt: { ids: [1, 50, 51], pieces: ['<s>', 'A', 'B'] },
      steps: [step(0, 'x'), step(1, 'y'), step(2, 'z')],
      current: 2,
      following: true,
      onselect: () => undefined,
      forgotten: { share, titles, heads: 4 },
      switches: [{ atStep: 1, from: 'h2o:heavy=4', to: 'streaming:sinks=4', evicted: 12 }],
    });
    const prompt = el.querySelectorAll('.prompt');
    expect(prompt[1].classList.contains('gone')).toBe(true);
    expect(prompt[1].getAttribute('title')).toContain('gone from every head');
    expect(prompt[2].classList.contains('forgot')).toBe(true);
    expect(prompt[2].classList.contains('gone')).toBe(false);
    expect(prompt[0].classList.contains('forgot')).toBe(false);
    const tokens = el.querySelectorAll('[data-testid="token"]');
    expect(tokens[1].classList.contains('gone')).toBe(true);
    expect(tokens[1].getAttribute('title')).toContain('most heads');
    const markers = el.querySelectorAll('[data-testid="switch-marker"]');
    expect(markers).toHaveLength(1);
    expect(markers[0].textContent).toContain('streaming');
    expect(markers[0].getAttribute('title')).toBe('policy switched from h2o:heavy=4 to streaming:sinks=4 after step 0; the switch evicted 12 entries');
    // the marker sits right before step 1's token
    expect(markers[0].nextElementSibling?.getAttribute('data-step')).toBe('1');
  });
});

describe('CacheMap / MemoryGauge additions', () => {
  it('names evictions by a switch and marks switches over steps', () => {
    const map = cacheMap(4, [
      [H, E, H, H],
      [H, H, H, H],
      [H, H, H, H],
      [H, H, H, H],
    ]);
    const el = render(CacheMap, { map, pieces: ['a', 'b', 'c', 'd'], group: 2, layer: 0, head: 0, width: 500, evictedLabel: 'evicted by the switch', testid: 'cache-map-after' });
    expect(el.textContent).toContain('evicted by the switch');
    expect(el.querySelector('[data-testid="cache-map-after"]')).not.toBeNull();

    const history = [0, 1, 2, 3].map((s) => ({ step: s, bytes: 100 + s, fullBytes: 200 + s }));
    const gauge = render(MemoryGauge, { memory, history, step: 3, width: 500, switches: [2] });
    expect(gauge.querySelectorAll('line[stroke-dasharray="3 3"]').length).toBe(2); // marker + legend
    expect(gauge.textContent).toContain('policy switch');
  });
});
