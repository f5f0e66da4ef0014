/**
 * The merge view (MergeView.svelte) rendered in happy-dom from packed views, the highlight it
 * drives in the token stream and the cache map, and the explorer state asking the in-process worker
 * for it while D2O merges.
 */
import { flushSync } from 'svelte';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { render, unmountAll } from './render.ts';
import MergeView from '../../src/lib/components/MergeView.svelte';
import TokenStream from '../../src/lib/components/TokenStream.svelte';
import CacheMap from '../../src/lib/components/CacheMap.svelte';
import { CELL, type MergeEntryView, type MergeView as MergeViewData } from '../../src/lib/worker/protocol.ts';
import { explorer, until } from './in-process.ts';

afterEach(unmountAll);

const pieces = ['<s>', ' The', ' cat', ' sat', ' on', ' the', ' mat', '.'];

const older: MergeEntryView = {
  index: 1,
  first: 1,
  origins: [1, 2],
  count: null,
  bias: null,
  members: [
    { token: null, size: null, weight: 0.5, similarity: null },
    { token: null, size: null, weight: 0.5, similarity: null },
  ],
  madeAt: { kind: 'prefill', step: -1 },
  fresh: false,
};
const fresh: MergeEntryView = {
  index: 2,
  first: 3,
  origins: [3, 5, 6],
  count: 3,
  bias: Math.log(3),
  members: [
    { token: 3, size: 2, weight: 0.7, similarity: 0.93 },
    { token: 6, size: 1, weight: 0.3, similarity: -0.2 },
  ],
  madeAt: { kind: 'step', step: 1 },
  fresh: true,
};

function view(overrides: Partial<MergeViewData> = {}): MergeViewData {
  return { step: 1, layer: 0, kvHead: 0, tokens: 8, held: 5, policy: 'd2o:heavy=2,recent=2', entries: [fresh, older], madeInAllHeads: 4, detailed: false, depth: null, ...overrides };
}

