/**
 * CompareState and BenchState (runes) driving the real worker host in-process over the tiny
 * fixture: lanes stepping together, back, the URL round trip; an evaluation to completion and a
 * cancelled one.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { flushSync } from 'svelte';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../../engine/model/load.ts';
import { EngineClient, type WorkerLike } from '../../src/lib/worker/client.ts';
import { EngineHost } from '../../src/lib/worker/host.ts';
import type { Command, EngineEvent } from '../../src/lib/worker/protocol.ts';
import { CompareState, COMPARE_DEFAULTS } from '../../src/lib/compare/state.svelte.ts';
import { BenchState } from '../../src/lib/bench/state.svelte.ts';
import { parseNumberList } from '../../src/lib/bench/setup.ts';
import { decodeCompareQuery } from '../../src/lib/compare/url.ts';
import { fakeServer, MemoryCache, MODELS_URL, ORIGIN } from '../ui/helpers.ts';
import { fetchSource, loadTokenizer } from '../../engine/model/load.ts';
import { heldoutDocuments } from '../../engine/spec/ngram/heldout-split.ts';
import { fillerSentences, heldoutWindows } from '../../engine/metrics/heldout.ts';
import { needlePrompts, type NeedleSettings } from '../../engine/eval/needle.ts';
import { EvalCellLinks, SpecRowLinks, type CellInputs } from '../../src/lib/bench/cell-links.ts';
import { readExperimentQuery } from '../../src/lib/links/codec.ts';
import type { Experiment } from '../../src/lib/links/experiment.ts';
import { comparisonCell } from '../../src/lib/compare/notebook-cell.ts';
import { evaluationCell } from '../../src/lib/bench/notebook-cell.ts';

const FIGURE = { name: 'fig', title: 'A figure', caption: 'caption', svg: '<svg xmlns="http://www.w3.org/2000/svg"></svg>' };

const HELDOUT_URL = `${ORIGIN}/data/heldout.json`;

class InProcessWorker implements WorkerLike {
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
    this.host = new EngineHost((event: EngineEvent) => setTimeout(() => this.onmessage?.({ data: event } as MessageEvent)), {
      loadModel,
      fetch: fetchFn,
      caches: { open: async () => cache },
    });
  }
  postMessage(message: unknown): void {
    setTimeout(() => this.host.handle(message as Command));
  }
  terminate(): void {}
}

async function until(condition: () => boolean, what: string, timeout = 30_000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
    flushSync();
  }
}

const URLS = { models: MODELS_URL, wasm: `${ORIGIN}/ort/ort-wasm-simd-threaded.wasm`, mjs: `${ORIGIN}/ort/ort-wasm-simd-threaded.mjs` };

describe('CompareState', () => {
  it('takes its setup from a link, steps every lane together, steps back, and writes the same link back', async () => {
    const app = new CompareState(new EngineClient(() => new InProcessWorker()), URLS);
    const link = 'v=1&lane=full&lane=window%3Asize%3D8&lane=h2o%3Aheavy%3D4%2Crecent%3D4&prompt=The+cat+sat+on+the+mat.&seed=3&t=0.9&k=20&p=0.9';
    expect(app.applyQuery(`?${link}`)).toEqual([]);
    void app.load();
    await until(() => app.status === 'ready' && app.activeSpecs.length === 3 && app.activity === 'idle', 'lanes started');
    expect(app.activeSpecs).toEqual(['full', 'window:size=8', 'h2o:heavy=4,recent=4,accumulate=sum,gqa=sum']);
    expect(app.sampler).toEqual({ temperature: 0.9, topK: 20, topP: 0.9, seed: 3 });
    expect(app.promptView!.ids.length).toBeGreaterThan(3);

    await app.step();
    await until(() => app.steps.length === 1, 'one step');
    app.runSteps = 9;
    await app.run();
    await until(() => app.steps.length === 10 && app.activity === 'idle', 'ten steps');
    const s = app.summaries;
    expect(s).toHaveLength(3);
    expect(s[0].tokens).toHaveLength(10);
    expect(s[0].kl.every((k) => k === 0)).toBe(true);
    expect(s[1].kl.every((k) => k !== null && k >= 0)).toBe(true);
    expect(s[1].memory!.entriesPerHead).toBe(8);
    expect(s[0].diverged.every((d) => !d)).toBe(true);
    // divergence is a comparison of token ids with lane 1
    expect(s[1].diverged).toEqual(s[1].tokens.map((t, i) => t !== s[0].tokens[i]));
    expect(s[1].agreement).not.toBeNull();

    const tokens = s.map((l) => l.tokens);
    await app.back(3);
    expect(app.steps).toHaveLength(7);
    await app.run();
    await until(() => app.steps.length === 16 && app.activity === 'idle', 'replayed');
    expect(app.summaries.map((l) => l.tokens.slice(0, 10))).toEqual(tokens);

    // the URL the page writes reproduces the setup
    const { setup } = decodeCompareQuery(app.query(), COMPARE_DEFAULTS);
    expect(setup.lanes).toEqual(app.activeSpecs);
    expect(setup.prompt).toBe('The cat sat on the mat.');
    expect(setup.sampler.seed).toBe(3);
    app.client.dispose();
  });

  it('links no steps before any are decoded (an opened link then decodes nothing), and the Run length apart', async () => {
    const app = new CompareState(new EngineClient(() => new InProcessWorker()), URLS);
    app.applyQuery('v=1&lane=full&lane=window%3Asize%3D8&prompt=The+cat&run=5');
    void app.load();
    await until(() => app.status === 'ready' && app.activeSpecs.length === 2 && app.activity === 'idle', 'lanes started');
    const q = new URLSearchParams(app.query());
    expect([q.get('steps'), q.get('at'), q.get('run')]).toEqual([null, null, '5']);
    expect(app.steps).toHaveLength(0);
    app.client.dispose();
  });

  it('runs a link with a run length to it by itself, selects its step, and writes both back', async () => {
    const app = new CompareState(new EngineClient(() => new InProcessWorker()), URLS);
    const link = 'v=1&lane=full&lane=window%3Asize%3D8&prompt=The+cat+sat+on+the+mat.&seed=3&t=0&k=40&p=0.95&steps=6&at=3&run=32';
    expect(app.applyQuery(link)).toEqual([]);
    expect(app.query()).toBe(link);
    void app.load();
    await until(() => app.status === 'ready' && app.steps.length === 6 && app.selected === 3 && app.activity === 'idle', 'the link run');
    expect(app.summaries.map((l) => l.tokens.length)).toEqual([6, 6]);
    expect(app.query()).toBe(link);
    // an edit not yet run changes nothing the link decodes: it links what the lanes ran
    app.prompt = 'Completely different words';
    expect(app.query()).toBe(link);
    app.prompt = 'The cat sat on the mat.';
    // "Add to notebook": the link of the page now, one line, a row per lane with its header's numbers
    const cell = await comparisonCell(app, FIGURE);
    expect(cell).toMatchObject({ kind: 'comparison', link: `/compare?${link}`, summary: 'Tiny random fixture (tests only) · “The cat sat on the mat.” · 2 lanes · 6 steps', figure: FIGURE });
    if (cell.kind !== 'comparison') throw new Error('not a comparison cell');
    expect(cell.table.columns.slice(0, 4)).toEqual(['lane', 'policy', 'drafter', 'tokens']);
    expect(cell.table.rows.map((r) => r.slice(0, 4))).toEqual([
      [1, 'full', '', 6],
      [2, 'window:size=8', '', 6],
    ]);
    expect(cell.table.rows[1][cell.table.columns.indexOf('entries per head')]).toBe(8);
    app.select(5);
    expect(decodeCompareQuery(app.query(), COMPARE_DEFAULTS).setup.at).toBe(5);
    await app.back(2);
    expect(app.selected).toBeNull();
    expect(decodeCompareQuery(app.query(), COMPARE_DEFAULTS).setup).toMatchObject({ steps: 4 });
    expect(decodeCompareQuery(app.query(), COMPARE_DEFAULTS).setup.at).toBeUndefined();
    app.client.dispose();
  });

  it('keeps what a link had wrong on screen after the lanes start', async () => {
    const app = new CompareState(new EngineClient(() => new InProcessWorker()), URLS);
    app.applyQuery('lane=full&lane=window%3Asize%3D8&steps=3&at=9&seed=-1');
    void app.load();
    await until(() => app.status === 'ready' && app.steps.length === 3 && app.activity === 'idle', 'the link run');
    expect(app.linkProblems).toMatch(/seed/);
    expect(app.linkProblems).toMatch(/selected step 9/);
    expect(app.selected).toBeNull();
    app.client.dispose();
  });

  it('adds and removes lanes within 2–4 and marks the setup as changed until Reset', async () => {
    const app = new CompareState(new EngineClient(() => new InProcessWorker()), URLS);
    app.applyQuery('');
    void app.load();
    await until(() => app.status === 'ready' && app.activeSpecs.length > 0 && app.activity === 'idle', 'ready');
    expect(app.activeSpecs).toEqual(['full', 'window:size=32', 'streaming:sinks=4,recent=28,positions=p2']);
    app.addLane();
    expect(app.lanes).toHaveLength(4);
    expect(app.canAdd).toBe(false);
    app.addLane();
    expect(app.lanes).toHaveLength(4);
    expect(app.setupChanged).toBe(true);
    app.removeLane(3);
    app.removeLane(2);
    expect(app.canRemove).toBe(false);
    app.removeLane(1);
    expect(app.lanes).toHaveLength(2);
    app.pickPolicy(1, 'tova');
    app.setParam(1, 'budget', 16);
    await app.start();
    expect(app.setupChanged).toBe(false);
    expect(app.activeSpecs).toEqual(['full', 'tova:budget=16,reduce=head-mean,gqa=mean']);
    app.client.dispose();
  });

  it('drops unknown policies from a link with a notice', async () => {
    const app = new CompareState(new EngineClient(() => new InProcessWorker()), URLS);
    app.applyQuery('lane=full&lane=nosuch%3Ax%3D1&lane=window%3Asize%3D4');
    void app.load();
    await until(() => app.status === 'ready' && app.activeSpecs.length > 0 && app.activity === 'idle', 'ready');
    expect(app.activeSpecs).toEqual(['full', 'window:size=4']);
    app.client.dispose();
  });
});

describe('CompareState: compositions', () => {
  it('runs a composed lane from a link and from a typed spec; a spec the engine refuses is named and changes nothing', async () => {
    const app = new CompareState(new EngineClient(() => new InProcessWorker()), URLS);
    const composed = 'window:size=8 + h2o:heavy=2,recent=2';
    expect(app.applyQuery(`?v=1&lane=full&lane=${encodeURIComponent(composed)}&prompt=The+cat+sat+on+the+mat.+The+dog+sat+on+the+log.&seed=3`)).toEqual([]);
    void app.load();
    await until(() => app.status === 'ready' && app.activeSpecs.length === 2 && app.activity === 'idle', 'lanes started');
    const canonical = 'window:size=8 + h2o:heavy=2,recent=2,accumulate=sum,gqa=sum';
    expect(app.activeSpecs).toEqual(['full', canonical]);
    expect(app.lanes[1].map((m) => m.id)).toEqual(['window', 'h2o']);
    app.runSteps = 4;
    await app.run();
    await until(() => app.steps.length === 4 && app.activity === 'idle', 'four steps');
    // the window keeps 8, then H2O 2 heavy + 2 recent of those
    expect(app.summaries[1].memory!.entriesPerHead).toBe(4);
    // the link carries the composed spec and reads back to it
    expect(app.query()).toContain('lane=window%3Asize%3D8+%2B+h2o%3Aheavy%3D2');
    expect(decodeCompareQuery(app.query(), COMPARE_DEFAULTS).setup.lanes).toEqual(app.activeSpecs);

    const lane = app.lanes[0];
    expect(app.setLaneSpec(0, 'h2o:heavy=2 + nosuch')).toBe(false);
    expect(app.laneSpecErrors[0]).toMatch(/unknown policy "nosuch"/);
    expect(app.lanes[0]).toBe(lane);
    expect(app.setupChanged).toBe(false);

    expect(app.setLaneSpec(0, 'streaming:sinks=2,recent=4 + window:size=4')).toBe(true);
    expect(app.laneSpecErrors[0]).toBeNull();
    app.addMember(0);
    expect(app.lanes[0].map((m) => m.id)).toEqual(['streaming', 'window', 'h2o']);
    app.removeMember(0, 2);
    app.setParam(0, 'size', 6, 1);
    expect(app.setupChanged).toBe(true);
    await app.start();
    expect(app.activeSpecs[0]).toBe('streaming:sinks=2,recent=4,positions=p2 + window:size=6');
    app.client.dispose();
  });
});

/** The fixture's tokenizer and the shipped held-out text: what the page loads for its cells' links. */
async function cellInputsOfFixture(): Promise<CellInputs> {
  const { tokenizer } = await loadTokenizer(fetchSource(`${MODELS_URL}tiny/`, fakeServer().fetch));
  return { tokenizer, documents: heldoutDocuments(JSON.parse(readFileSync(resolve('static/data/heldout.json'), 'utf8'))) };
}

