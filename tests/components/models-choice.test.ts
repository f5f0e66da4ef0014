/**
 * Which model the explorer, /compare and /bench open with and name (issue 12 §3's review): a link
 * without `model=` opens the default, not the choice saved by another page; the default's load
 * never waits for IndexedDB; a failed load leaves no model named; a /bench report keeps the model
 * it ran on; a model deleted in another tab stays shown, as "(deleted) <id>".
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { flushSync, mount, unmount } from 'svelte';
import { loadModel } from '../../engine/model/load.ts';
import { EngineHost } from '../../src/lib/worker/host.ts';
import type { Command, EngineEvent } from '../../src/lib/worker/protocol.ts';
import type { WorkerLike } from '../../src/lib/worker/client.ts';
import { afterEach, describe, expect, it } from 'vitest';
import { EngineClient } from '../../src/lib/worker/client.ts';
import { ModelCatalog } from '../../src/lib/models/catalog.svelte.ts';
import { modelOptions, type ShippedModel } from '../../src/lib/models/catalog.ts';
import { choiceValue, saveChoice, type ModelChoice } from '../../src/lib/models/choice.ts';
import type { StoredModel } from '../../src/lib/models/db.ts';
import type { ModelStore } from '../../src/lib/models/store.ts';
import { CompareState } from '../../src/lib/compare/state.svelte.ts';
import { BenchState } from '../../src/lib/bench/state.svelte.ts';
import { InProcessWorker, explorer, until } from './in-process.ts';
import { fakeServer, MemoryCache, MODELS_URL, ORIGIN } from '../ui/helpers.ts';
import ModelPickerHarness from './ModelPickerHarness.svelte';

const HELDOUT_URL = `${ORIGIN}/data/heldout.json`;

/** The real worker host in-process over the tiny fixture, serving the held-out text too (an evaluation). */
class BenchWorker implements WorkerLike {
  onmessage: ((event: MessageEvent) => void) | null = null;
  onerror: ((event: ErrorEvent | Event) => void) | null = null;
  private host: EngineHost;
  constructor() {
    const server = fakeServer();
    const heldout = readFileSync(resolve('static/data/heldout.json'));
    const fetchFn = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
      if (url === HELDOUT_URL) return new Response(heldout.slice(), { headers: { 'content-type': 'application/json' } });
      return server.fetch(input, init);
    }) as typeof fetch;
    const cache = new MemoryCache();
    this.host = new EngineHost((event: EngineEvent) => setTimeout(() => this.onmessage?.({ data: event } as MessageEvent)), { loadModel, fetch: fetchFn, caches: { open: async () => cache } });
  }
  postMessage(message: unknown): void {
    setTimeout(() => this.host.handle(message as Command));
  }
  terminate(): void {}
}

const URLS = { models: MODELS_URL, wasm: `${ORIGIN}/ort/ort-wasm-simd-threaded.wasm`, mjs: `${ORIGIN}/ort/ort-wasm-simd-threaded.mjs` };
const SHA = 'ab'.repeat(32);
const UPLOAD = { key: 'u1', id: 'my-model', role: 'target', sha256: SHA } as StoredModel;
const SHIPPED: ShippedModel[] = [{ id: 'tiny', role: 'target' }];
const index = async () => ({ defaultId: 'tiny', models: SHIPPED });

/** A store whose live list answers with `rows`, or never (an IndexedDB that hangs). */
function store(rows: StoredModel[] | null): () => ModelStore {
  return () =>
    ({
      live: () => ({
        subscribe(observer: { next(rows: StoredModel[]): void }) {
          if (rows) setTimeout(() => observer.next(rows));
          return { unsubscribe() {} };
        },
      }),
    }) as unknown as ModelStore;
}

afterEach(() => saveChoice(null));

