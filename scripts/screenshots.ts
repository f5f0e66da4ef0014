/**
 * Screenshots of the explorer in its main states, for reviewing the UI (test-results/screens/)
 * and for the README (`--docs` also writes docs/screenshot.png). Needs a build: `npm run build`.
 *
 *   npx tsx scripts/screenshots.ts [--docs]
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launchBrowser, RESULTS_DIR, startServer, waitIdle, waitReady, waitTokens } from '../tests/e2e/harness.ts';

const out = join(RESULTS_DIR, 'screens');
mkdirSync(out, { recursive: true });
const server = await startServer();
const browser = await launchBrowser();
const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
const page = await context.newPage();
page.on('console', (m) => {
  if (m.type() === 'error') console.log('console error:', m.text());
});
const shot = async (name: string, fullPage = true) => {
  await page.waitForTimeout(250);
  await page.screenshot({ path: join(out, `${name}.png`), fullPage });
  console.log(`wrote ${join(out, `${name}.png`)}`);
};

// loading (slow the model download down so the progress bar is visible)
await page.route('**/models/kvscope-llama-8l/model.onnx.part1', async (route) => {
  await new Promise((r) => setTimeout(r, 1500));
  await route.continue();
});
await page.goto(`${server.url}/`);
await page.waitForSelector('[data-testid="load-progress"]');
await page.waitForTimeout(700);
await shot('01-loading', false);
await waitReady(page);
await page.unroute('**/models/kvscope-llama-8l/model.onnx.part1');

// the repeated passage: induction heads
await page.click('[data-testid="example-repeat"]');
await page.click('[data-testid="reset"]');
await waitIdle(page);
await page.fill('[data-testid="run-steps"]', '24');
await page.click('[data-testid="run"]');
await page.waitForFunction(() => document.querySelectorAll('[data-testid="token"]').length >= 24, null, { timeout: 60_000 });
await waitIdle(page);
await page.selectOption('[data-testid="layer-select"]', '2');
await page.click('[data-testid="heatmap-all"]');
await shot('02-repeat');

// zoomed to the last tokens: labels
await page.click('[data-testid="heatmap-recent"]');
await shot('03-zoom-labels');

// log scale, sink excluded
await page.check('[data-testid="log-scale"]');
await page.check('[data-testid="exclude-sink"]');
await shot('04-log-nosink');
await page.uncheck('[data-testid="log-scale"]');
await page.uncheck('[data-testid="exclude-sink"]');

// pass key, full cache, greedy: a retrieval head in the last layer finds the needle
await page.click('[data-testid="example-passkey"]');
await page.fill('[data-testid="temperature"]', '0');
await page.click('[data-testid="reset"]');
await waitIdle(page);
for (let i = 1; i <= 6; i++) {
  await page.click('[data-testid="step"]');
  await waitTokens(page, i);
  await waitIdle(page);
}
await page.selectOption('[data-testid="layer-select"]', '7');
await page.selectOption('[data-testid="head-select"]', '6');
await page.click('[data-testid="heatmap-all"]');
await shot('05-passkey-full');
const docs = join(out, '05-passkey-full.png');

// the same with a sliding window that evicts the needle
await page.selectOption('[data-testid="policy-select"]', 'window');
await page.fill('[data-testid="policy-param-size"]', '64');
await page.click('[data-testid="reset"]');
await waitIdle(page);
for (let i = 1; i <= 6; i++) {
  await page.click('[data-testid="step"]');
  await waitTokens(page, i);
  await waitIdle(page);
}
await shot('06-passkey-window');

// an older step, then the help overlay
await page.locator('[data-testid="token"]').nth(1).click();
await shot('07-older-step');
await page.keyboard.press('?');
await shot('08-help', false);
await page.keyboard.press('Escape');

// an error
await page.fill('[data-testid="prompt"]', 'word '.repeat(1200));
await page.click('[data-testid="reset"]');
await page.waitForSelector('[data-testid="error"]');
await shot('09-error', false);

if (process.argv.includes('--docs')) {
  mkdirSync('docs', { recursive: true });
  copyFileSync(docs, 'docs/screenshot.png');
  console.log('wrote docs/screenshot.png');
}
await browser.close();
await server.close();