function experimentOf(href: string | null): Experiment {
  expect(href).toMatch(/^\/\?v=1&x=/);
  const reading = readExperimentQuery(href!.slice(2));
  if (reading.kind !== 'experiment') throw new Error(`the link does not read: ${JSON.stringify(reading)}`);
  return reading.experiment;
}

const MODEL = { id: 'tiny-fixture', sha256: 'a'.repeat(64) };

describe('BenchState', () => {
  it('runs a small evaluation to completion with progress and rows, then offers the JSON', async () => {
    const app = new BenchState(new EngineClient(() => new InProcessWorker()), { ...URLS, heldout: HELDOUT_URL });
    void app.load();
    await until(() => app.status === 'ready', 'ready');
    expect(app.chosen).not.toContain('razor'); // the fixture has no calibration
    app.chosen = ['full', 'window'];
    app.budgets = '16, 32';
    app.windows = 1;
    app.tokens = 48;
    app.prefix = 8;
    const plan = app.plan;
    expect('runs' in plan && plan.runs.map((r) => r.spec)).toEqual(['full', 'window:size=16', 'window:size=32']);
    await app.run();
    expect(app.error).toBeNull();
    expect(app.report!.records.map((r) => r.rows.length)).toEqual([1, 2]);
    expect(app.rows).toHaveLength(3);
    expect(app.fraction).toBe(1);
    const file = app.reportJson()!;
    expect(file.fileName).toBe('kvscope-eval-ppl-tiny-fixture.json');
    expect(JSON.parse(file.json).format).toBe('kvscope-eval');

    // a perplexity cell opens the first held-out window as text, under the row's spec, greedy
    const inputs = await cellInputsOfFixture();
    const texts = inputs.documents.map((d) => d.text).filter(Boolean);
    const window = heldoutWindows(inputs.tokenizer, texts, { windows: 1, tokens: 48, seed: app.seed })[0];
    const pplRow = app.report!.records[1].rows[0];
    const ppl = new EvalCellLinks('/', MODEL, app.report!, inputs).link(pplRow);
    expect(ppl.what).toMatch(/^perplexity is measured teacher-forced; the explorer decodes the same text under the same policy/);
    const pplRun = experimentOf(ppl.href);
    expect(inputs.tokenizer.encode(pplRun.prompt)).toEqual(window);
    expect(pplRun).toMatchObject({ model: MODEL, policy: 'window:size=16', sampler: { temperature: 0 }, steps: 16 });

    // "Add to notebook": the setup the report ran with, and the table as shown
    const ranWith = app.query();
    app.budgets = '99';
    const cell = await evaluationCell(app, FIGURE);
    expect(cell).toMatchObject({ kind: 'evaluation', link: `/bench?${ranWith}`, figure: FIGURE });
    expect(cell.kind === 'evaluation' && cell.summary).toMatch(/^Tiny random fixture \(tests only\) · perplexity · 2 rows · [\d.]+ s$/);
    expect(cell.kind === 'evaluation' && cell.table.columns).toEqual(['policy', 'B = 16', 'B = 32', 'as given']);
    expect(cell.kind === 'evaluation' && cell.table.rows.map((r) => r.map((v) => (typeof v === 'string' ? v.replace(/^\d+\.\d\d \(\d+\)$/, 'perplexity (entries)') : v)))).toEqual([
      ['full', null, null, 'perplexity (entries)'],
      ['window', 'perplexity (entries)', 'perplexity (entries)', null],
    ]);
    app.budgets = '16, 32';

    app.task = 'needle';
    app.lengths = '80';
    app.depths = '0, 1';
    app.chosen = ['streaming'];
    app.budgets = '16';
    await app.run();
    expect(app.report!.task).toBe('needle');
    expect(app.report!.records[0].rows[0].needle!.cells).toHaveLength(2);

    // a passkey cell opens the prompt the evaluation built for its first wrong trial (else the first)
    const row = app.report!.records[0].rows[0];
    const settings = app.report!.settings as NeedleSettings;
    const prompts = needlePrompts(inputs.tokenizer, fillerSentences(texts), settings);
    const wrong = row.needle!.cells.findIndex((c) => c.examples.some((e) => !e.success));
    const needle = new EvalCellLinks('/', MODEL, app.report!, inputs).link(row);
    const needleRun = experimentOf(needle.href);
    expect(needleRun.prompt).toBe(prompts[Math.max(0, wrong)][0].text);
    expect(needleRun).toMatchObject({ policy: row.spec, sampler: { temperature: 0 }, steps: settings.decodeTokens, actions: [{ kind: 'decode', steps: 7 }] });
    expect(needle.what).toMatch(new RegExp(`^the passkey prompt of length 80, depth ${wrong === 1 ? 1 : 0}, trial 1 \\((right|wrong): answered`));
    app.client.dispose();
  });

  it('takes its setup from a link (never running it), names what it ignored, and writes the same link back', async () => {
    const app = new BenchState(new EngineClient(() => new InProcessWorker()), { ...URLS, heldout: HELDOUT_URL });
    const problems = app.applyQuery('?v=1&task=needle&policies=full,window&budgets=16%2C+32&lengths=80&depths=0%2C+1&trials=2&seed=7&windows=99');
    expect(problems).toEqual([expect.stringMatching(/^ignored windows="99" in the link: not an integer in 1\.\.16$/)]);
    expect(app.linkProblems).toBe(problems[0]);
    expect([app.task, app.chosen, app.budgets, app.lengths, app.depths, app.trials, app.seed, app.windows]).toEqual(['needle', ['full', 'window'], '16, 32', '80', '0, 1', 2, 7, 1]);
    void app.load();
    await until(() => app.status === 'ready', 'ready');
    await new Promise((r) => setTimeout(r, 50));
    expect(app.running).toBe(false);
    expect(app.report).toBeNull();
    const q = new URLSearchParams(app.query());
    expect([q.get('task'), q.get('policies'), q.get('budgets'), q.get('trials'), q.get('windows')]).toEqual(['needle', 'full,window', '16, 32', '2', '1']);
    app.client.dispose();
  });

  it('cancels between steps and keeps the finished rows; bad setups are explained', async () => {
    const app = new BenchState(new EngineClient(() => new InProcessWorker()), { ...URLS, heldout: HELDOUT_URL });
    void app.load();
    await until(() => app.status === 'ready', 'ready');
    app.chosen = ['window'];
    app.budgets = '8, 16, 32, 64';
    app.windows = 2;
    app.tokens = 200;
    const running = app.run();
    await until(() => app.rows.length >= 1, 'first row');
    app.cancel();
    await running;
    expect(app.report!.cancelled).toBe(true);
    expect(app.report!.records[0].rows.length).toBeLessThan(4);

    app.budgets = '8, x';
    expect('problem' in app.plan && app.plan.problem).toMatch(/not an integer/);
    app.budgets = '8';
    app.chosen = [];
    expect('problem' in app.plan && app.plan.problem).toMatch(/at least one policy/);
    expect(parseNumberList('0, 0.5 1', 'depths', false)).toEqual([0, 0.5, 1]);
    app.client.dispose();
  });
});

