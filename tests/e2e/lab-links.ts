/**
 * End-to-end tests of the lab pages' links (issue 11): a /compare link with a run length and a
 * selected step runs its lanes there by itself, keeps both in the address and opens each lane in
 * the explorer; a /bench link sets its form up (never running it); a finished /bench cell opens
 * its case in the explorer. Registered by tests/e2e/run.ts.
 */
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { assert, assertEqual, RESULTS_DIR, type TestCase } from './harness.ts';
import { readExperimentQuery } from '../../src/lib/links/codec.ts';
import type { Experiment } from '../../src/lib/links/experiment.ts';

/** The model status of a lab page is ready (the explorer's waitReady also waits for its Step button, which lab pages lack). */
async function labReady(page: Page): Promise<void> {
  await page.waitForFunction(() => ['ready', 'error', 'crashed'].includes(document.querySelector('[data-testid="model-status"]')?.textContent ?? ''), null, { timeout: 120_000 });
  assertEqual(await page.textContent('[data-testid="model-status"]'), 'ready', 'model status');
}

/** The experiment an explorer href carries (decoded here, in Node, as the explorer decodes it). */
function experimentOf(href: string | null, base: string): Experiment {
  assert(href !== null, 'the link has an href');
  const url = new URL(href, base);
  assertEqual(url.pathname, '/', 'the link opens the explorer');
  const reading = readExperimentQuery(url.search);
  if (reading.kind !== 'experiment') throw new Error(`the explorer link does not read: ${JSON.stringify(reading)}`);
  return reading.experiment;
}

/** The address's query once the debounced sync has written it. */
async function settledQuery(page: Page): Promise<URLSearchParams> {
  await page.waitForTimeout(700);
  return new URL(page.url()).searchParams;
}

const PROMPT = 'Once upon a time, there was a little robot who';

