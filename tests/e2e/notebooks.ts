/**
 * End-to-end test of /notebooks (registered by tests/e2e/run.ts): write a notebook of three
 * markdown cells, rename it, reload (everything was autosaved, in order), export it as a bundle and
 * import that into a fresh browser profile (same title and cells), export it as HTML (the title, no
 * script); a junk .zip is refused with an error naming the file, and the list stays as it was.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { assert, assertEqual, persistentContext, removeDir, RESULTS_DIR, type TestCase } from './harness.ts';

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
];
