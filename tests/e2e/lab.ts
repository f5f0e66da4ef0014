/** End-to-end tests of /compare and /bench (run by tests/e2e/run.ts). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { assert, assertEqual, RESULTS_DIR, type TestCase } from './harness.ts';

async function waitStatus(page: Page, timeout = 120_000): Promise<void> {
  await page.waitForFunction(
    () => ['ready', 'error', 'crashed'].includes(document.querySelector('[data-testid="model-status"]')?.textContent ?? ''),
    null,
    { timeout },
  );
  const status = await page.textContent('[data-testid="model-status"]');
  if (status !== 'ready') throw new Error(`model status is ${status}: ${await page.textContent('[data-testid="error"]').catch(() => '')}`);
}

async function compareIdle(page: Page, timeout = 60_000): Promise<void> {
  await page.waitForFunction(() => !(document.querySelector('[data-testid="compare-step"]') as HTMLButtonElement | null)?.disabled, null, { timeout });
}

async function laneTokens(page: Page): Promise<string[][]> {
  return page.$$eval('[data-testid="compare-lane"]', (lanes) => lanes.map((lane) => [...lane.querySelectorAll('[data-testid="lane-token"]')].map((t) => t.textContent ?? '')));
}

export const LAB_TESTS: TestCase[] = [
  {
    name: 'compare: two lanes from a link step together; metrics, back, keyboard, add lane, link',
    timeoutMs: 150_000,
    async fn({ page, server }) {
      const query = 'v=1&lane=full&lane=window%3Asize%3D32&prompt=Once+upon+a+time%2C+there+was+a+little+robot+who&seed=2&t=0.8&k=40&p=0.95';
      await page.goto(`${server.url}/compare?${query}`);
      await waitStatus(page);
      await compareIdle(page);
      assertEqual(await page.locator('[data-testid="compare-lane"]').count(), 2, 'lanes');
      const specs = await page.$$eval('[data-testid="compare-lane"]', (els) => els.map((e) => e.getAttribute('data-spec')));
      assertEqual(specs, ['full', 'window:size=32'], 'lane specs from the link');

      // step both lanes 12 times (past the window, so the window lane evicts)
      for (let i = 1; i <= 12; i++) {
        await page.click('[data-testid="compare-step"]');
        await page.waitForFunction((n) => /^\d+ steps/.test(document.querySelector('[data-testid="compare-position"]')?.textContent ?? '') && document.querySelector('[data-testid="compare-position"]')!.textContent!.startsWith(`${n} steps`), i);
        await compareIdle(page);
      }
      let tokens = await laneTokens(page);
      assertEqual(tokens.map((t) => t.length), [12, 12], 'tokens per lane after 12 steps');
      await page.click('[data-testid="compare-run"]');
      await page.waitForFunction(() => (document.querySelector('[data-testid="compare-position"]')?.textContent ?? '').startsWith('44 steps'), null, { timeout: 60_000 });
      await compareIdle(page);
      tokens = await laneTokens(page);
      assertEqual(tokens.map((t) => t.length), [44, 44], 'tokens per lane after a run of 32');
      const memory = await page.$$eval('[data-testid="lane-memory"]', (els) => els.map((e) => e.textContent ?? ''));
      assert(/100% of full/.test(memory[0]) && !/100% of full/.test(memory[1]) && /32 entries\/head/.test(memory[1]), `memory per lane (${memory.join(' | ')})`);
      const kl = await page.$$eval('[data-testid="lane-kl"]', (els) => els.map((e) => e.textContent ?? ''));
      assert(/^0\.000 \/ 0\.000$|^0e\+0 \/ 0e\+0$|^0\.0e\+0/.test(kl[0]) || kl[0].startsWith('0'), `full lane has KL 0 (${kl[0]})`);
      assert(/\d/.test(kl[1]) && !kl[1].includes('–'), `window lane shows KL (${kl[1]})`);
      const agreement = await page.$$eval('[data-testid="lane-agreement"]', (els) => els.map((e) => e.textContent ?? ''));
      assertEqual(agreement[0], '100%', 'full lane agrees with itself');
      const paths = await page.$$eval('[data-testid="compare-metrics"] svg path', (els) => els.filter((e) => (e.getAttribute('d') ?? '').length > 20).length);
      assert(paths >= 4, `metrics chart draws lines (${paths})`);

      // back 4 (button, then ← three times), then step again: the same tokens (deterministic)
      const at = (n: number) => page.waitForFunction((k) => (document.querySelector('[data-testid="compare-position"]')?.textContent ?? '').startsWith(`${k} steps`), n);
      await page.click('[data-testid="compare-back"]');
      await at(43);
      await compareIdle(page);
      await page.locator('body').click({ position: { x: 5, y: 5 } });
      for (let i = 0; i < 3; i++) {
        await page.keyboard.press('ArrowLeft');
        await at(42 - i);
        await compareIdle(page);
      }
      await page.keyboard.press('ArrowRight');
      await at(41);
      await compareIdle(page);
      const again = await laneTokens(page);
      assertEqual(again.map((t) => t.join('')), tokens.map((t) => t.slice(0, 41).join('')), 'replay after stepping back');

      await page.screenshot({ path: join(RESULTS_DIR, 'compare-run.png'), fullPage: true });

      // the address carries the setup
      const href = page.url();
      assert(href.includes('lane=full') && href.includes('lane=window%3Asize%3D32') && href.includes('seed=2'), `URL carries the lanes and seed (${href})`);

      // add a lane, reset: three lanes step together
      await page.click('[data-testid="compare-add-lane"]');
      await page.click('[data-testid="compare-reset"]');
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="compare-lane"]').length === 3);
      await compareIdle(page);
      await page.click('[data-testid="compare-step"]');
      await page.waitForFunction(() => (document.querySelector('[data-testid="compare-position"]')?.textContent ?? '').startsWith('1 steps'));
      // the address is written at most every 250 ms (address-sync.ts): wait for it, then check
      await page.waitForFunction(() => location.search.includes('lane=h2o'), null, { timeout: 5_000 }).catch(() => undefined);
      assert(page.url().includes('lane=h2o'), `URL follows the new lanes (${page.url()})`);

      // chart export
      const [svg] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-svg-compare-metrics"]')]);
      const svgPath = join(RESULTS_DIR, svg.suggestedFilename());
      await svg.saveAs(svgPath);
      assert(readFileSync(svgPath, 'utf8').includes('decode step'), 'metrics SVG has the shared step axis');
      await page.screenshot({ path: join(RESULTS_DIR, 'compare.png'), fullPage: true });
    },
  },
  {
    name: 'compare: a speculative lane (lookup) shows the plain lane\'s tokens at T=0, with its round statistics',
    timeoutMs: 150_000,
    async fn({ page, server }) {
      const prompt = 'The cat sat on the mat. The dog sat on the log. The cat sat on the mat. The dog sat on the log. The cat';
      const query = `v=1&lane=window%3Asize%3D48&lane=window%3Asize%3D48+%7C+lookup&prompt=${encodeURIComponent(prompt)}&seed=1&t=0&k=0&p=1`;
      await page.goto(`${server.url}/compare?${query}`);
      await waitStatus(page);
      await compareIdle(page);
      assertEqual(await page.$$eval('[data-testid="compare-lane"]', (els) => els.map((e) => [e.getAttribute('data-spec'), e.getAttribute('data-drafter')])), [['window:size=48', ''], ['window:size=48', 'lookup:max_ngram=3,k=10']], 'lanes and drafters from the link');
      assertEqual(await page.$$eval('[data-testid="lane-drafter"]', (els) => els.map((e) => (e as HTMLInputElement).value)), ['', 'lookup'], 'drafter fields');
      const at = (n: number) => page.waitForFunction((k) => (document.querySelector('[data-testid="compare-position"]')?.textContent ?? '').startsWith(`${k} steps`), n);
      for (let i = 1; i <= 6; i++) {
        await page.click('[data-testid="compare-step"]');
        await at(i);
        await compareIdle(page);
      }
      await page.fill('[data-testid="compare-run-steps"]', '18');
      await page.click('[data-testid="compare-run"]');
      await at(24);
      await compareIdle(page);
      const tokens = await laneTokens(page);
      assertEqual(tokens[0].length, 24, 'plain lane tokens');
      assertEqual(tokens[1], tokens[0], 'the speculative lane shows the plain lane\'s tokens (greedy is lossless)');
      const origins = await page.$$eval('[data-testid="compare-lane"]', (lanes) => lanes.map((l) => [...l.querySelectorAll('[data-testid="lane-token"]')].map((t) => t.getAttribute('data-origin') ?? '')));
      assert(origins[0].every((o) => o === ''), 'plain tokens have no origin');
      assert(origins[1].every((o) => ['draft', 'correction', 'bonus', 'target'].includes(o)), `speculative tokens have an origin (${origins[1].join(',')})`);
      assert(origins[1].includes('draft'), 'some drafts were accepted');
      const calls = (await page.textContent('[data-testid="compare-lane"]:nth-child(2) [data-testid="lane-calls"]')) ?? '';
      const m = /^(\d+\.\d+) · (\d+) rounds for 24 tokens/.exec(calls);
      assert(m !== null && Number(m[1]) < 1, `target calls per token < 1 (${calls})`);
      const alpha = (await page.textContent('[data-testid="lane-acceptance"]')) ?? '';
      // α = accepted / verified; the drafted count (some never verified) beside it
      const a = /^(\d+)% \((\d+)\/(\d+); (\d+) drafted\)/.exec(alpha);
      assert(a !== null && Math.abs(Number(a[1]) - (100 * Number(a[2])) / Number(a[3])) <= 0.5 && Number(a[4]) >= Number(a[3]), `acceptance rate shown (${alpha})`);
      assert((await page.locator('[data-testid="lane-chart-calls"] path').count()) >= 1, 'calls-per-token chart');
      assert(page.url().includes('lane=window%3Asize%3D48+%7C+lookup'), `URL keeps the drafter (${page.url()})`);
      // a bad drafter is explained inline
      await page.fill('[data-testid="lane-drafter"] >> nth=1', 'lookahead');
      const error = (await page.textContent('[data-testid="lane-drafter-error"]')) ?? '';
      assert(/unknown drafter "lookahead"/.test(error), `inline drafter error (${error})`);
      await page.screenshot({ path: join(RESULTS_DIR, 'compare-spec.png'), fullPage: true });
    },
  },
  {
    name: 'bench: a tiny perplexity evaluation runs to completion; table, chart, JSON',
    timeoutMs: 120_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/bench`);
      await waitStatus(page);
      for (const id of ['full', 'streaming', 'h2o', 'razor']) {
        if (await page.isChecked(`[data-testid="bench-policy-${id}"]`)) await page.uncheck(`[data-testid="bench-policy-${id}"]`);
      }
      await page.check('[data-testid="bench-policy-window"]');
      await page.fill('[data-testid="bench-budgets"]', '32, 64');
      await page.fill('[data-testid="bench-tokens"]', '128');
      await page.fill('[data-testid="bench-windows"]', '1');
      const plan = (await page.textContent('[data-testid="bench-plan"]')) ?? '';
      assert(/2 runs: window@32, window@64/.test(plan), `plan (${plan})`);
      await page.click('[data-testid="bench-run"]');
      await page.waitForSelector('[data-testid="bench-finished"]', { timeout: 90_000 });
      const rows = await page.$$eval('[data-testid="bench-row"] td', (els) => els.map((e) => e.textContent?.trim() ?? ''));
      assertEqual(rows[0], 'window', 'table row policy');
      assert(/^\d+\.\d\d \(32\)$/.test(rows[1]) && /^\d+\.\d\d \(\d+\)$/.test(rows[2]), `perplexity cells (${rows.join(' | ')})`);
      const progress = (await page.textContent('[data-testid="bench-progress-text"]')) ?? '';
      assert(/^100%/.test(progress), `progress at 100% (${progress})`);
      const circles = await page.locator('[data-testid="bench-chart"] svg circle').count();
      assertEqual(circles, 2, 'one point per budget in the chart');
      const [json] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="bench-download-json"]')]);
      const path = join(RESULTS_DIR, json.suggestedFilename());
      await json.saveAs(path);
      const report = JSON.parse(readFileSync(path, 'utf8'));
      assertEqual(report.format, 'kvscope-eval', 'report format');
      assertEqual(report.records[0].rows.map((r: { spec: string }) => r.spec), ['window:size=32', 'window:size=64'], 'report rows');
      const [png] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-png-bench-ppl"]')]);
      const pngPath = join(RESULTS_DIR, png.suggestedFilename());
      await png.saveAs(pngPath);
      assert(readFileSync(pngPath).subarray(1, 4).toString() === 'PNG', 'chart PNG');
      await page.screenshot({ path: join(RESULTS_DIR, 'bench.png'), fullPage: true });
    },
  },
  {
    name: 'bench: the spec task (lookup, model:gamma=4) against plain decoding; table, chart, JSON, Cancel',
    timeoutMs: 240_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/bench`);
      await waitStatus(page);
      await page.check('[data-testid="bench-task-spec"]');
      assert(((await page.textContent('[data-testid="bench-spec-timing"]')) ?? '').includes('one at a time'), 'the page says why the runs go one at a time');
      for (const id of ['model', 'lookup', 'infinigram', 'omnidraft', 'online', 'self']) {
        if (await page.isChecked(`[data-testid="bench-drafter-${id}"]`)) await page.uncheck(`[data-testid="bench-drafter-${id}"]`);
      }
      await page.check('[data-testid="bench-drafter-lookup"]');
      await page.fill('[data-testid="bench-drafter-spec-model"]', 'model:gamma=4');
      await page.check('[data-testid="bench-drafter-model"]');
      await page.fill('[data-testid="bench-spec-prompts"]', '1');
      await page.fill('[data-testid="bench-spec-tokens"]', '16');
      const plan = (await page.textContent('[data-testid="bench-plan"]')) ?? '';
      // an empty model= (the manifest's draft, named once it ran: the table shows it) reads as such
      assert(/^2 runs: model:gamma=4,model=‹manifest’s draft›,policy=full · lookup:max_ngram=3,k=10 on prose \+ python-doc/.test(plan), `plan (${plan})`);
      await page.click('[data-testid="bench-run"]');
      await page.waitForSelector('[data-testid="bench-finished"]', { timeout: 150_000 });
      const rows = await page.$$eval('[data-testid="bench-spec-row"]', (els) => els.map((e) => [e.getAttribute('data-spec'), e.getAttribute('data-text')]));
      assertEqual(rows, [
        ['model:gamma=4,model=kvscope-draft-2l,policy=full', 'prose'],
        ['model:gamma=4,model=kvscope-draft-2l,policy=full', 'python-doc'],
        ['lookup:max_ngram=3,k=10', 'prose'],
        ['lookup:max_ngram=3,k=10', 'python-doc'],
      ], 'rows: drafter × text set');
      const cell = (id: string) => page.$$eval(`[data-testid="${id}"]`, (els) => els.map((e) => e.textContent?.trim() ?? ''));
      const calls = await cell('spec-calls');
      assert(calls.every((c) => /^\d\.\d{3}$/.test(c) && Number(c) > 0 && Number(c) <= 1), `calls per token (${calls.join(' | ')})`);
      const speedups = await cell('spec-speedup');
      assert(speedups.every((c) => /^\d+\.\d\d×$/.test(c) && Number(c.slice(0, -1)) > 0), `speed-ups (${speedups.join(' | ')})`);
      assertEqual(await cell('spec-identical'), ['yes', 'yes', 'yes', 'yes'], 'greedy speculative decoding gives plain decoding\'s tokens');
      const progress = (await page.textContent('[data-testid="bench-progress-text"]')) ?? '';
      assert(/^100%/.test(progress), `progress at 100% (${progress})`);
      assertEqual(await page.locator('[data-testid="bench-chart"] [data-testid="spec-bar"]').count(), 8, 'a bar per row in each of the two panels');
      assertEqual(await page.locator('[data-testid="bench-chart"] [data-testid="spec-reference"]').count(), 2, 'the 1 / 1× reference lines');
      const [json] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="bench-download-json"]')]);
      const path = join(RESULTS_DIR, json.suggestedFilename());
      await json.saveAs(path);
      const report = JSON.parse(readFileSync(path, 'utf8'));
      assertEqual([report.format, report.task, report.cancelled], ['kvscope-eval', 'spec', false], 'report');
      assertEqual(report.records.map((r: { draft: string }) => r.draft), ['model:gamma=4', 'lookup:max_ngram=3,k=10'], 'report records');
      await page.screenshot({ path: join(RESULTS_DIR, 'bench-spec.png'), fullPage: true });

      // Cancel: a longer run stops between decodes and says so
      await page.fill('[data-testid="bench-spec-prompts"]', '8');
      await page.fill('[data-testid="bench-spec-tokens"]', '64');
      await page.click('[data-testid="bench-run"]');
      await page.waitForFunction(() => /prompt [2-8]\/8/.test(document.querySelector('[data-testid="bench-progress-text"]')?.textContent ?? ''), null, { timeout: 90_000 });
      await page.click('[data-testid="bench-cancel"]');
      await page.waitForSelector('[data-testid="bench-cancelled"]', { timeout: 30_000 });
      assert(((await page.textContent('[data-testid="bench-progress-text"]')) ?? '').includes('cancelled'), 'progress says cancelled');
      assert(await page.isEnabled('[data-testid="bench-run"]'), 'Run is offered again');
    },
  },
];