export const LINK_LAB_TESTS: TestCase[] = [
  {
    name: 'links: a /compare link with steps and at runs both lanes there, keeps both in the address, and opens a lane in the explorer',
    timeoutMs: 150_000,
    async fn({ page, server }) {
      const query = `v=1&lane=full&lane=window%3Asize%3D32&prompt=${encodeURIComponent(PROMPT)}&seed=2&t=0&k=40&p=0.95&steps=6&at=3`;
      await page.goto(`${server.url}/compare?${query}`);
      await labReady(page);
      // nobody presses Step or Run: the link decodes 6 tokens in every lane, then selects step 3
      await page.waitForFunction(
        () =>
          (document.querySelector('[data-testid="compare-position"]')?.textContent ?? '').startsWith('6 steps') &&
          document.querySelector('[data-testid="compare-selected"]')?.getAttribute('data-step') === '3' &&
          !(document.querySelector('[data-testid="compare-step"]') as HTMLButtonElement | null)?.disabled,
        null,
        { timeout: 60_000 },
      );
      const tokens = await page.$$eval('[data-testid="compare-lane"]', (lanes) => lanes.map((lane) => lane.querySelectorAll('[data-testid="lane-token"]').length));
      assertEqual(tokens, [6, 6], 'tokens per lane decoded by the link');
      const selected = await page.$$eval('[data-testid="compare-lane"]', (lanes) => lanes.map((lane) => [...lane.querySelectorAll('[data-testid="lane-token"]')].findIndex((t) => t.classList.contains('selected'))));
      assertEqual(selected, [3, 3], 'step 3 is selected in every lane');
      assertEqual(await page.locator('[data-testid="compare-link-problems"]').count(), 0, 'the link has no problems');

      const address = await settledQuery(page);
      assertEqual([address.get('steps'), address.get('at'), address.get('t'), address.getAll('lane')], ['6', '3', '0', ['full', 'window:size=32']], 'the address after the run');

      const links = page.locator('[data-testid="lane-open-explorer"]');
      assertEqual(await links.count(), 2, 'every lane has an explorer link');
      const first = experimentOf(await links.first().getAttribute('href'), server.url);
      assertEqual([first.prompt, first.policy, first.sampler.temperature, first.steps, first.view.step], [PROMPT, 'full', 0, 6, 3], 'lane 1 in the explorer');
      assertEqual(first.actions, [{ kind: 'decode', steps: 6 }], 'lane 1 decodes its 6 steps');
      const second = experimentOf(await links.nth(1).getAttribute('href'), server.url);
      assertEqual([second.policy, second.steps], ['window:size=32', 6], 'lane 2 in the explorer');

      // selecting another step moves the address and the links with it (replaced, not pushed)
      const historyLength = await page.evaluate(() => history.length);
      await page.locator('[data-testid="compare-lane"]').first().locator('[data-testid="lane-token"]').nth(1).click();
      assertEqual((await settledQuery(page)).get('at'), '1', 'the address follows the selected step');
      assertEqual(experimentOf(await links.first().getAttribute('href'), server.url).view.step, 1, 'the link follows the selected step');
      assertEqual(await page.evaluate(() => history.length), historyLength, 'no history entry per change');
      await page.screenshot({ path: join(RESULTS_DIR, 'compare-link.png'), fullPage: true });
    },
  },
  {
    name: 'links: a /bench link sets its form up (task, budgets, policies …) and never runs by itself',
    timeoutMs: 120_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/bench?v=1&task=needle&policies=full,window&budgets=16%2C+48&lengths=128&depths=0.5&trials=2&seed=5&windows=99`);
      await labReady(page);
      assert(await page.isChecked('[data-testid="bench-task-needle"]'), 'the task from the link');
      assertEqual(
        await Promise.all(['bench-budgets', 'bench-lengths', 'bench-depths', 'bench-trials', 'bench-seed'].map((id) => page.inputValue(`[data-testid="${id}"]`))),
        ['16, 48', '128', '0.5', '2', '5'],
        'the form holds the link',
      );
      assert(await page.isChecked('[data-testid="bench-policy-window"]'), 'window is chosen');
      assert(!(await page.isChecked('[data-testid="bench-policy-h2o"]')), 'h2o (a default) is not');
      assert(/windows="99"/.test((await page.textContent('[data-testid="bench-link-problems"]')) ?? ''), 'the bad field is named on screen');
      assert(/window@16, window@48/.test((await page.textContent('[data-testid="bench-plan"]')) ?? ''), 'the plan follows the link');
      await page.waitForSelector('[data-testid="bench-from-link"]');
      assertEqual(await page.locator('[data-testid="bench-progress"]').count(), 0, 'nothing runs by itself');
      const address = await settledQuery(page);
      assertEqual([address.get('task'), address.get('budgets'), address.get('policies')], ['needle', '16, 48', 'full,window'], 'the address keeps the setup');
      await page.fill('[data-testid="bench-budgets"]', '24');
      assertEqual((await settledQuery(page)).get('budgets'), '24', 'the address follows the form');
    },
  },
  {
    name: 'links: a finished /bench perplexity cell opens the held-out window in the explorer under its policy',
    timeoutMs: 150_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/bench?v=1&task=ppl&policies=window&budgets=32&windows=1&tokens=64&prefix=16`);
      await labReady(page);
      await page.click('[data-testid="bench-run"]');
      await page.waitForSelector('[data-testid="bench-finished"]', { timeout: 90_000 });
      const link = page.locator('[data-testid="bench-open-explorer"]').first();
      await link.waitFor({ timeout: 30_000 });
      assert(/^Open in the explorer: perplexity is measured teacher-forced; the explorer decodes the same text under the same policy/.test((await link.getAttribute('title')) ?? ''), 'the tooltip says what the link is');
      const run = experimentOf(await link.getAttribute('href'), server.url);
      assertEqual([run.policy, run.sampler.temperature, run.steps], ['window:size=32', 0, 16], 'the cell in the explorer');
      assert(run.prompt.length > 100, `the prompt is the held-out window (${run.prompt.length} characters)`);
      await page.screenshot({ path: join(RESULTS_DIR, 'bench-cell-links.png'), fullPage: true });
    },
  },
];
