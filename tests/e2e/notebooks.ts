/**
 * End-to-end test of /notebooks (registered by tests/e2e/run.ts): write a notebook of three
 * markdown cells, rename it, reload (everything was autosaved, in order), export it as a bundle and
 * import that into a fresh browser profile (same title and cells), export it as HTML (the title, no
 * script); a junk .zip is refused with an error naming the file, and the list stays as it was.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { assert, assertEqual, persistentContext, removeDir, RESULTS_DIR, stepTimes, type TestCase, waitReady, waitTokens } from './harness.ts';

const TITLE = 'H2O findings';
const CELLS = ['# Findings\n\nH2O keeps *heavy hitters*.', 'The window policy forgets the **start** of the prompt.', '- sinks help\n- recent tokens help'];
/** what the three cells render as (text content, whitespace squeezed) */
const RENDERED = ['Findings H2O keeps heavy hitters.', 'The window policy forgets the start of the prompt.', 'sinks help recent tokens help'];

async function focusedEditor(page: Page, cells: number): Promise<void> {
  await page.waitForFunction(
    (n) => document.querySelectorAll('[data-testid="cell"]').length === n && document.activeElement?.getAttribute('data-testid') === 'cell-editor',
    cells,
  );
}

async function waitSaved(page: Page): Promise<void> {
  await page.waitForFunction(() => document.querySelector('[data-testid="notebook-save-status"]')?.getAttribute('data-state') === 'saved');
}

async function renderedCells(page: Page, n: number): Promise<string[]> {
  await page.waitForFunction((count) => document.querySelectorAll('[data-testid="cell-rendered"]').length === count, n);
  return page.$$eval('[data-testid="cell-rendered"]', (els) => els.map((e) => (e.textContent ?? '').replace(/\s+/g, ' ').trim()));
}

async function openNotebookMatches(page: Page): Promise<void> {
  await page.waitForFunction((title) => (document.querySelector('[data-testid="notebook-title"]') as HTMLInputElement | null)?.value === title, TITLE);
  assertEqual(await renderedCells(page, 3), RENDERED, 'the cells, rendered, in order');
  assertEqual(await page.$$eval('[data-testid="cell"]', (els) => els.map((e) => e.getAttribute('data-kind'))), ['markdown', 'markdown', 'markdown'], 'cell kinds');
  assertEqual(await page.textContent('[data-testid="cell-rendered"] h1'), 'Findings', 'the heading is rendered');
  assertEqual(await page.textContent('[data-testid="cell-rendered"] em'), 'heavy hitters', 'the emphasis is rendered');
}

