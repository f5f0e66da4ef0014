/**
 * UI benchmark of the explorer in headless Chromium (`npm run bench:ui`, which builds first):
 *
 *  1. page load → model ready → first generated token, with a cold cache (fresh profile) and a
 *     warm one (same profile again: model files from the Cache API, app shell from the service worker);
 *  2. tokens/s of Run at contexts 128 and 512, views updating vs. views hidden;
 *  3. draw time of the layer × head overview grid and of the zoomed head heatmap at a 1024-token
 *     context (goal: median ≤ 16 ms);
 *  4. JS heap of the page after 100, 500 and 1,000 steps (the views keep full rows for a bounded
 *     number of steps, so the heap must level off).
 *
 * Prints a summary and writes bench-results/ui.json. Options: --out FILE, --quick (fewer steps).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname } from 'node:path';
import type { Page } from 'playwright-core';
import { launchBrowser, persistentContext, removeDir, startServer, waitIdle, waitReady, waitTokens } from '../tests/e2e/harness.ts';

const args = process.argv.slice(2);
const outAt = args.indexOf('--out');
const OUT = outAt >= 0 ? args[outAt + 1] : 'bench-results/ui.json';
const QUICK = args.includes('--quick');
const RUN_TOKENS = QUICK ? 32 : 64;
const HEAP_STEPS = QUICK ? [50, 200] : [100, 500, 1000];
const REPEATS = QUICK ? 1 : 5;

interface Stats {
  n: number;
  median: number;
  p95: number;
  mean: number;
  max: number;
}

function stats(values: number[]): Stats {
  const v = [...values].sort((a, b) => a - b);
  const at = (q: number) => v[Math.min(v.length - 1, Math.floor(q * (v.length - 1)))] ?? NaN;
  const round = (x: number) => Math.round(x * 100) / 100;
  return { n: v.length, median: round(at(0.5)), p95: round(at(0.95)), mean: round(v.reduce((a, b) => a + b, 0) / Math.max(1, v.length)), max: round(v.at(-1) ?? NaN) };
}

const FILLER =
  'The river ran past the mill and on toward the sea. A farmer walked slowly along the road with his old dog. ' +
  'In the evening the lamps were lit and supper was laid upon the table. The wind moved through the trees. ';

/** A prompt of exactly `tokens` tokens (BOS included), found by asking the engine to count. */
async function promptOf(page: Page, tokens: number): Promise<string> {
  // a string script: tsx would wrap named inner functions in __name(), which the page lacks
  return page.evaluate(`(async () => {
    const tokens = ${tokens};
    const filler = ${JSON.stringify(FILLER)};
    const app = globalThis.__kvscope;
    const count = async (text) => (await app.client.request({ type: 'tokenize', text })).count;
    let text = filler;
    while ((await count(text)) < tokens) text += filler;
    const words = text.split(' ');
    let lo = 1;
    let hi = words.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((await count(words.slice(0, mid).join(' '))) >= tokens) hi = mid;
      else lo = mid + 1;
    }
    let best = words.slice(0, lo).join(' ');
    // trim characters until the count is exact (a word may be several tokens)
    while ((await count(best)) > tokens) best = best.slice(0, -1);
    return best;
  })()`);
}

async function setPrompt(page: Page, text: string): Promise<void> {
  await page.fill('[data-testid="prompt"]', text);
  await page.click('[data-testid="reset"]');
  await page.waitForFunction(() => !document.querySelector('[data-testid="setup-changed"]'));
  await waitIdle(page, 60_000);
}

async function runTokens(page: Page, n: number): Promise<number> {
  await page.fill('[data-testid="run-steps"]', String(n));
  const before = await page.locator('[data-testid="token"]').count();
  const t0 = Date.now();
  await page.click('[data-testid="run"]');
  await waitTokens(page, before + n, 300_000);
  const seconds = (Date.now() - t0) / 1000;
  await waitIdle(page, 60_000);
  return n / seconds;
}

async function heapMB(page: Page): Promise<number> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('HeapProfiler.enable');
  await cdp.send('HeapProfiler.collectGarbage');
  const usage = (await cdp.send('Runtime.getHeapUsage')) as { usedSize: number };
  await cdp.detach();
  return Math.round((usage.usedSize / 1024 / 1024) * 10) / 10;
}

async function marks(page: Page): Promise<{ ready: number; firstToken: number }> {
  return page.evaluate(`(() => {
    const at = (name) => performance.getEntriesByName(name, 'mark')[0]?.startTime ?? NaN;
    return { ready: Math.round(at('kvscope:ready')), firstToken: Math.round(at('kvscope:first-token')) };
  })()`);
}