describe('ModelCatalog.initialChoice', () => {
  it('a link without model= opens the default, even with an upload saved by another page; a bare address opens the saved one', async () => {
    saveChoice({ kind: 'uploaded', key: UPLOAD.key });
    const catalog = new ModelCatalog(MODELS_URL, store([UPLOAD]), index);
    expect(await catalog.initialChoice(null, true)).toBeNull();
    expect(await catalog.initialChoice(null, false)).toEqual({ kind: 'uploaded', key: 'u1' });
    // a link naming the upload opens it; naming a model this browser lacks: the default, not the saved one
    expect(await catalog.initialChoice({ id: 'my-model', sha256: SHA }, true)).toEqual({ kind: 'uploaded', key: 'u1' });
    expect(await catalog.initialChoice({ id: 'elsewhere', sha256: 'cd'.repeat(32) }, true)).toBeNull();
    catalog.dispose();
  });

  it('does not wait for an IndexedDB that never answers, unless an upload is saved or linked (then only a while)', async () => {
    const catalog = new ModelCatalog(MODELS_URL, store(null), index, 200);
    const started = Date.now();
    expect(await catalog.initialChoice()).toBeNull();
    saveChoice({ kind: 'shipped', id: 'tiny' });
    expect(await catalog.initialChoice()).toEqual({ kind: 'shipped', id: 'tiny' });
    expect(Date.now() - started).toBeLessThan(150);
    saveChoice({ kind: 'uploaded', key: 'u1' });
    expect(await catalog.initialChoice()).toBeNull();
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(catalog.uploadError).toMatch(/IndexedDB\) did not answer/);
    catalog.dispose();
  });
});

describe('a link carries a setup (then without model= it opens the default)', () => {
  it('/compare and /bench say whether the address was a link', () => {
    const compare = new CompareState(new EngineClient(() => new InProcessWorker()), URLS);
    compare.applyQuery('?v=1&lane=full&lane=window%3Asize%3D8');
    expect([compare.fromLink, compare.linkedModel]).toEqual([true, null]);
    compare.applyQuery('');
    expect(compare.fromLink).toBe(false);
    const bench = new BenchState(new EngineClient(() => new BenchWorker()), { ...URLS, heldout: HELDOUT_URL });
    bench.applyQuery('?v=1&task=ppl');
    expect([bench.fromLink, bench.linkedModel]).toEqual([true, null]);
  });
});

describe('a failed load names no model', () => {
  const missing: ModelChoice = { kind: 'shipped', id: 'no-such-model' };

  it('in the explorer', async () => {
    const app = explorer();
    await app.load();
    expect(app.model?.id).toBe('tiny-fixture');
    await app.chooseModel(missing);
    expect(app.status).toBe('error');
    expect(app.model).toBeNull();
    expect(app.experiment).toBeNull();
  });

  it('in /compare (its links then name none)', async () => {
    const app = new CompareState(new EngineClient(() => new InProcessWorker()), URLS);
    app.modelChoice = { kind: 'shipped', id: 'tiny-fixture' };
    await app.load();
    expect(app.model?.id).toBe('tiny-fixture');
    expect(app.query()).toMatch(/(^|&)model=tiny-fixture%7E/);
    await app.chooseModel(missing);
    expect(app.status).toBe('error');
    expect(app.model).toBeNull();
    expect(app.query()).not.toMatch(/(^|&)model=/);
  });

  it('in /bench; a report keeps the model it ran on', async () => {
    const app = new BenchState(new EngineClient(() => new BenchWorker()), { ...URLS, heldout: HELDOUT_URL });
    app.modelChoice = { kind: 'shipped', id: 'tiny-fixture' };
    await app.load();
    const ranOn = app.model!;
    app.chosen = ['window'];
    app.budgets = '16';
    app.windows = 1;
    app.tokens = 24;
    app.prefix = 4;
    const run = app.run();
    await until(() => !app.running, 'the evaluation');
    await run;
    expect(app.report).not.toBeNull();
    await app.chooseModel(missing);
    expect(app.model).toBeNull();
    expect(app.query()).not.toMatch(/(^|&)model=/);
    expect(app.reportModels.eval).toEqual({ info: ranOn, choice: { kind: 'shipped', id: 'tiny-fixture' } });
    expect(app.reportQuery()).toMatch(new RegExp(`(^|&)model=tiny-fixture%7E${ranOn.sha256}`));
  });
});

describe('ModelPicker', () => {
  it('keeps a model deleted in another tab selected, as "(deleted) <id>"', () => {
    const options = modelOptions(SHIPPED, 'tiny', [UPLOAD]);
    const value: ModelChoice = { kind: 'uploaded', key: 'u1' };
    const target = document.createElement('div');
    document.body.appendChild(target);
    const harness = mount(ModelPickerHarness, { target, props: { initial: options, value } }) as { drop(value: string): void };
    flushSync();
    const select = target.querySelector('select')!;
    expect(select.value).toBe(choiceValue(value));
    harness.drop(choiceValue(value));
    flushSync();
    expect([...select.options].map((o) => o.textContent)).toEqual(['tiny · default', '(deleted) my-model']);
    expect(select.value).toBe(choiceValue(value));
    expect(select.selectedOptions[0].textContent).toBe('(deleted) my-model');
    unmount(harness);
    target.remove();
  });
});