describe('MergeView', () => {
  it('draws each merged entry over its tokens, this step’s in vermillion; a click picks it', () => {
    const onpick = vi.fn();
    const el = render(MergeView, { view: view(), pieces, picked: null, pickedLayer: null, onpick, width: 600, merging: ['d2o', 'razor'] });
    const entries = [...el.querySelectorAll('[data-testid="merge-entry"]')];
    // sorted by first token; one tick per token it stands for
    expect(entries.map((e) => e.getAttribute('data-first'))).toEqual(['1', '3']);
    expect(entries.map((e) => e.getAttribute('data-fresh'))).toEqual(['false', 'true']);
    expect(entries[1].querySelectorAll('rect[fill="#D55E00"]')).toHaveLength(3);
    expect(entries[0].querySelectorAll('rect[fill="#009E73"]')).toHaveLength(2);
    expect(entries[1].getAttribute('aria-label')).toMatch(/stands for 3 tokens .* count 3 \(bias log 3 = 1\.10\) · merged at step 1 \(this step\)/);
    expect(entries[0].getAttribute('aria-label')).toMatch(/count not recorded · merged by the prefill decision/);
    expect(el.querySelector('[data-testid="merge-summary"]')!.textContent).toMatch(/2 merged entries stand for 5 tokens .* 1 made at this step \(4 in all heads\).*did not record/s);
    (entries[1] as SVGGElement).dispatchEvent(new MouseEvent('click', { bubbles: true }));
    expect(onpick).toHaveBeenLastCalledWith({ kind: 'entry', token: 3 });
  });

  it('keyboard: Enter / Space pick, arrows move between entries, Escape clears — none reaches the page', () => {
    const onpick = vi.fn();
    const page = vi.fn();
    window.addEventListener('keydown', page);
    const el = render(MergeView, { view: view(), pieces, picked: fresh, pickedLayer: null, onpick, width: 600, merging: ['d2o'] });
    const [first, second] = [...el.querySelectorAll<SVGGElement>('[data-testid="merge-entry"]')];
    expect(first.getAttribute('tabindex')).toBe('0');
    first.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
    expect(onpick).toHaveBeenLastCalledWith({ kind: 'entry', token: 1 });
    first.dispatchEvent(new KeyboardEvent('keydown', { key: ' ', bubbles: true }));
    expect(onpick).toHaveBeenCalledTimes(2);
    first.focus();
    first.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowRight', bubbles: true }));
    expect(document.activeElement).toBe(second);
    second.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }));
    expect(onpick).toHaveBeenLastCalledWith(null);
    expect(page).not.toHaveBeenCalled();
    window.removeEventListener('keydown', page);
  });

  it('the picked entry’s details: members, weights, cosines, count and bias log(count)', () => {
    const el = render(MergeView, { view: view(), pieces, picked: fresh, pickedLayer: null, onpick: () => {}, width: 600, merging: ['d2o'] });
    const detail = el.querySelector('[data-testid="merge-detail"]')!;
    expect(detail.textContent).toMatch(/Merged entry #3 “␣sat” · stands for 3 tokens · count 3 · bias log 3 = 1\.099 · merged at step 1 \(this step\)/);
    const members = el.querySelector('[data-testid="merge-members"]')!.textContent!;
    expect(members).toContain('1. #3 ␣sat');
    expect(members).toContain('0.700');
    expect(members).toContain('0.930');
    expect(members).toContain('2. #6 ␣mat');
    expect(members).toContain('-0.200');
    expect(el.querySelector('[data-testid="merge-entry"][data-first="3"]')!.getAttribute('aria-selected')).toBe('true');
  });

  it('an older merge says what its trace did not record', () => {
    const el = render(MergeView, { view: view(), pieces, picked: older, pickedLayer: null, onpick: () => {}, width: 390, merging: ['d2o'] });
    const detail = el.querySelector('[data-testid="merge-detail"]')!.textContent!;
    expect(detail).toMatch(/count not recorded/);
    expect(el.querySelector('[data-testid="merge-members"]')!.textContent).toMatch(/1\. not recorded.*0\.500.*not recorded/s);
  });

  it('empty states: a policy that does not merge names the merging ones; a merging one says to step on', () => {
    let el = render(MergeView, { view: view({ entries: [], policy: 'h2o:heavy=8,recent=8' }), pieces, picked: null, pickedLayer: null, onpick: () => {}, width: 600, merging: ['chelsea', 'd2o'] });
    expect(el.querySelector('[data-testid="merge-empty"]')!.textContent).toMatch(/Pick a merging policy such as chelsea, d2o \(merge_bias=log_count\)/);
    el = render(MergeView, { view: view({ entries: [], policy: 'window:size=32 + d2o:heavy=2,recent=2' }), pieces, picked: null, pickedLayer: null, onpick: () => {}, width: 600, merging: ['d2o'] });
    expect(el.querySelector('[data-testid="merge-empty"]')!.textContent).toMatch(/has merged nothing in layer 0, KV head 0 by step 1/);
    el = render(MergeView, { view: null, pieces, picked: null, pickedLayer: null, onpick: () => {}, width: 600, merging: [] });
    expect(el.textContent).toMatch(/Packing the merge view/);
    // before any prompt is run nothing is asked for: say how to get a view instead of "packing" forever
    el = render(MergeView, { view: null, pieces, picked: null, pickedLayer: null, onpick: () => {}, width: 600, merging: ['d2o'], started: false });
    expect(el.querySelector('[data-testid="merge-not-started"]')!.textContent).toMatch(/Run or step a prompt with a merging policy to see merged entries/);
    expect(el.textContent).not.toMatch(/Packing/);
  });

  it('a packing error shows as text over the last good view', () => {
    const error = '<b>no layer 9</b> / KV head 0';
    let el = render(MergeView, { view: view(), pieces, picked: null, pickedLayer: null, onpick: () => {}, width: 600, merging: ['d2o'], error });
    const shown = el.querySelector('[data-testid="merge-error"]')!;
    expect(shown.textContent).toContain(`showing the last one packed): ${error}`);
    expect(shown.querySelector('b')).toBeNull();
    expect(el.querySelectorAll('[data-testid="merge-entry"]')).toHaveLength(2);
    el = render(MergeView, { view: null, pieces, picked: null, pickedLayer: null, onpick: () => {}, width: 600, merging: ['d2o'], error });
    expect(el.querySelector('[data-testid="merge-error"]')!.textContent).toContain(error);
    expect(el.textContent).not.toMatch(/Packing/);
  });

  it("MiniCache's depth chart: similarity per layer, paired layers pickable, the share retained", () => {
    const onpick = vi.fn();
    const depth = {
      from: { kind: 'step' as const, step: 1 },
      similarity: [Number.NaN, 0.9, 0.4, 0.8],
      partner: [1, 0, Number.NaN, Number.NaN],
      retained: [0.5, 0.5, 1, 1],
      shared: [3, 3, 0, 0],
      unmerged: [[0, 7], [4, 7], null, null],
    };
    const el = render(MergeView, { view: view({ entries: [], depth }), pieces, picked: null, pickedLayer: null, onpick, width: 600, merging: ['minicache'] });
    expect(el.querySelector('[data-testid="merge-empty"]')).toBeNull();
    const chart = el.querySelector('[data-testid="merge-depth"]')!;
    expect(chart.textContent).toMatch(/Depth \(MiniCache\) · measures of step 1/);
    expect(chart.querySelectorAll('circle')).toHaveLength(3); // NaN at layer 0 is not drawn
    const layers = [...chart.querySelectorAll<SVGGElement>('[data-testid="merge-depth-layer"]')];
    expect(layers).toHaveLength(2);
    expect(layers[1].getAttribute('aria-label')).toMatch(/layer 1, paired with layer 0: 3 entries .* 2 tokens not sharing a direction \(retained, or not yet merged\)/);
    layers[1].dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
    expect(onpick).toHaveBeenLastCalledWith({ kind: 'unmerged', layer: 1 });
    expect(chart.textContent).toContain('L0↔1');
    expect(chart.textContent).toContain('50%');
  });
});

