/**
 * End-to-end tests of the explorer in headless Chromium (npm run test:e2e builds first).
 * Artifacts (screenshots) go to test-results/.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { assert, assertEqual, canvasStats, RESULTS_DIR, runTests, stepTimes, type TestCase, tokenCount, waitIdle, waitReady, waitTokens } from './harness.ts';
import { LAB_TESTS } from './lab.ts';
import { SPEC_TESTS } from './spec.ts';
import { LINK_TESTS } from './links.ts';
import { NOTEBOOK_TESTS } from './notebooks.ts';
import { LINK_LAB_TESTS } from './lab-links.ts';
import { SECURITY_TESTS } from './security.ts';
import { MODEL_TESTS } from './models.ts';

const MODEL = '/models/kvscope-llama-8l';

const tests: TestCase[] = [
  {
    name: 'explorer: load, step 10, step back 3, views, run/pause, policy, exports',
    timeoutMs: 180_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/`);
      // useful while loading: the prompt is there before the model
      const prompt = await page.inputValue('[data-testid="prompt"]');
      assert(prompt.length > 20, 'the prompt editor shows the default prompt while loading');
      await waitReady(page);
      assertEqual(await page.textContent('[data-testid="model-status"]'), 'ready', 'model-status');
      const streamText = (await page.textContent('[data-testid="token-stream"]')) ?? '';
      assert(streamText.includes('beginning'), `token stream shows the prompt (got ${streamText.slice(0, 80)})`);
      assert(!streamText.includes('\uFFFD'), 'no replacement characters in the token stream');

      // step 10 tokens
      await stepTimes(page, 10);
      const ten = await page.$$eval('[data-testid="token"]', (els) => els.map((e) => e.querySelector('.piece')?.textContent ?? ''));
      assertEqual(ten.length, 10, 'tokens after 10 steps');
      const probs = await page.$$eval('[data-testid="token"] .p', (els) => els.map((e) => Number(e.textContent)));
      assert(probs.every((p) => p >= 0 && p <= 1), `every token shows its probability (${probs.join(', ')})`);

      // views: attention canvases have ink
      await page.waitForTimeout(300);
      const heat = await canvasStats(page, 'attention-heatmap');
      assert(heat.inked > 2000 && heat.colours > 8, `attention heatmap is drawn (${JSON.stringify(heat)})`);
      const grid = await canvasStats(page, 'head-grid');
      assert(grid.inked > 2000 && grid.colours > 8, `head grid is drawn (${JSON.stringify(grid)})`);
      const gauge = (await page.textContent('[data-testid="memory-gauge"]')) ?? '';
      assert(/held of/.test(gauge) && /bits per stored element/.test(gauge), `memory gauge shows bytes and bits (${gauge.slice(0, 120)})`);

      // step back 3
      for (let i = 0; i < 3; i++) {
        await page.click('[data-testid="step-back"]');
        await waitTokens(page, 9 - i);
        await waitIdle(page);
      }
      const seven = await page.$$eval('[data-testid="token"]', (els) => els.map((e) => e.querySelector('.piece')?.textContent ?? ''));
      assertEqual(seven, ten.slice(0, 7), 'token stream after stepping back 3');

      // stepping forward again replays the same tokens (seeded sampling)
      await page.click('[data-testid="step"]');
      await waitTokens(page, 8);
      await waitIdle(page);
      const eight = await page.$$eval('[data-testid="token"]', (els) => els.map((e) => e.querySelector('.piece')?.textContent ?? ''));
      assertEqual(eight, ten.slice(0, 8), 'deterministic replay after stepping back');

      // keyboard: ← back, → step, ? help
      await page.locator('body').click({ position: { x: 5, y: 5 } });
      await page.keyboard.press('ArrowLeft');
      await waitTokens(page, 7);
      await waitIdle(page);
      await page.keyboard.press('ArrowRight');
      await waitTokens(page, 8);
      await waitIdle(page);
      await page.keyboard.press('?');
      await page.waitForSelector('[data-testid="help-overlay"]');
      const help = (await page.textContent('[data-testid="help-overlay"]')) ?? '';
      assert(help.includes('Step back') && help.includes('Space'), 'help overlay lists the shortcuts');
      await page.keyboard.press('Escape');
      await page.waitForSelector('[data-testid="help-overlay"]', { state: 'detached' });

      // run / pause
      await page.fill('[data-testid="run-steps"]', '400');
      await page.uncheck('[data-testid="stop-at-eos"]');
      await page.click('[data-testid="run"]');
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="token"]').length >= 20, null, { timeout: 30_000 });
      const runText = await page.textContent('[data-testid="run"]');
      assert(/Pause/.test(runText ?? ''), `run button turns into Pause while running (${runText})`);
      await page.click('[data-testid="run"]');
      await waitIdle(page);
      const paused = await tokenCount(page);
      assert(paused >= 20 && paused < 408, `run paused after ${paused} tokens`);
      await page.waitForTimeout(600);
      assertEqual(await tokenCount(page), paused, 'no tokens arrive after pausing');
      // space toggles run / pause too
      await page.locator('body').click({ position: { x: 5, y: 5 } });
      await page.keyboard.press(' ');
      await page.waitForFunction((n) => document.querySelectorAll('[data-testid="token"]').length > n + 3, paused, { timeout: 30_000 });
      await page.keyboard.press(' ');
      await waitIdle(page);

      // clicking a token shows that step
      await page.locator('[data-testid="token"]').nth(2).click();
      await page.waitForFunction(() => /showing step 2\b/.test(document.querySelector('[data-testid="position"]')?.textContent ?? ''));
      await page.waitForTimeout(300);
      const old = await canvasStats(page, 'attention-heatmap');
      assert(old.inked > 1000, 'the selected step has attention views');

      // policy picker: a sliding window, applied live
      await page.selectOption('[data-testid="policy-select"]', 'window');
      await page.fill('[data-testid="policy-param-size"]', '16');
      await page.click('[data-testid="policy-apply"]');
      await page.waitForSelector('[data-testid="notice"]');
      const notice = (await page.textContent('[data-testid="notice"]')) ?? '';
      assert(notice.includes('window:size=16'), `policy switch notice (${notice})`);
      const before = await tokenCount(page);
      await page.click('[data-testid="step"]');
      await waitTokens(page, before + 1);
      await waitIdle(page);
      const gauge2 = (await page.textContent('[data-testid="memory-gauge"]')) ?? '';
      const pct = Number(/·\s*([\d.]+)%/.exec(gauge2)?.[1] ?? '100');
      assert(pct < 100, `a window holds less than the full cache (${pct}%)`);

      // exports: trace JSON, chart PNG and SVG
      const [traceDownload] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-trace"]')]);
      const tracePath = join(RESULTS_DIR, traceDownload.suggestedFilename());
      await traceDownload.saveAs(tracePath);
      const trace = JSON.parse(readFileSync(tracePath, 'utf8'));
      assertEqual(trace.version, 1, 'trace version');
      const steps = trace.events.filter((e: { kind: string }) => e.kind === 'step').length;
      assertEqual(steps, await tokenCount(page), 'trace steps = generated tokens');
      assert(trace.events.some((e: { kind: string }) => e.kind === 'policy'), 'the trace records the policy switch');

      const [png] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-png-head-grid"]')]);
      const pngPath = join(RESULTS_DIR, png.suggestedFilename());
      await png.saveAs(pngPath);
      const pngBytes = readFileSync(pngPath);
      assert(pngBytes.subarray(1, 4).toString() === 'PNG' && pngBytes.length > 5000, `head grid PNG (${pngBytes.length} bytes)`);
      const [svg] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-svg-cache-map"]')]);
      const svgPath = join(RESULTS_DIR, svg.suggestedFilename());
      await svg.saveAs(svgPath);
      const svgText = readFileSync(svgPath, 'utf8');
      assert(svgText.startsWith('<svg') && svgText.includes('<image') && svgText.includes('token index'), 'cache map SVG embeds the canvas and the axes');

      await page.locator('[data-testid="token"]').last().click();
      await page.waitForTimeout(400);
      await page.screenshot({ path: join(RESULTS_DIR, 'explorer.png'), fullPage: true });
    },
  },
  {
    name: 'eviction family: H2O, live swap to StreamingLLM, reference lane, heavy hitters, retrieval heads',
    timeoutMs: 150_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/`);
      await waitReady(page);
      // H2O with a budget below the prompt length, so it evicts from the first step on
      await page.selectOption('[data-testid="policy-select"]', 'h2o');
      await page.fill('[data-testid="policy-param-heavy"]', '12');
      await page.fill('[data-testid="policy-param-recent"]', '12');
      await page.click('[data-testid="reset"]');
      await waitIdle(page);
      await page.check('[data-testid="reference-toggle"]');
      await page.waitForFunction(() => (document.querySelector('[data-testid="reference-toggle"]') as HTMLInputElement).checked);
      await waitIdle(page);
      await stepTimes(page, 6);

      // reference lane: values of the current step and a drawn chart
      const values = async () => (await page.textContent('[data-testid="reference-values"]')) ?? '';
      const first = await values();
      assert(/At step 5: KL [\d.e+-]+ nats · top-1 (agrees|differs) · attention mass held [\d.]+% · memory [\d.]+%/.test(first), `reference values (${first})`);
      const strokes = await page.$$eval('[data-testid="reference-metrics"] svg path', (paths) => paths.map((p) => (p.getAttribute('d') ?? '').split('L').length - 1));
      assert(strokes.length >= 4 && strokes.every((n) => n >= 5), `reference charts have lines over the steps (${strokes.join(', ')})`);

      // heavy hitters: H2O's accumulated attention for the selected head, with the budget cut
      const hh = (await page.textContent('[data-testid="heavy-hitters-summary"]')) ?? '';
      assert(/L0 kv0: \d+ scored entries/.test(hh) && /keep threshold/.test(hh), `heavy-hitter scores (${hh})`);
      const bars = await canvasStats(page, 'heavy-hitters-bars');
      assert(bars.inked > 300, `heavy-hitter bars are drawn (${JSON.stringify(bars)})`);

      // retrieval heads: calibration maps of every layer × head
      const cells = await page.$$eval('[data-testid="retrieval-heads"] rect[aria-label^="layer "]', (r) => r.length);
      assert(cells >= 3 * 64, `retrieval-head maps (${cells} cells)`);
      const budget = (await page.textContent('[data-testid="budget-bars"]')) ?? '';
      assert(/entries held/.test(budget), 'budget bars');
      // the forgotten overlay marks tokens H2O evicted
      const forgotten = await page.$$eval('[data-testid="token-stream"] .forgot', (els) => els.map((e) => e.getAttribute('title') ?? ''));
      assert(forgotten.length > 0 && forgotten.some((t) => /forgotten by \d+ of 16 KV heads/.test(t)), `forgotten tokens (${forgotten.length})`);

      // swap to StreamingLLM mid-decode
      const mapHash = () => page.$eval('[data-testid="cache-map"]', (c) => (c as HTMLCanvasElement).toDataURL());
      const beforeSwap = await mapHash();
      await page.selectOption('[data-testid="policy-select"]', 'streaming');
      await page.fill('[data-testid="policy-param-sinks"]', '4');
      await page.fill('[data-testid="policy-param-recent"]', '8');
      await page.click('[data-testid="policy-apply"]');
      await page.waitForSelector('[data-testid="cache-map-before"]');
      const notice = (await page.textContent('[data-testid="notice"]')) ?? '';
      assert(/streaming:sinks=4,recent=8/.test(notice), `switch notice (${notice})`);
      assert((await mapHash()) !== beforeSwap, 'the cache map changes with the swap');
      const before = await canvasStats(page, 'cache-map-before');
      assert(before.inked > 1000, 'the cache map before the switch is drawn');
      assert((await page.locator('[data-testid="switch-marker"]').count()) === 1, 'a switch marker in the token stream');
      await page.locator('section[aria-label="Cache map"]').screenshot({ path: join(RESULTS_DIR, 'cache-map-switch.png') });

      for (let i = 7; i <= 9; i++) {
        await page.click('[data-testid="step"]');
        await waitTokens(page, i);
        await waitIdle(page);
      }
      const after = await values();
      assert(/^At step 8:/.test(after.trim()) && after !== first, `reference values update after the swap (${after})`);
      const markers = await page.$$eval('[data-testid="reference-metrics"] svg line[stroke-dasharray="3 3"]', (l) => l.length);
      assert(markers >= 4, `the switch is marked on the reference charts (${markers})`);
      const running = (await page.textContent('[data-testid="budget-bars"]')) ?? '';
      assert(/entries held/.test(running), 'budget bars after the swap');
      // the new charts export like the others
      const [svg] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-svg-reference-metrics"]')]);
      const svgPath = join(RESULTS_DIR, svg.suggestedFilename());
      await svg.saveAs(svgPath);
      const svgText = readFileSync(svgPath, 'utf8');
      assert(svgText.startsWith('<svg') && svgText.includes('KL(full ‖ policy)') && svgText.includes('decode step'), 'reference-lane SVG has its axes');
      const [png] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-png-heavy-hitters-L0-kv0"]')]);
      const pngPath = join(RESULTS_DIR, png.suggestedFilename());
      await png.saveAs(pngPath);
      assert(readFileSync(pngPath).subarray(1, 4).toString() === 'PNG', 'heavy-hitter PNG');
      await page.waitForTimeout(300);
      await page.screenshot({ path: join(RESULTS_DIR, 'eviction-family.png'), fullPage: true });
    },
  },
  {
    name: 'a prompt longer than the context gives a clear message; editing it recovers',
    async fn({ page, server }) {
      await page.goto(`${server.url}/`);
      await waitReady(page);
      const original = await page.inputValue('[data-testid="prompt"]');
      await page.fill('[data-testid="prompt"]', 'the quick brown fox jumps over the lazy dog. '.repeat(160));
      await page.waitForFunction(() => /longer than the context/.test(document.querySelector('[data-testid="prompt-tokens"]')?.textContent ?? ''));
      await page.click('[data-testid="reset"]');
      await page.waitForSelector('[data-testid="error"]');
      const message = (await page.textContent('[data-testid="error"]')) ?? '';
      assert(/context holds 1024/.test(message), `error explains the context limit (${message})`);
      await page.click('[data-testid="dismiss"]');
      await page.fill('[data-testid="prompt"]', original);
      await page.click('[data-testid="reset"]');
      await waitIdle(page);
      await page.click('[data-testid="step"]');
      await waitTokens(page, 1);
    },
  },
  {
    name: 'a missing model file is reported by name; Retry loads once it is back',
    async fn({ page, server, allowErrors }) {
      allowErrors(/404|Failed to load resource/);
      server.faults.set(`${MODEL}/model.onnx.part1`, 404);
      await page.goto(`${server.url}/`);
      await page.waitForSelector('[data-testid="error"]', { timeout: 60_000 });
      const message = (await page.textContent('[data-testid="error"]')) ?? '';
      assert(/model\.onnx\.part1: file is missing/.test(message), `names the missing file (${message})`);
      assertEqual(await page.textContent('[data-testid="model-status"]'), 'error', 'model-status');
      server.faults.clear();
      await page.click('[data-testid="retry"]');
      await waitReady(page);
    },
  },
  {
    name: 'a corrupt model file fails its sha256 check; Retry recovers',
    async fn({ page, server }) {
      server.faults.set(`${MODEL}/model.onnx.part0`, 'corrupt');
      await page.goto(`${server.url}/`);
      await page.waitForSelector('[data-testid="error"]', { timeout: 60_000 });
      const message = (await page.textContent('[data-testid="error"]')) ?? '';
      assert(/model\.onnx\.part0: sha256 mismatch/.test(message), `reports the sha256 mismatch (${message})`);
      server.faults.clear();
      await page.click('[data-testid="retry"]');
      await waitReady(page);
    },
  },
  {
    name: 'an unavailable WebAssembly runtime is reported; Retry recovers',
    async fn({ page, server, allowErrors }) {
      allowErrors(/404|Failed to load resource/);
      server.faults.set('/ort/ort-wasm-simd-threaded.wasm', 404);
      await page.goto(`${server.url}/`);
      await page.waitForSelector('[data-testid="error"]', { timeout: 60_000 });
      const message = (await page.textContent('[data-testid="error"]')) ?? '';
      assert(/WebAssembly runtime is unavailable/.test(message), `explains the wasm problem (${message})`);
      server.faults.clear();
      await page.click('[data-testid="retry"]');
      await waitReady(page);
    },
  },
  {
    name: 'a worker crash is reported; Restart engine brings the explorer back',
    async fn({ page, server, allowErrors }) {
      allowErrors(/crashed on request/);
      await page.goto(`${server.url}/`);
      await waitReady(page);
      await page.click('[data-testid="step"]');
      await waitTokens(page, 1);
      await page.evaluate(() => (globalThis as unknown as { __kvscope: { crashWorker(): void } }).__kvscope.crashWorker());
      await page.waitForSelector('[data-testid="restart"]');
      assertEqual(await page.textContent('[data-testid="model-status"]'), 'crashed', 'model-status');
      const message = (await page.textContent('[data-testid="error"]')) ?? '';
      assert(/stopped unexpectedly/.test(message), `crash message (${message})`);
      await page.click('[data-testid="restart"]');
      await waitReady(page);
      await page.click('[data-testid="step"]');
      await waitTokens(page, 1);
    },
  },
  {
    name: 'works offline once loaded (service worker + model files cached by sha256)',
    persistent: true,
    async fn({ page, context, server, allowErrors }) {
      allowErrors(/ERR_INTERNET_DISCONNECTED|Failed to load resource|Failed to fetch/);
      await page.goto(`${server.url}/`);
      await waitReady(page);
      await page.evaluate(async () => {
        await navigator.serviceWorker.ready;
      });
      await context.setOffline(true);
      await page.reload();
      await waitReady(page, 60_000);
      const footer = (await page.textContent('footer')) ?? '';
      assert(/from the local cache/.test(footer), `model came from the cache (${footer})`);
      await page.click('[data-testid="step"]');
      await waitTokens(page, 1);
      await context.setOffline(false);
    },
  },
  {
    name: 'trace import: export, reload, import → the same tokens and cache map, read-only; a bad file changes nothing',
    timeoutMs: 150_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/`);
      await waitReady(page);
      // a window shorter than the prompt, then a live switch: the map has evictions and the stream a marker
      await page.selectOption('[data-testid="policy-select"]', 'window');
      await page.fill('[data-testid="policy-param-size"]', '24');
      await page.click('[data-testid="reset"]');
      await waitIdle(page);
      await stepTimes(page, 6);
      await page.selectOption('[data-testid="policy-select"]', 'streaming');
      await page.fill('[data-testid="policy-param-sinks"]', '4');
      await page.fill('[data-testid="policy-param-recent"]', '12');
      await page.click('[data-testid="policy-apply"]');
      await page.waitForSelector('[data-testid="notice"]');
      for (let i = 7; i <= 9; i++) {
        await page.click('[data-testid="step"]');
        await waitTokens(page, i);
        await waitIdle(page);
      }
      const pieces = () => page.$$eval('[data-testid="token"]', (els) => els.map((e) => e.querySelector('.piece')?.textContent ?? ''));
      const streamText = () => page.textContent('[data-testid="token-stream"]');
      const mapCodes = () => page.evaluate(() => Array.from((globalThis as unknown as { __kvscope: { cacheMap: { codes: Uint8Array } } }).__kvscope.cacheMap.codes));
      const mapImage = () => page.$eval('[data-testid="cache-map"]', (c) => (c as HTMLCanvasElement).toDataURL());
      await page.waitForTimeout(300);
      const live = { pieces: await pieces(), stream: await streamText(), codes: await mapCodes(), image: await mapImage() };
      assert(live.codes.includes(4 /* CELL.EVICTED */), 'the live cache map marks the last evictions');
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-trace"]')]);
      const tracePath = join(RESULTS_DIR, download.suggestedFilename());
      await download.saveAs(tracePath);
      const header = JSON.parse(readFileSync(tracePath, 'utf8')).header;
      assert(typeof header.prompt === 'string' && header.prompt.length > 20, 'the exported header carries the prompt text');
      assertEqual(
        header.switches.map((s: { atStep: number; to: string }) => [s.atStep, s.to]),
        [[6, 'streaming:sinks=4,recent=12,positions=p2']],
        'the exported header lists the switch',
      );

      // a fresh page (the bare address: a reload would replay the session from its link)
      await page.goto(`${server.url}/`);
      await waitReady(page);
      assertEqual(await tokenCount(page), 0, 'a fresh page has no generated tokens');

      // a file this app cannot read: the problem is named, nothing changes
      await page.setInputFiles('[data-testid="trace-import"]', { name: 'broken.json', mimeType: 'application/json', buffer: Buffer.from('{"version": 99, "header": {}, "events": []}') });
      await page.waitForSelector('[data-testid="error"]');
      const message = (await page.textContent('[data-testid="error"]')) ?? '';
      assert(/broken\.json: this trace is version 99, written by a newer kvscope/.test(message), `names the problem (${message})`);
      assertEqual(await page.locator('[data-testid="replay-banner"]').count(), 0, 'no replay after a bad file');
      assert(!(await page.isDisabled('[data-testid="step"]')), 'the live session is still usable');
      await page.click('[data-testid="dismiss"]');

      // the exported file: the same tokens and cache map, read-only
      await page.setInputFiles('[data-testid="trace-import"]', tracePath);
      await page.waitForSelector('[data-testid="replay-banner"]');
      await page.waitForTimeout(300);
      const banner = (await page.textContent('[data-testid="replay-banner"]')) ?? '';
      assert(/Read-only replay of kvscope-trace-.*9 steps/.test(banner), `replay note (${banner.slice(0, 120)})`);
      assertEqual(await pieces(), live.pieces, 'tokens after import');
      assertEqual(await streamText(), live.stream, 'token stream after import');
      assertEqual(await mapCodes(), live.codes, 'cache map after import');
      assert((await mapImage()) === live.image, 'the cache map is drawn the same');
      assertEqual(await page.locator('[data-testid="switch-marker"]').count(), 1, 'the switch marker');
      assert(await page.isDisabled('[data-testid="run"]'), 'Run needs the model');
      assert(await page.isDisabled('[data-testid="step"]'), 'Step is off at the end of the trace');
      assert(await page.isDisabled('[data-testid="policy-select"]'), 'the policy (and Apply now) needs the model');
      assert(await page.isDisabled('[data-testid="reset"]'), 'Reset needs live mode');
      for (const id of ['prompt', 'temperature', 'run-steps', 'stop-at-eos']) assert(await page.isDisabled(`[data-testid="${id}"]`), `the trace's setup (${id}) is read-only`);
      await page.waitForSelector('[data-testid="replay-setup-note"]');
      await page.click('[data-testid="step-back"]');
      await page.waitForFunction(() => /showing step 7\b/.test(document.querySelector('[data-testid="position"]')?.textContent ?? ''));
      assertEqual(await tokenCount(page), 9, 'stepping back in a replay keeps every recorded token');
      await page.click('[data-testid="step"]');
      await page.waitForFunction(() => /showing step 8\b/.test(document.querySelector('[data-testid="position"]')?.textContent ?? ''));
      // an old step's views come from the trace too
      await page.locator('[data-testid="token"]').nth(1).click();
      await page.waitForFunction(() => /showing step 1\b/.test(document.querySelector('[data-testid="position"]')?.textContent ?? ''));
      await page.waitForTimeout(300);
      const old = await canvasStats(page, 'cache-map');
      assert(old.inked > 500, `the cache map of step 1 is drawn (${JSON.stringify(old)})`);
      await page.screenshot({ path: join(RESULTS_DIR, 'trace-replay.png'), fullPage: true });

      // back to live mode: the trace's setup runs with the model
      await page.click('[data-testid="leave-replay"]');
      await page.waitForSelector('[data-testid="replay-banner"]', { state: 'detached' });
      await waitIdle(page);
      await page.click('[data-testid="step"]');
      await waitTokens(page, 1);
      await waitIdle(page);
      assertEqual((await pieces())[0], live.pieces[0], 'live again: the rerun draws the same first token');
    },
  },
  {
    name: 'explorer: a typed composition applied live; its spec in the picker and the stream, the cache map shrinks; a bad spec changes nothing',
    timeoutMs: 150_000,
    async fn({ page, server }) {
      type Shown = { cacheMap: { codes: Uint8Array }; memory: { heldEntries: number }; model: { layers: number; kvHeads: number } };
      const held = () =>
        page.evaluate(() => {
          const app = (globalThis as unknown as { __kvscope: Shown }).__kvscope;
          return { cells: Array.from(app.cacheMap.codes).filter((c) => c === 1 /* CELL.HELD */).length, entries: app.memory.heldEntries, heads: app.model.layers * app.model.kvHeads };
        });
      await page.goto(`${server.url}/`);
      await waitReady(page);
      await stepTimes(page, 4);
      const spec = page.locator('[data-testid="policy-spec"]');
      assertEqual(await spec.inputValue(), 'full', 'the spec field shows the picked policy');
      const full = await held();
      assert(full.entries > full.heads * 32, `the full cache holds more than a window of 32 (${JSON.stringify(full)})`);

      // typing in the field is never a shortcut: space, arrows and "?" stay in the text
      await spec.click();
      await page.keyboard.press('End');
      await page.keyboard.type(' ?');
      await page.keyboard.press('ArrowLeft');
      await page.waitForTimeout(300);
      assertEqual(await page.locator('[data-testid="help-overlay"]').count(), 0, 'no help overlay while typing');
      assertEqual(await tokenCount(page), 4, 'no step or run while typing');
      assertEqual(await spec.inputValue(), 'full ?', 'the keys went into the field');

      // a bad spec: the engine's message next to the field, nothing else changes
      await spec.fill('window:size=32 + h2o:heavy=8,recnt=8');
      await page.keyboard.press('Enter');
      await page.waitForSelector('[data-testid="policy-spec-error"]');
      const problem = (await page.textContent('[data-testid="policy-spec-error"]')) ?? '';
      assert(/h2o: unknown parameter "recnt" \(did you mean recent\?\)/.test(problem), `names the problem (${problem})`);
      assertEqual(await page.inputValue('[data-testid="policy-select"]'), 'full', 'the picker is unchanged');
      assertEqual(await page.locator('[data-testid="switch-marker"]').count(), 0, 'no switch');
      assertEqual((await held()).entries, full.entries, 'the cache is unchanged');

      // the composition, typed and applied live (Apply now)
      await spec.fill('window:size=32 + h2o:heavy=8,recent=8');
      await page.click('[data-testid="policy-apply"]');
      await page.waitForSelector('[data-testid="switch-marker"]');
      await waitIdle(page);
      const composed = 'window:size=32 + h2o:heavy=8,recent=8,accumulate=sum,gqa=sum';
      assertEqual(await page.locator('[data-testid="policy-spec-error"]').count(), 0, 'the message is gone');
      assertEqual(await spec.inputValue(), composed, 'the field shows the canonical composition');
      assertEqual(await page.inputValue('[data-testid="policy-select"]'), 'window', 'first member in the picker');
      assertEqual(await page.inputValue('[data-testid="policy-select-1"]'), 'h2o', '"then" member in the picker');
      assertEqual(await page.inputValue('[data-testid="policy-param-1-heavy"]'), '8', 'its parameters');
      const notice = (await page.textContent('[data-testid="notice"]')) ?? '';
      assert(notice.includes(`Policy switched to ${composed}`), `switch notice (${notice})`);
      assertEqual(((await page.textContent('[data-testid="switch-marker"]')) ?? '').trim(), '⇄ window + h2o', 'the stream marks the switch');
      assert(((await page.textContent('[data-testid="switch-before-label"]')) ?? '').includes('full'), 'the map shows the cache before the switch');
      const after = await held();
      assertEqual(after.entries, after.heads * 16, 'H2O keeps 8 heavy + 8 recent of the window per head');
      assertEqual(after.cells, after.heads * 16, 'the cache map holds as many cells');
      await page.waitForTimeout(300);
      await page.screenshot({ path: join(RESULTS_DIR, 'explorer-composition.png'), fullPage: true });

      // decoding on under the composition
      await page.click('[data-testid="step"]');
      await waitTokens(page, 5);
      await waitIdle(page);
      assertEqual((await held()).entries, after.heads * 16, 'the budget holds at the next step');
      const active = (await page.textContent('.apply .active')) ?? '';
      assert(active.includes(composed), `the running policy (${active})`);
    },
  },
  {
    name: 'merge view: a merging policy (chelsea) applied live, step, pick a merged entry: its tokens light up in the token stream and the cache map',
    timeoutMs: 150_000,
    async fn({ page, server }) {
      type Shown = { pickedMerge: { first: number; origins: number[] } | null; merges: { entries: unknown[] } | null };
      const shown = () =>
        page.evaluate(() => {
          const app = (globalThis as unknown as { __kvscope: Shown }).__kvscope;
          return { picked: app.pickedMerge ? { first: app.pickedMerge.first, origins: [...app.pickedMerge.origins] } : null, entries: app.merges?.entries.length ?? -1 };
        });
      const litTokens = () => page.$$eval('[data-testid="token-stream"] [data-highlight="true"]', (els) => els.map((e) => Number(e.getAttribute('data-index'))));
      await page.goto(`${server.url}/`);
      await waitReady(page);
      // the full cache merges nothing: the view says what to do
      await page.waitForSelector('[data-testid="merge-empty"]');
      const empty = (await page.textContent('[data-testid="merge-empty"]')) ?? '';
      assert(/Pick a merging policy such as .*chelsea/.test(empty) && /d2o/.test(empty), `the empty state names merging policies (${empty})`);

      // a merging policy, typed and applied live
      const spec = page.locator('[data-testid="policy-spec"]');
      await spec.fill('chelsea:budget=24,batch=1');
      await page.keyboard.press('Enter');
      await page.waitForSelector('[data-testid="switch-marker"]');
      await waitIdle(page);
      await stepTimes(page, 3);
      await page.waitForSelector('[data-testid="merge-entry"]');
      const entries = page.locator('[data-testid="merge-entry"]');
      const n = await entries.count();
      assert(n > 0, 'the merge view lists merged entries');
      assertEqual((await shown()).entries, n, 'one mark per merged entry the head holds');
      const freshCount = await page.locator('[data-testid="merge-entry"][data-fresh="true"]').count();
      assert(freshCount > 0, `this step's merges are marked (${freshCount} of ${n})`);
      const summary = ((await page.textContent('[data-testid="merge-summary"]')) ?? '').replace(/\s+/g, ' ');
      assert(/layer 0, KV head 0 · step 2 · \d+ merged entr/.test(summary), `summary (${summary})`);

      // pick the entry standing for the most tokens
      const widest = await entries.evaluateAll((els) => {
        let best = 0;
        let most = -1;
        els.forEach((e, i) => {
          const ticks = e.querySelectorAll('rect').length;
          if (ticks > most) [best, most] = [i, ticks];
        });
        return best;
      });
      await entries.nth(widest).click();
      await page.waitForSelector('[data-testid="merge-detail"]');
      const picked = (await shown()).picked;
      assert(picked !== null && picked.origins.length >= 2, `an entry is picked (${JSON.stringify(picked)})`);
      assertEqual(await litTokens(), picked.origins, 'the token stream lights up exactly the tokens the entry stands for');
      const detail = ((await page.textContent('[data-testid="merge-detail"]')) ?? '').replace(/\s+/g, ' ');
      assert(new RegExp(`Merged entry #${picked.first} .* stands for ${picked.origins.length} tokens · count ${picked.origins.length} · bias log ${picked.origins.length} = `).test(detail), `detail: count and log-count bias (${detail.slice(0, 200)})`);
      const members = await page.locator('[data-testid="merge-members"] g[transform]').count();
      assert(members >= 2, `the members are listed (${members})`);
      assert((await page.locator('[data-testid="cache-map-highlight"] rect').count()) > 0, 'the cache map bands the highlighted tokens');
      await page.waitForTimeout(200);
      await page.screenshot({ path: join(RESULTS_DIR, 'merge-view.png'), fullPage: true });
      // the figure exports as vectors: the entries' ticks and the members' bars
      const [svgDownload] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-svg-merges-L0-kv0"]')]);
      const svgPath = join(RESULTS_DIR, svgDownload.suggestedFilename());
      await svgDownload.saveAs(svgPath);
      const svg = readFileSync(svgPath, 'utf8');
      assert(svg.startsWith('<svg') || svg.includes('<svg'), 'an SVG file');
      assert(svg.includes(`Merged entries: layer 0, KV head 0`) && svg.includes('cos to merged key'), 'the export has the title and the members chart');
      assert((svg.match(/<rect/g) ?? []).length > picked.origins.length, 'the export draws the ticks');

      // Escape clears; keyboard: the focused entry is picked with Enter, without stepping
      await page.keyboard.press('Escape');
      await page.waitForSelector('[data-testid="merge-detail"]', { state: 'detached' });
      assertEqual(await litTokens(), [], 'nothing lit after Escape');
      await entries.first().focus();
      await page.keyboard.press('Enter');
      await page.waitForSelector('[data-testid="merge-detail"]');
      assert((await litTokens()).length >= 2, 'Enter on a focused entry picks it');
      await page.keyboard.press(' ');
      await page.waitForTimeout(300);
      assertEqual(await tokenCount(page), 3, 'space on an entry picks it, it does not start a run');

      // the pick follows the token: stepping on keeps the entry that holds it highlighted
      await page.click('[data-testid="step"]');
      await waitTokens(page, 4);
      await waitIdle(page);
      await page.waitForFunction(() => /step 3/.test(document.querySelector('[data-testid="merge-summary"]')?.textContent ?? ''));
      const after = (await shown()).picked;
      if (after) assertEqual(await litTokens(), after.origins, 'after a step the lit tokens are those of the entry now holding the picked token');
    },
  },
  {
    name: 'quant view: kivi applied live, step: the error maps and the effective-bits gauge show real numbers; switching layer and step updates it',
    timeoutMs: 150_000,
    async fn({ page, server }) {
      type Shown = { quant: { layer: number; step: number; source: string; bits: { whole: number }; codecs: { name: string }[] } | null; layer: number };
      const shown = () =>
        page.evaluate(() => {
          const app = (globalThis as unknown as { __kvscope: Shown }).__kvscope;
          const q = app.quant;
          return { layer: app.layer, quant: q ? { layer: q.layer, step: q.step, source: q.source, bits: q.bits.whole, codecs: q.codecs.map((c) => c.name) } : null };
        });
      const text = async (testid: string) => ((await page.textContent(`[data-testid="${testid}"]`)) ?? '').replace(/\s+/g, ' ');
      await page.goto(`${server.url}/`);
      await waitReady(page);
      // the full cache quantizes nothing: the view says what to do, naming the registered methods
      await page.waitForSelector('[data-testid="quant-empty"]');
      const empty = await text('quant-empty');
      assert(/Pick a quantization method such as .*kivi/.test(empty), `the empty state names quantization methods (${empty})`);
      assertEqual(Number(await page.getAttribute('[data-testid="quant-gauge"]', 'data-bits')), 32, 'a plain cache stores 32 bits per element');

      const spec = page.locator('[data-testid="policy-spec"]');
      await spec.fill('kivi:bits=2,group=8,residual=16');
      await page.keyboard.press('Enter');
      await page.waitForSelector('[data-testid="switch-marker"]');
      await waitIdle(page);
      await stepTimes(page, 2);
      await page.waitForFunction(() => /step 1/.test(document.querySelector('[data-testid="quant-summary"]')?.textContent ?? ''));
      await page.waitForSelector('[data-testid="quant-heatmap-k"]');
      await page.waitForTimeout(200);
      const summary = await text('quant-summary');
      assert(/layer 0, KV head 0 · step 1 · \d+ entries held of \d+ tokens · \d+ re-encoded \(kivi-/.test(summary), `summary (${summary})`);
      const live = (await shown()).quant!;
      assertEqual(live.source, 'live', 'the newest step is measured against the exact K/V');
      const bits = Number(await page.getAttribute('[data-testid="quant-gauge"]', 'data-bits'));
      assert(bits > 2 && bits < 32, `the gauge shows fewer bits than fp32 (${bits})`);
      assert(/bits per stored element \(fp32 = 32, fp16 = 16\) · K [\d.]+ · V [\d.]+/.test(await text('quant-gauge')), 'the gauge splits K and V');
      for (const part of ['k', 'v']) {
        const map = await canvasStats(page, `quant-heatmap-${part}`);
        assert(map.inked > 500 && map.colours > 8, `the ${part.toUpperCase()} error map is drawn (${JSON.stringify(map)})`);
        const max = Number(await page.getAttribute(`[data-testid="quant-heatmap-${part}"]`, 'data-max'));
        assert(max > 0 && Number.isFinite(max), `the ${part.toUpperCase()} map has a real error scale (${max})`);
      }
      assert(/‖o − ô‖ \/ ‖o‖ = [\d.e-]+/.test(await text('quant-output-error')), 'the attention output error is shown');
      assert(((await page.getAttribute('[data-testid="quant-attention-stored"]', 'd')) ?? '').startsWith('M'), 'the attention with the codec is drawn');
      await page.screenshot({ path: join(RESULTS_DIR, 'quant-view.png'), fullPage: true });

      // the keyboard reads a cell; the toggle is a radio
      await page.focus('[data-testid="quant-heatmap-k"]');
      await page.keyboard.press('ArrowRight');
      await page.keyboard.press('ArrowDown');
      assert(/keys channel 1: x − x̂ /.test(await text('quant-readout-k')), `the readout names the cell (${await text('quant-readout-k')})`);
      assertEqual(await tokenCount(page), 2, 'arrow keys on the map do not step');
      const absMax = Number(await page.getAttribute('[data-testid="quant-heatmap-k"]', 'data-max'));
      await page.check('[data-testid="quant-mode-relative"]');
      await page.waitForFunction(() => /RMS of the exact vector/.test(document.querySelector('[data-testid="quant-map-k"]')?.textContent ?? ''));
      assert(Number(await page.getAttribute('[data-testid="quant-heatmap-k"]', 'data-max')) !== absMax, 'the relative map has its own scale');

      // switching layer (a per-layer bar is a button) updates the view
      const before = await page.getAttribute('[data-testid="quant-heatmap-v"]', 'data-max');
      await page.click('[data-testid="quant-layer"][data-layer="3"]');
      await page.waitForFunction(() => /^\s*layer 3, KV head 0/.test(document.querySelector('[data-testid="quant-summary"]')?.textContent ?? ''));
      assertEqual((await shown()).layer, 3, 'the bar selects the layer for the whole page');
      assertEqual(await page.inputValue('[data-testid="layer-select"]'), '3', 'the layer selector follows');
      await page.waitForTimeout(200);
      const other = await canvasStats(page, 'quant-heatmap-v');
      assert(other.inked > 500, `layer 3's V map is drawn (${JSON.stringify(other)})`);
      assert((await page.getAttribute('[data-testid="quant-heatmap-v"]', 'data-max')) !== before, 'layer 3 has its own errors');

      // an older step: what the trace recorded, and the view says so
      await page.locator('[data-testid="token"]').first().click();
      await page.waitForSelector('[data-testid="quant-limits"]');
      assert(/From the trace: per-channel error.*newest step of a live session only/.test(await text('quant-limits')), 'an older step says what it lacks');
      assertEqual((await shown()).quant?.source, 'trace', 'step 0 is packed from the trace');
      assert((await page.locator('[data-testid="quant-heatmap-k"]').count()) === 0, 'no per-channel map at an older step');
      await page.click('[data-testid="follow"]');
      await page.waitForSelector('[data-testid="quant-heatmap-k"]');
    },
  },
];

const failed = await runTests([...tests, ...LAB_TESTS, ...SPEC_TESTS, ...LINK_TESTS, ...LINK_LAB_TESTS, ...NOTEBOOK_TESTS, ...SECURITY_TESTS, ...MODEL_TESTS]);
process.exit(failed > 0 ? 1 : 0);
