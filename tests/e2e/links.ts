/**
 * End-to-end: explorer links (issue 11). Step 8 tokens, pick a step, layer and head, Copy link,
 * open it in a fresh browser profile: the same 8 tokens and the same step view. A broken link shows
 * its error and the app stays usable; a reload keeps the edited prompt.
 */
import { assert, assertEqual, persistentContext, removeDir, stepTimes, type TestCase, waitIdle, waitReady, waitTokens } from './harness.ts';
import type { Page } from 'playwright-core';

async function pieces(page: Page): Promise<string[]> {
  return page.$$eval('[data-testid="token"]', (els) => els.map((e) => e.querySelector('.piece')?.textContent ?? ''));
}

async function shownView(page: Page): Promise<{ position: string; layer: string; head: string; log: boolean }> {
  return {
    position: (/showing (after the prompt|step \d+)/.exec((await page.textContent('[data-testid="position"]')) ?? '') ?? [''])[0],
    layer: await page.inputValue('[data-testid="layer-select"]'),
    head: await page.inputValue('[data-testid="head-select"]'),
    log: await page.isChecked('[data-testid="log-scale"]'),
  };
}

export const LINK_TESTS: TestCase[] = [
  {
    name: 'links: step 8, Copy link, open it in a fresh profile: the same tokens and view',
    timeoutMs: 240_000,
    async fn({ page, server, context }) {
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url });
      await page.goto(`${server.url}/`);
      await waitReady(page);
      const entries = await page.evaluate(() => history.length);
      await stepTimes(page, 8);
      const tokens = await pieces(page);
      await page.locator('[data-testid="token"]').nth(4).click();
      await page.selectOption('[data-testid="layer-select"]', '5');
      await page.selectOption('[data-testid="head-select"]', '3');
      await page.check('[data-testid="log-scale"]');
      const view = await shownView(page);
      assert(view.position.includes('showing step 4'), `step 4 is shown (${view.position})`);

      // the address follows the session without a history entry per step
      await page.waitForFunction(() => /[?&]x=/.test(location.search));
      assertEqual(await page.evaluate(() => history.length), entries, 'history entries after 8 steps and a new view');

      await page.click('[data-testid="share-link"]');
      await page.waitForSelector('[data-testid="share-url"]');
      const url = await page.inputValue('[data-testid="share-url"]');
      assert(url.startsWith(`${server.url}/?v=1&x=`) && url.length < 8300, `a compact versioned link (${url.length} chars)`);
      assertEqual(await page.evaluate(() => navigator.clipboard.readText()), url, 'Copy link put the link on the clipboard');

      const fresh = await persistentContext();
      try {
        const other = fresh.context.pages()[0] ?? (await fresh.context.newPage());
        await other.goto(url);
        await waitReady(other);
        await waitTokens(other, 8, 60_000);
        await other.waitForFunction(() => !document.querySelector('[data-testid="link-opening"]'));
        await waitIdle(other);
        assertEqual(await pieces(other), tokens, 'the link replays the same 8 tokens');
        assertEqual(await shownView(other), view, 'the link shows the same step, layer, head and scale');
        assert((await other.locator('[data-testid="link-error"]').count()) === 0, 'no link error');
      } finally {
        await fresh.context.close();
        removeDir(fresh.dir);
      }
    },
  },
  {
    name: 'links: a broken link shows its error and the app stays usable; a reload keeps the edited prompt',
    timeoutMs: 180_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/?v=1&x=bm90LWEtbGluaw`);
      await page.waitForSelector('[data-testid="link-error"]');
      const error = (await page.textContent('[data-testid="link-error"]')) ?? '';
      assert(/This link cannot be opened: its data is damaged/.test(error), `the error names the problem (${error})`);
      await waitReady(page);
      await page.click('[data-testid="step"]');
      await waitTokens(page, 1);
      await waitIdle(page);
      assert((await page.locator('[data-testid="link-error"]').count()) === 1, 'the error stays until dismissed');
      await page.click('[data-testid="link-error-dismiss"]');

      await page.goto(`${server.url}/?v=9&x=abc`);
      await page.waitForSelector('[data-testid="link-error"]');
      assert(/newer kvscope \(link version 9\)/.test((await page.textContent('[data-testid="link-error"]')) ?? ''), 'a newer version is refused politely');
      await waitReady(page);

      // an edited prompt, not applied, survives a reload
      await page.fill('[data-testid="prompt"]', 'A prompt I was still writing');
      await page.waitForFunction(() => /[?&]x=/.test(location.search) && !/v=9/.test(location.search));
      await page.waitForTimeout(400);
      await page.reload();
      await waitReady(page);
      await page.waitForFunction(() => !document.querySelector('[data-testid="link-opening"]'));
      assertEqual(await page.inputValue('[data-testid="prompt"]'), 'A prompt I was still writing', 'the edited prompt after a reload');
      assert((await page.locator('[data-testid="link-error"]').count()) === 0, 'the page\'s own address opens without an error');
    },
  },
];