describe('BenchState: the spec task', () => {
  it('runs drafters against plain decoding in the engine worker: rows, progress, JSON; T=0 is identical to plain', async () => {
    // evalWorkers 4: the spec task still runs in the engine worker alone
    const app = new BenchState(new EngineClient(() => new InProcessWorker()), { ...URLS, heldout: HELDOUT_URL }, 1, 4);
    void app.load();
    await until(() => app.status === 'ready', 'ready');
    app.task = 'spec';
    expect(app.drafters.filter((d) => d.on).map((d) => d.spec)).toEqual(['model:gamma=4', 'lookup:max_ngram=3,k=10']);
    // the fixture names no draft model: it drafts for itself
    app.setDrafterSpec('model', 'model:model=tiny-fixture,gamma=3');
    app.specPrompts = 1;
    app.specPromptTokens = 24;
    app.specTokens = 8;
    app.texts = ['python-doc'];
    const line = app.planLine;
    expect('runs' in line && line.text).toBe('model:gamma=3,model=tiny-fixture,policy=full · lookup:max_ngram=3,k=10 on python-doc, one at a time');
    await app.run();
    expect(app.error).toBeNull();
    const report = app.specReport!;
    expect(report.task).toBe('spec');
    expect(report.cancelled).toBe(false);
    expect(report.settings).toMatchObject({ prompts: 1, promptTokens: 24, tokens: 8, policy: 'full', texts: ['python-doc'], temperature: 0 });
    expect(report.records.map((r) => r.draft)).toEqual(['model:model=tiny-fixture,gamma=3', 'lookup:max_ngram=3,k=10']);
    const rows = report.records.flatMap((r) => r.rows);
    expect(rows.map((r) => [r.text, r.tokens, r.identical_to_plain])).toEqual([
      ['python-doc', 8, true],
      ['python-doc', 8, true],
    ]);
    expect(rows[0].acceptance_rate).toBe(1); // the target drafting for itself is always accepted
    expect(rows.every((r) => r.target_calls_per_token > 0 && r.target_calls_per_token <= 1 && r.speedup > 0)).toBe(true);
    expect(app.fraction).toBe(1);
    expect(app.progress?.message).toBe('done');
    expect(app.report).toBeNull(); // the other tasks' report is untouched
    const file = app.reportJson()!;
    expect(file.fileName).toBe('kvscope-eval-spec-tiny-fixture.json');
    expect(JSON.parse(file.json)).toMatchObject({ format: 'kvscope-eval', task: 'spec' });

    // a row opens the text set's first held-out prompt, drafted by the row's drafter on the target policy
    const inputs = await cellInputsOfFixture();
    const link = new SpecRowLinks('/', MODEL, report, inputs).link(rows[1]);
    const run = experimentOf(link.href);
    expect(run).toMatchObject({ policy: 'full', sampler: { temperature: 0, seed: 0 }, steps: 8 });
    expect(run.actions).toEqual([{ kind: 'drafter', spec: rows[1].spec }, { kind: 'run', steps: 8, stopAtEos: false }]);
    expect(inputs.tokenizer.encode(run.prompt)).toHaveLength(24);
    expect(link.what).toBe(`the first python-doc prompt (24 tokens) drafted by ${rows[1].spec} on full, greedy, 8 steps`);

    // a drafter whose index cannot be fetched is reported, the report kept
    app.toggleDrafter('model', false);
    app.toggleDrafter('lookup', false);
    app.toggleDrafter('infinigram', true);
    await app.run();
    expect(app.error?.message).toMatch(/index: .*HTTP 404/);
    expect(app.specReport).toBeNull();
    app.client.dispose();
  }, 60_000);

  it('cancels between decodes and keeps the text sets that had a finished prompt; bad setups are explained', async () => {
    const app = new BenchState(new EngineClient(() => new InProcessWorker()), { ...URLS, heldout: HELDOUT_URL });
    void app.load();
    await until(() => app.status === 'ready', 'ready');
    app.task = 'spec';
    app.toggleDrafter('model', false);
    app.specPrompts = 6;
    app.specPromptTokens = 24;
    app.specTokens = 24;
    const running = app.run();
    await until(() => (app.progress?.done ?? 0) >= 3, 'a prompt decoded');
    app.cancel();
    await running;
    const report = app.specReport!;
    expect(report.cancelled).toBe(true);
    expect(report.records[0].rows.length).toBeGreaterThanOrEqual(1);
    expect(report.records[0].rows[0].prompts).toBeLessThan(6);

    app.toggleDrafter('lookup', false);
    expect('problem' in app.specPlan && app.specPlan.problem).toMatch(/at least one drafter/);
    app.setDrafterSpec('lookup', 'lookup:max_ngrm=2');
    expect(app.drafters.find((d) => d.id === 'lookup')!.on).toBe(true);
    expect('problem' in app.planLine && app.planLine.problem).toMatch(/drafter: .*did you mean max_ngram/);
    app.setDrafterSpec('lookup', 'lookup');
    app.targetPolicy = 'window:size=0';
    expect('problem' in app.planLine && app.planLine.problem).toMatch(/^target policy: /);
    app.targetPolicy = 'window:size=16';
    app.gammas = '2, x';
    expect('problem' in app.planLine && app.planLine.problem).toMatch(/not an integer/);
    app.gammas = '1 2';
    expect('runs' in app.planLine && app.planLine.runs).toBe(2);
    app.texts = [];
    expect('problem' in app.planLine && app.planLine.problem).toMatch(/at least one text set/);
    app.client.dispose();
  }, 60_000);
});