async function main(): Promise<void> {
  const server = await startServer();
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
    chromium: '',
  };
  console.log('kvscope UI benchmark (headless Chromium, software rendering)');

  // ---- 1. load → first token, cold and warm ----
  const { context: cold, dir } = await persistentContext();
  results.chromium = cold.browser()?.version() ?? '';
  const load: Record<string, unknown> = {};
  for (const kind of ['cold', 'warm'] as const) {
    const context = kind === 'cold' ? cold : (await persistentContext(dir)).context;
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`${server.url}/`);
    await waitReady(page);
    await page.click('[data-testid="step"]');
    await waitTokens(page, 1);
    const m = await marks(page);
    const footer = (await page.textContent('footer')) ?? '';
    load[kind] = { readyMs: m.ready, firstTokenMs: m.firstToken, fromCache: /local cache/.test(footer) };
    console.log(`  load ${kind}: model ready ${m.ready} ms, first token ${m.firstToken} ms after navigation${/local cache/.test(footer) ? ' (model files from the cache)' : ''}`);
    if (kind === 'warm') await page.evaluate(() => navigator.serviceWorker.ready);
    await context.close();
  }
  removeDir(dir);
  results.load = load;

  // the remaining measurements share one page
  const browser = await launchBrowser();
  results.chromium ||= browser.version();
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  const page = await context.newPage();
  await page.goto(`${server.url}/`);
  await waitReady(page);
  await page.uncheck('[data-testid="stop-at-eos"]');

  // ---- 2. tokens/s at contexts 128 and 512, views on vs hidden ----
  // each setting runs REPEATS times, alternating, from the same prompt (the median is reported)
  const throughput: Record<string, unknown> = {};
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const context of [128, 512]) {
    const prompt = await promptOf(page, context - RUN_TOKENS);
    const samples: Record<'on' | 'hidden', number[]> = { on: [], hidden: [] };
    const engineMs: number[] = [];
    for (let rep = 0; rep < REPEATS; rep++) {
      for (const views of rep % 2 === 0 ? [true, false] : [false, true]) {
        if (views) await page.check('[data-testid="views-live"]');
        else await page.uncheck('[data-testid="views-live"]');
        await setPrompt(page, prompt);
        samples[views ? 'on' : 'hidden'].push(Math.round((await runTokens(page, RUN_TOKENS)) * 10) / 10);
        const ms = (await page.evaluate(
          (n) => (globalThis as unknown as { __kvscope: { steps: { timings: { totalMs: number } }[] } }).__kvscope.steps.slice(-n).map((s) => s.timings.totalMs),
          RUN_TOKENS,
        )) as number[];
        engineMs.push(...ms);
      }
    }
    await page.check('[data-testid="views-live"]');
    const row = {
      viewsOnTokPerS: median(samples.on),
      viewsHiddenTokPerS: median(samples.hidden),
      engineMsPerToken: Math.round(median(engineMs) * 10) / 10,
    };
    throughput[String(context)] = { promptTokens: context - RUN_TOKENS, runTokens: RUN_TOKENS, ...row, samples };
    console.log(
      `  run to context ${context}: ${row.viewsOnTokPerS} tok/s with views, ${row.viewsHiddenTokPerS} tok/s views hidden ` +
        `(median of ${REPEATS}: ${samples.on.join('/')} vs ${samples.hidden.join('/')}; engine ${row.engineMsPerToken} ms/token)`,
    );
  }
  results.throughput = throughput;

  // ---- 3. draw times at a 1024-token context ----
  const prompt1024 = await promptOf(page, 1024 - 64);
  await setPrompt(page, prompt1024);
  await page.evaluate(() => {
    const perf = (globalThis as unknown as { __kvscopePerf?: { renders: Record<string, number[]> } }).__kvscopePerf;
    if (perf) perf.renders = {};
  });
  await runTokens(page, 64);
  // redraw the final state a few times the way a user does: switch heads, toggle the scale
  for (let i = 0; i < 8; i++) {
    await page.selectOption('[data-testid="head-select"]', String(i % 8));
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  }
  const renders = await page.evaluate(() => (globalThis as unknown as { __kvscopePerf: { renders: Record<string, number[]> } }).__kvscopePerf.renders);
  const draw: Record<string, Stats> = {};
  for (const name of ['head-grid', 'attention-heatmap', 'cache-map']) draw[name] = stats(renders[name] ?? []);
  results.draw1024 = { context: 1024, historyRows: 64, ...draw, goalMedianMs: 16 };
  console.log(
    `  draw at 1024 tokens × 64 recent steps: overview grid median ${draw['head-grid'].median} ms (p95 ${draw['head-grid'].p95}), ` +
      `zoomed heatmap median ${draw['attention-heatmap'].median} ms (p95 ${draw['attention-heatmap'].p95}), cache map median ${draw['cache-map'].median} ms`,
  );

  // ---- 4. heap after N steps ----
  await setPrompt(page, 'Once upon a time');
  const heap: Record<string, number> = { '0': await heapMB(page) };
  let done = 0;
  for (const target of HEAP_STEPS) {
    await runTokens(page, target - done);
    done = target;
    heap[String(target)] = await heapMB(page);
  }
  results.heapMB = heap;
  console.log(`  page JS heap after GC: ${Object.entries(heap).map(([k, v]) => `${k} steps ${v} MB`).join(', ')}`);

  await browser.close();
  await server.close();
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`wrote ${OUT}`);
}

await main();
