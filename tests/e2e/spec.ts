/** End-to-end test of speculative decoding on the explorer (run by tests/e2e/run.ts): the drafter picker and the acceptance view. */
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { assert, assertEqual, RESULTS_DIR, waitIdle, waitReady, waitTokens, type TestCase } from './harness.ts';

const PROMPT = 'The cat sat on the mat. The dog sat on the log. The cat sat on the mat. The dog sat on the log. The cat sat on the mat. The dog sat on the log. The cat';

async function generated(page: Page): Promise<string[]> {
  return page.$$eval('[data-testid="token"]', (els) => els.map((e) => e.querySelector('.piece')?.textContent ?? ''));
}

async function applyDrafter(page: Page, spec: string): Promise<void> {
  await page.fill('[data-testid="drafter-spec"]', spec);
  await page.click('[data-testid="apply-drafter"]');
  await page.waitForFunction(() => !(document.querySelector('[data-testid="apply-drafter"]') as HTMLButtonElement | null)?.disabled && !document.querySelector('[data-testid="apply-drafter"]')?.textContent?.includes('Applying'), null, { timeout: 60_000 });
}

async function runTokens(page: Page, n: number): Promise<void> {
  await page.click('[data-testid="reset"]');
  await waitIdle(page);
  await waitTokens(page, 0);
  await page.click('[data-testid="run"]');
  await waitTokens(page, n, 90_000);
  await waitIdle(page, 90_000);
}

export const SPEC_TESTS: TestCase[] = [
  {
    name: 'speculative: lookup drafter rounds, histogram, calls per token < 1, measured speed-up, tokens equal plain greedy; a bad spec changes nothing',
    timeoutMs: 240_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/`);
      await waitReady(page);
      await page.fill('[data-testid="prompt"]', PROMPT);
      await page.fill('[data-testid="temperature"]', '0');
      await page.fill('[data-testid="run-steps"]', '32');
      await page.uncheck('[data-testid="stop-at-eos"]');
      await page.click('[data-testid="reset"]');
      await waitIdle(page);
      // the view is packed by the worker after the prompt: it says "Packing…" until then
      await page
        .waitForFunction(() => !/Packing/.test(document.querySelector('[data-testid="spec-view"]')?.textContent ?? 'Packing'), null, { timeout: 30_000 })
        .catch(() => undefined);
      const empty = (await page.textContent('[data-testid="spec-view"]')) ?? '';
      assert(/No drafter is set/.test(empty), `the empty state says how to set a drafter (${empty.slice(0, 120)})`);

      // a bad spec: the error is shown at the picker, the input stays, nothing changes
      await page.selectOption('[data-testid="drafter-picker"]', 'lookup');
      await applyDrafter(page, 'lookup:k=0');
      const error = (await page.textContent('[data-testid="drafter-error"]')) ?? '';
      assert(/k/.test(error) && error.length > 5, `the refused spec's error is shown (${error})`);
      assertEqual(await page.inputValue('[data-testid="drafter-spec"]'), 'lookup:k=0', 'the refused input is kept');
      assert(/none/.test((await page.textContent('[data-testid="drafter-active"]')) ?? ''), 'the drafter in charge is still none');

      // lookup: rounds, histogram, calls per token, speed-up
      await applyDrafter(page, 'lookup');
      assertEqual(await page.locator('[data-testid="drafter-error"]').count(), 0, 'no error after a good spec');
      assert(/lookup:max_ngram=3,k=10/.test((await page.textContent('[data-testid="drafter-active"]')) ?? ''), 'the canonical spec is in charge');
      await runTokens(page, 32);
      await page.waitForSelector('[data-testid="spec-round"]', { timeout: 30_000 });
      await page.waitForFunction(() => /×$/.test(document.querySelector('[data-testid="spec-speedup-value"]')?.textContent ?? ''), null, { timeout: 30_000 });
      const speculative = await generated(page);
      assertEqual(speculative.length, 32, 'tokens after a speculative run');
      const rounds = await page.locator('[data-testid="spec-round"]').count();
      assert(rounds > 1 && rounds < 32, `fewer rounds than tokens (${rounds})`);
      assert((await page.locator('[data-testid="spec-histogram-bar"]').count()) > 0, 'the accepted-length histogram has bars');
      const calls = Number(await page.textContent('[data-testid="spec-calls-value"]'));
      assert(calls > 0 && calls < 1, `target calls per token < 1 (${calls})`);
      const speedup = (await page.textContent('[data-testid="spec-speedup-value"]')) ?? '';
      assert(/^\d+\.\d×$/.test(speedup), `a measured speed-up (${speedup})`);
      const accepted = await page.locator('[data-testid="spec-token"][data-origin="draft"]').count();
      assert(accepted > 0, `accepted draft tokens are marked (${accepted})`);
      const tip = await page.locator('[data-testid="spec-token"][data-origin="draft"]').first().getAttribute('aria-label');
      assert(/q \S+ · target p \S+/.test(tip ?? ''), `a drafted token's label has q and p (${tip})`);
      await page.locator('[data-testid="spec-figure"]').screenshot({ path: join(RESULTS_DIR, 'spec-view.png') });

      // plain greedy decoding of the same prompt gives the same tokens
      await page.selectOption('[data-testid="drafter-picker"]', 'none');
      await applyDrafter(page, 'none');
      await runTokens(page, 32);
      assertEqual(await generated(page), speculative, 'speculative tokens equal plain greedy decoding');
      await page
        .waitForFunction(() => /No drafter is set/.test(document.querySelector('[data-testid="spec-view"]')?.textContent ?? ''), null, { timeout: 30_000 })
        .catch(() => undefined);
      assert(/No drafter is set/.test((await page.textContent('[data-testid="spec-view"]')) ?? ''), 'plain decoding shows the empty state again');
    },
  },
];
