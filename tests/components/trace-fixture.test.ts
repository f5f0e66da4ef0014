/**
 * Every explorer view rendered from a stored trace alone (CircuitsVis: component + fixture + test):
 * tests/fixtures/traces/tiny-h2o-switch.json (a real run of the tiny fixture model, recorded by
 * tests/fixtures/traces/record.ts) is read and packed exactly as an imported trace is, with no model
 * and no worker, and the views must show what the trace says.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { render, unmountAll } from './render.ts';
import AttentionHeatmap from '../../src/lib/components/AttentionHeatmap.svelte';
import BudgetBars from '../../src/lib/components/BudgetBars.svelte';
import CacheMap from '../../src/lib/components/CacheMap.svelte';
import HeadGrid from '../../src/lib/components/HeadGrid.svelte';
import HeavyHitters from '../../src/lib/components/HeavyHitters.svelte';
import MemoryGauge from '../../src/lib/components/MemoryGauge.svelte';
import ReferenceMetrics from '../../src/lib/components/ReferenceMetrics.svelte';
import TokenStream from '../../src/lib/components/TokenStream.svelte';
import TopK from '../../src/lib/components/TopK.svelte';
import { readTrace } from '../../engine/trace/read.ts';
import { buildEvictionLog, forgottenMarks, headScores, prefillMoment, stepMoment, switchMoment } from '../../src/lib/explorer/forgotten.ts';
import type { HistoryRow } from '../../src/lib/charts/raster.ts';
import { TraceViews } from '../../src/lib/worker/pack.ts';
import { CELL } from '../../src/lib/worker/protocol.ts';

const FILE = 'tests/fixtures/traces/tiny-h2o-switch.json';
const trace = readTrace(readFileSync(FILE, 'utf8'));
const views = new TraceViews(trace);
const shown = views.imported('tiny-h2o-switch.json');
const { model } = shown;
const pieces = [...shown.prompt.pieces, ...shown.steps.map((s) => s.token.piece)];
const last = shown.steps.at(-1)!;

afterEach(unmountAll);

describe('the fixture trace', () => {
  it('is what the tests below assume: H2O, a switch to D2O after 6 steps, merges, reference metrics, compacted steps', () => {
    expect(trace.header.policy).toMatch(/^h2o:/);
    expect(shown.switches.map((s) => [s.atStep, s.to.split(':')[0]])).toEqual([[6, 'd2o']]);
    expect(shown.steps).toHaveLength(10);
    expect(trace.events.some((e) => e.decision.merged > 0)).toBe(true);
    expect(shown.reference).toBe(true);
    expect(shown.steps.filter((s) => s.attention && !s.attentionTopOnly)).toHaveLength(4);
    expect(shown.promptText).toMatch(/^The cat sat/);
  });
});

describe('views from the fixture trace', () => {
  it('CacheMap: one row per layer × KV head, held counts as the memory report says, merged cells from D2O', () => {
    const map = shown.state.cacheMap;
    expect(map.tokens).toBe(pieces.length);
    const el = render(CacheMap, { map, pieces, group: model.heads / model.kvHeads, layer: 0, head: 0, width: 700 });
    const texts = [...el.querySelectorAll('svg text')].map((t) => t.textContent ?? '');
    const counts = shown.state.memory.entries.flat().map(String);
    // the numbers right of the rows: entries held per head (a merged entry counts its tokens)
    const held = (r: number) => [...map.codes.subarray(r * map.tokens, (r + 1) * map.tokens)].filter((c) => c === CELL.HELD || c === CELL.ENCODED || c === CELL.MERGED).length;
    for (let r = 0; r < model.layers * model.kvHeads; r++) expect(texts).toContain(String(held(r)));
    expect(counts.length).toBe(model.layers * model.kvHeads);
    expect([...map.codes].some((c) => c === CELL.MERGED)).toBe(true);
    expect(el.textContent).toContain(`token index (${pieces.length} tokens fed)`);
    expect(el.textContent).toContain('L1 kv1');
  });

  it('CacheMap before the switch: the cache as H2O left it', () => {
    const before = shown.switches[0].before;
    const held = [...before.codes].filter((c) => c === CELL.HELD).length;
    const entries = trace.events.filter((e) => e.kind === 'step')[5].memory.heldEntries;
    expect(held).toBe(entries); // H2O merges nothing: one held cell per entry
    const el = render(CacheMap, { map: before, pieces, group: 2, layer: 0, head: 0, width: 600, testid: 'cache-map-before' });
    expect(el.querySelector('[data-testid="cache-map-before"]')).not.toBeNull();
  });

  it('TokenStream: the prompt and the recorded tokens, the forgotten overlay and the switch marker', () => {
    const sources = [
      { moment: prefillMoment(), evictions: shown.prefill.evictions },
      ...shown.steps.map((s) => ({ moment: stepMoment(s.step), evictions: s.evictions! })),
      ...shown.switches.map((s) => ({ moment: switchMoment(s.atStep), evictions: s.evictions })),
    ];
    const log = buildEvictionLog(model.layers, model.kvHeads, pieces.length, sources);
    const forgotten = forgottenMarks(log, null, pieces.length, () => 'd2o');
    const el = render(TokenStream, { prompt: shown.prompt, steps: shown.steps, current: 9, following: true, onselect: () => undefined, forgotten, switches: shown.switches });
    const tokens = [...el.querySelectorAll('[data-testid="token"] .piece')].map((t) => t.textContent);
    expect(tokens).toEqual(shown.steps.map((s) => s.token.piece));
    expect(el.querySelectorAll('.prompt')).toHaveLength(shown.prompt.ids.length);
    expect(el.querySelectorAll('.forgot').length).toBeGreaterThan(0);
    const marker = el.querySelector('[data-testid="switch-marker"]')!;
    expect(marker.getAttribute('title')).toMatch(/policy switched from h2o:.* to d2o:.* after step 5/);
  });

  it('TopK: the distribution after the last step, as exported', () => {
    expect(shown.state.next).toHaveLength(10);
    const el = render(TopK, { tokens: shown.state.next, chosen: null, width: 400 });
    expect(el.querySelector('svg')!.getAttribute('aria-label')).toBe('Top 10 next-token probabilities');
    expect(el.querySelectorAll('rect').length).toBeGreaterThanOrEqual(10);
  });

  it('MemoryGauge: bytes held after the last step against the full cache, with the switch marked', () => {
    const history = shown.steps.map((s) => ({ step: s.step, bytes: s.memory.bytes, fullBytes: s.memory.fullBytes }));
    const el = render(MemoryGauge, { memory: last.memory, history, step: 9, width: 520, switches: [6] });
    expect(el.querySelector('svg')!.getAttribute('aria-label')).toMatch(/^Memory: held /);
    expect(el.textContent).toContain('policy switch');
  });

  it('HeadGrid and AttentionHeatmap: the recent queries with full rows', () => {
    const rows: HistoryRow[] = shown.steps
      .filter((s) => s.attention && !s.attentionTopOnly)
      .map((s) => ({ step: s.step, tokens: s.attention!.tokens, heads: s.attention!.heads, weights: s.attention!.weights }));
    expect(rows.map((r) => r.step)).toEqual([6, 7, 8, 9]);
    // each query head's row is a distribution over what its KV head held
    for (const r of rows) {
      let sum = 0;
      for (let t = 0; t < r.tokens; t++) if (!Number.isNaN(r.weights[t])) sum += r.weights[t];
      expect(sum).toBeCloseTo(1, 4);
    }
    const grid = render(HeadGrid, { rows, layers: model.layers, heads: model.heads, kvHeads: model.kvHeads, layer: 0, head: 0, mode: 'linear', excludeSink: false, pieces, width: 400, onselect: () => undefined });
    expect(grid.querySelector('[data-testid="head-grid"]')).not.toBeNull();
    const heat = render(AttentionHeatmap, { rows, layer: 1, head: 3, pieces, promptLength: shown.prompt.ids.length, mode: 'log', excludeSink: true, width: 600 });
    expect(heat.querySelector('[data-testid="attention-heatmap"]')).not.toBeNull();
  });

  it('an older, compacted step: its top-k summary, zero for the other held tokens', () => {
    const old = views.step(1);
    expect(old.attentionTopOnly).toBe(trace.header.options.attentionTop);
    const a = old.attention!;
    const base = 0; // layer 0, query head 0
    const known = [...a.weights.subarray(base, base + a.tokens)];
    expect(known.filter((w) => w > 0).length).toBeLessThanOrEqual(trace.header.options.attentionTop);
    expect(known.filter((w) => w === 0).length).toBeGreaterThan(0);
    const heat = render(AttentionHeatmap, { rows: [{ step: 1, tokens: a.tokens, heads: a.heads, weights: a.weights }], layer: 0, head: 0, pieces, promptLength: shown.prompt.ids.length, mode: 'linear', excludeSink: false, width: 500 });
    expect(heat.querySelector('[data-testid="attention-heatmap"]')).not.toBeNull();
  });

  it('HeavyHitters: the last decision’s scores and the keep threshold', () => {
    const grid = last.scores!;
    expect(grid).toBeTruthy();
    const scored = headScores(grid, last.cacheMap, 0, 0);
    const history = shown.steps.filter((s) => s.scores).map((s) => ({ step: s.step, grid: s.scores! }));
    const el = render(HeavyHitters, { grid, map: last.cacheMap, source: 'step', history, layer: 0, kvHead: 0, pieces, log: true, width: 640 });
    expect(el.querySelector('[data-testid="heavy-hitters-summary"]')!.textContent).toContain(`L0 kv0: ${scored.tokens.length} scored entries`);
  });

  it('ReferenceMetrics: the metrics the header carries, per step', () => {
    const history = shown.steps.map((s) => ({ step: s.step, reference: s.reference ?? null }));
    const metrics = trace.header.reference!.steps.find((r) => r.step === 9)!;
    const el = render(ReferenceMetrics, { history, current: 9, switches: [6], width: 800 });
    const text = el.querySelector('[data-testid="reference-values"]')!.textContent!;
    expect(text).toContain(`At step 9:`);
    expect(text).toContain(`top-1 ${metrics.agree ? 'agrees' : 'differs'}`);
    expect(text).toContain(`${(metrics.mass * 100).toFixed(1)}%`);
  });

  it('BudgetBars: entries per layer × KV head from the memory report', () => {
    const memory = shown.state.memory;
    const el = render(BudgetBars, { memory, protects: shown.state.protects ?? null, layer: 0, kvHead: 0, width: 420 });
    const titles = [...el.querySelectorAll('rect title')].map((t) => t.textContent);
    expect(titles).toContain(`layer 1, KV head 1: ${memory.entries[1][1]} of ${memory.tokens} entries`);
  });
});