describe('CompareState: speculative lanes', () => {
  it('runs a lane with a drafter from a link: at temperature 0 its tokens are the plain lane\'s; origins, stats and the link follow', async () => {
    const app = new CompareState(new EngineClient(() => new InProcessWorker()), URLS);
    const prompt = 'The cat sat on the mat. The dog sat on the log. The cat sat on the mat. The dog';
    const link = `v=1&lane=window%3Asize%3D16&lane=window%3Asize%3D16+%7C+lookup&prompt=${encodeURIComponent(prompt)}&seed=3&t=0&k=0&p=1`;
    expect(app.applyQuery(`?${link}`)).toEqual([]);
    expect(app.drafters).toEqual([]);
    void app.load();
    await until(() => app.status === 'ready' && app.activeSpecs.length === 2 && app.activity === 'idle', 'lanes started');
    expect(app.drafters).toEqual(['', 'lookup']);
    expect(app.activeDrafters).toEqual([null, 'lookup:max_ngram=3,k=10']);
    app.runSteps = 14;
    await app.run();
    await until(() => app.steps.length === 14 && app.activity === 'idle', '14 steps');
    const [plain, spec] = app.summaries;
    expect(spec.tokens).toEqual(plain.tokens);
    expect(spec.diverged.every((d) => !d)).toBe(true);
    expect(plain.origins.every((o) => o === null)).toBe(true);
    expect(plain.specStats).toBeNull();
    expect(spec.origins.every((o) => o !== null)).toBe(true);
    expect(spec.specStats).toMatchObject({ tokens: 14 });
    expect(spec.callsPerToken.every((c) => c !== null && c > 0 && c <= 1)).toBe(true);
    expect(spec.kl.every((k) => k !== null && k >= 0)).toBe(true);
    // stepping back and on shows the same tokens
    await app.back(4);
    app.runSteps = 4;
    await app.run();
    await until(() => app.steps.length === 14 && app.activity === 'idle', 'replayed');
    expect(app.summaries[1].tokens).toEqual(spec.tokens);
    expect(app.summaries[1].callsPerToken).toEqual(spec.callsPerToken);

    // the link carries the lane as `policy | drafter`; it reproduces the setup
    const { setup } = decodeCompareQuery(app.query(), COMPARE_DEFAULTS);
    // (once lanes decoded: as they ran, the drafter in its canonical form)
    expect(setup.lanes).toEqual(['window:size=16', 'window:size=16 | lookup:max_ngram=3,k=10']);

    // a bad drafter is named inline, the link keeps what ran, Reset is refused by the engine with its message
    app.setDrafter(1, 'lookup:max_ngrm=2');
    expect(app.drafterErrors[1]).toMatch(/did you mean max_ngram/);
    expect(decodeCompareQuery(app.query(), COMPARE_DEFAULTS).setup.lanes[1]).toBe('window:size=16 | lookup:max_ngram=3,k=10');
    expect(app.setupChanged).toBe(true);
    await app.start();
    expect(app.error?.message).toMatch(/drafter: .*max_ngrm/);
    // the drafter's own error kind, and the lane it is about
    expect(app.error?.kind).toBe('drafter');
    expect(app.error?.message).toMatch(/^lane 2 drafter: /);
    app.dismissError();

    // a plain lane gets a drafter; a draft model that is not in the models index is reported at Reset
    app.setDrafter(1, '');
    app.setDrafter(0, 'model:model=nosuch');
    expect(app.drafterErrors).toEqual([null, null]);
    await app.start();
    expect(app.error?.message).toMatch(/no model "nosuch"/);
    expect(app.error).toMatchObject({ kind: 'drafter', message: expect.stringMatching(/^lane 1 drafter: /) });
    app.setDrafter(0, 'self:gamma=2,policy=window(size=8)');
    await app.start();
    expect(app.error).toBeNull();
    expect(app.activeDrafters).toEqual(['self:gamma=2,policy=window(size=8)', null]);
    expect(decodeCompareQuery(app.query(), COMPARE_DEFAULTS).setup.lanes).toEqual(['window:size=16 | self:gamma=2,policy=window(size=8)', 'window:size=16']);
    app.client.dispose();
  }, 60_000);
});