export const NOTEBOOK_TESTS: TestCase[] = [
  {
    name: 'notebooks: write three cells, rename, reload; bundle into a fresh profile; HTML export; a junk bundle changes nothing',
    timeoutMs: 120_000,
    async fn({ page, server, errors }) {
      await page.goto(`${server.url}/notebooks`);
      await page.waitForSelector('[data-testid="notebook-list-empty"]');
      await page.click('[data-testid="notebook-new"]');
      await focusedEditor(page, 1);
      assert(page.url().includes('/notebooks?id='), `the new notebook is open (${page.url()})`);
      await page.keyboard.type(CELLS[0]);
      for (const [i, text] of CELLS.slice(1).entries()) {
        await page.click('[data-testid="cell-add-markdown"]');
        await focusedEditor(page, i + 2);
        await page.keyboard.type(text);
      }
      await page.fill('[data-testid="notebook-title"]', TITLE);
      await page.press('[data-testid="notebook-title"]', 'Enter');
      await page.waitForFunction((title) => document.querySelector('[data-testid="notebook-item"]')?.textContent?.includes(title), TITLE);
      await waitSaved(page);
      const item = (await page.textContent('[data-testid="notebook-item"]')) ?? '';
      assert(/3 cells/.test(item), `the list item shows the cell count (${item})`);

      await page.reload();
      await openNotebookMatches(page);

      // the bundle, into a fresh browser profile
      const [bundle] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="notebook-export"]')]);
      const bundlePath = join(RESULTS_DIR, 'notebook-bundle.zip');
      await bundle.saveAs(bundlePath);
      assert(bundle.suggestedFilename().endsWith('.zip'), `bundle file name (${bundle.suggestedFilename()})`);
      const fresh = await persistentContext();
      try {
        const other = fresh.context.pages()[0] ?? (await fresh.context.newPage());
        other.on('pageerror', (error) => errors.push(`fresh profile: ${error.message}`));
        await other.goto(`${server.url}/notebooks`);
        await other.waitForSelector('[data-testid="notebook-list-empty"]');
        await other.setInputFiles('[data-testid="notebook-import"]', bundlePath);
        await openNotebookMatches(other);
        assertEqual(await other.locator('[data-testid="notebook-item"]').count(), 1, 'notebooks in the fresh profile');
      } finally {
        await fresh.context.close().catch(() => undefined);
        removeDir(fresh.dir);
      }

      // HTML: the title, and no script anywhere
      const [htmlDownload] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="notebook-export-html"]')]);
      const htmlPath = join(RESULTS_DIR, 'notebook.html');
      await htmlDownload.saveAs(htmlPath);
      const html = readFileSync(htmlPath, 'utf8');
      assert(html.includes(TITLE), 'the HTML export has the title');
      assert(html.includes('heavy hitters'), 'the HTML export has the cells');
      assert(!/<script/i.test(html), 'the HTML export has no <script');

      // a junk .zip: an error naming the file, nothing added
      const junkPath = join(RESULTS_DIR, 'junk-notebooks.zip');
      writeFileSync(junkPath, 'this is not a zip file');
      await page.setInputFiles('[data-testid="notebook-import"]', junkPath);
      await page.waitForSelector('[data-testid="notebook-error"]');
      const message = (await page.textContent('[data-testid="notebook-error-message"]')) ?? '';
      assert(message === 'Nothing was imported: junk-notebooks.zip is not a kvscope bundle (not a zip file).', `the error names the file and the problem (${message})`);
      assertEqual(await page.locator('[data-testid="notebook-item"]').count(), 1, 'notebooks after the junk import');
      await openNotebookMatches(page);
      await page.click('[data-testid="notebook-error-dismiss"]');
      assertEqual(await page.locator('[data-testid="notebook-error"]').count(), 0, 'the error is dismissed');
    },
  },
  {
    name: 'notebooks: two tabs on one notebook stay consistent (an edit and a new cell in one show in the other)',
    timeoutMs: 60_000,
    async fn({ page, server, context }) {
      await page.goto(`${server.url}/notebooks`);
      await page.click('[data-testid="notebook-new"]');
      await focusedEditor(page, 1);
      await page.keyboard.type('written in the first tab');
      await waitSaved(page);
      const other = await context.newPage();
      await other.goto(page.url());
      // a cell's words: its rendering, or its editor's text (a cell that arrived empty opens in its editor)
      const cellWords = () =>
        other.evaluate(() => [...document.querySelectorAll('[data-testid="cell"]')].map((c) => (c.querySelector('textarea') as HTMLTextAreaElement | null)?.value ?? c.querySelector('[data-testid="cell-rendered"]')?.textContent ?? ''));
      const until = async (ok: (words: string[]) => boolean, what: string) => {
        const t0 = Date.now();
        while (!ok(await cellWords())) {
          if (Date.now() - t0 > 15_000) throw new Error(`the other tab never showed ${what} (it shows ${JSON.stringify(await cellWords())})`);
          await other.waitForTimeout(100);
        }
      };
      await until((w) => w.length === 1 && /written in the first tab/.test(w[0]), 'the first cell');
      await page.click('[data-testid="cell-add-markdown"]');
      await focusedEditor(page, 2);
      await page.keyboard.type('a second cell');
      await page.fill('[data-testid="notebook-title"]', 'Shared notes');
      await page.press('[data-testid="notebook-title"]', 'Enter');
      await waitSaved(page);
      await until((w) => w.length === 2 && /a second cell/.test(w[1]), 'the second cell');
      await other.waitForFunction(() => (document.querySelector('[data-testid="notebook-title"]') as HTMLInputElement | null)?.value === 'Shared notes');
      assert(/Shared notes/.test((await other.textContent('[data-testid="notebook-item"]')) ?? ''), 'the other tab\'s list shows the new title');
      await other.close();
    },
  },
  {
    name: 'notebooks: an explorer figure added to a notebook keeps its trace; the cell redraws it read-only and re-runs its link',
    timeoutMs: 150_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/`);
      await waitReady(page);
      await stepTimes(page, 4);
      const tokens = await page.$$eval('[data-testid="token"]', (els) => els.map((e) => e.querySelector('.piece')?.textContent ?? ''));
      await page.click('[data-testid="add-to-notebook-cache-map"]');
      await page.click('[data-testid="add-to-notebook-new"]');
      await page.waitForSelector('[data-testid="add-to-notebook-open"]', { timeout: 30_000 });
      await page.click('[data-testid="add-to-notebook-open"]');
      await page.waitForSelector('[data-testid="cell"][data-kind="experiment"]');
      assert(((await page.getAttribute('[data-testid="cell-figure"]', 'src')) ?? '').startsWith('data:image/svg+xml;base64,'), 'the figure is an image of the snapshot');
      assert(/4 steps/.test((await page.textContent('[data-testid="cell-summary"]')) ?? ''), 'the summary names the steps');

      // the recorded trace, read-only, without the model's decoding
      await page.click('[data-testid="cell-trace"]');
      await page.waitForSelector('[data-testid="replay-banner"]');
      await page.waitForFunction((n) => document.querySelectorAll('[data-testid="token"]').length === n, tokens.length);
      assertEqual(await page.$$eval('[data-testid="token"]', (els) => els.map((e) => e.querySelector('.piece')?.textContent ?? '')), tokens, 'the recorded trace shows the same tokens');

      // the link re-runs it live
      await page.goBack();
      await page.waitForSelector('[data-testid="cell-open"]');
      await page.click('[data-testid="cell-open"]');
      await waitReady(page);
      await waitTokens(page, 4, 60_000);
      await page.waitForFunction(() => !document.querySelector('[data-testid="link-opening"]'));
      assertEqual(await page.$$eval('[data-testid="token"]', (els) => els.map((e) => e.querySelector('.piece')?.textContent ?? '')), tokens, 'the link replays the same tokens');
      assert((await page.locator('[data-testid="replay-banner"]').count()) === 0, 'the link runs live, with the model');
    },
  },
];