describe('the shared highlight in the token stream and the cache map', () => {
  it('lights up the highlighted prompt and generated tokens', () => {
    const step = { step: 0, tokenIndex: 4, position: 4, token: { id: 9, piece: ' on', prob: 0.5 }, sampleProb: 0.5, next: [], policy: 'd2o', evicted: 0, merged: 1, reencoded: 0, memory: {} as never, timings: { forwardMs: 1, policyMs: 0, totalMs: 1 } };
    const el = render(TokenStream, { prompt: { ids: [1, 2, 3, 4], pieces: pieces.slice(0, 4) }, steps: [step], current: 0, following: true, onselect: () => {}, highlight: [1, 4], highlightLabel: 'merged entry #1' });
    const lit = [...el.querySelectorAll('[data-highlight="true"]')];
    expect(lit.map((e) => e.getAttribute('data-index'))).toEqual(['1', '4']);
    expect(lit[1].getAttribute('data-testid')).toBe('token');
    expect(lit[0].getAttribute('title')).toContain('merged entry #1');
  });

  it('bands the highlighted tokens through the cache map and outlines them in their head’s row', () => {
    const map = { layers: 2, kvHeads: 2, tokens: 8, codes: new Uint8Array(32).fill(CELL.HELD) };
    const el = render(CacheMap, { map, pieces, group: 2, layer: 0, head: 0, width: 500, highlight: { tokens: [5, 1, 2], layer: 1, kvHead: 0, label: 'merged entry #1' } });
    const overlay = el.querySelector('[data-testid="cache-map-highlight"]')!;
    // runs [1, 2] and [5]: a shade, an axis mark and an outline each
    expect(overlay.querySelectorAll('rect')).toHaveLength(6);
    expect(el.querySelector('.hover')!.textContent).toMatch(/highlighted \(shaded, yellow on the axis\): merged entry #1, outlined in L1 kv0/);
  });
});

describe('ExplorerState and the merge view', () => {
  it('asks the worker for the merged entries of the shown step and head; a pick lights up its tokens', async () => {
    const app = explorer();
    void app.load();
    await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
    app.ensureMerges();
    await until(() => app.merges !== null, 'the first merge view');
    expect(app.merges!.entries).toEqual([]);
    expect(await app.applySpec('d2o:heavy=2,recent=2,merge_bias=log_count')).toBe(true);
    for (let i = 0; i < 8; i++) {
      await app.step();
      await until(() => app.steps.length === i + 1, `step ${i}`);
    }
    let found = false;
    for (let l = 0; l < app.model!.layers && !found; l++) {
      for (let h = 0; h < app.model!.heads && !found; h++) {
        app.layer = l;
        app.head = h;
        app.ensureMerges();
        await until(() => app.mergesCurrent, `merges of L${l} H${h}`);
        found = app.merges!.entries.length > 0;
      }
    }
    expect(found, 'D2O merged somewhere').toBe(true);
    const entry = app.merges!.entries[0];
    expect(entry.count).toBe(entry.origins.length);
    app.pickMerge({ kind: 'entry', token: entry.first });
    expect(app.pickedMerge).toEqual(entry);
    expect(app.highlight).toMatchObject({ tokens: entry.origins, layer: app.layer, kvHead: app.kvHead });
    app.pickMerge(null);
    expect(app.highlight).toBeNull();
  });

  it('a reply for a step the selection has moved past is shown (stale), then the shown step is asked again', async () => {
    const app = explorer();
    void app.load();
    await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
    expect(await app.applySpec('d2o:heavy=2,recent=2,merge_bias=log_count')).toBe(true);
    for (let i = 0; i < 2; i++) {
      await app.step();
      await until(() => app.steps.length === i + 1, `step ${i}`);
    }
    // hold the next merges reply until the page has moved on, as a Run does (the worker answers between steps)
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const request = app.client.request.bind(app.client);
    let held = 0;
    let heldReply: Promise<unknown> | null = null;
    app.client.request = ((command, onEvent) => {
      const reply = request(command, onEvent);
      if (command.type !== 'merges' || held++ > 0) return reply;
      return (heldReply = reply.then(async (r) => (await gate, r)));
    }) as typeof app.client.request;
    app.ensureMerges();
    expect(app.currentStep).toBe(1);
    await app.step();
    await until(() => app.steps.length === 3 && app.activity === 'idle', 'step 2');
    app.ensureMerges();
    expect(app.currentStep).toBe(2);
    release();
    // the state's handler runs first (attached first); the newer request's reply comes later (worker round trip)
    await heldReply;
    flushSync();
    expect(app.merges!.step).toBe(1);
    expect(app.mergesCurrent).toBe(false);
    expect(app.mergesError).toBeNull();
    await until(() => app.mergesCurrent, 'the shown step asked again');
    expect(app.merges!.step).toBe(2);
    expect(held).toBe(2);
    // a packing error (here a KV head the model lacks) is named in the view; the last good view stays
    const good = app.merges;
    app.head = app.model!.heads * 4;
    app.ensureMerges();
    await until(() => app.mergesError !== null, 'the packing error');
    expect(app.mergesError).toMatch(/no layer \d+ \/ KV head \d+/);
    expect(app.merges).toBe(good);
    expect(app.error).toBeNull();
  });
});
