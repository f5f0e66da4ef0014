/**
 * End-to-end: your own model (/models). Upload the draft model's folder through the file chooser,
 * pick it in the explorer and Step: tokens appear; a link made with it reopens with it (with no
 * saved choice); a copy whose model.onnx has flipped bytes is refused with a message naming
 * model.onnx and nothing is stored; the default model still loads and steps afterwards.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { assert, assertEqual, removeDir, stepTimes, type TestCase, waitIdle, waitReady, waitTokens } from './harness.ts';

const MODELS = join(process.cwd(), 'static/models');
const DRAFT_DIR = join(MODELS, 'kvscope-draft-2l');
const INDEX = JSON.parse(readFileSync(join(MODELS, 'index.json'), 'utf8')) as { default: string };
const DRAFT_ID = (JSON.parse(readFileSync(join(DRAFT_DIR, 'manifest.json'), 'utf8')) as { id: string }).id;

type Explorer = { model: { id: string } | null; modelChoice: { kind: string } | null };
const loaded = (page: Page) =>
  page.evaluate(() => {
    const app = (globalThis as unknown as { __kvscope: Explorer }).__kvscope;
    return { id: app.model?.id ?? null, kind: app.modelChoice?.kind ?? null };
  });

async function upload(page: Page, dir: string): Promise<string> {
  await page.setInputFiles('[data-testid="model-upload"]', dir);
  await page.waitForSelector('[data-testid="model-outcome"]', { timeout: 90_000 });
  return ((await page.textContent('[data-testid="model-outcome"]')) ?? '').trim();
}

/** Picks the option of the model picker whose label matches, then waits for that model to be ready. */
async function pick(page: Page, label: RegExp, id: string): Promise<void> {
  const options = await page.$$eval('[data-testid="model-select"] option', (els) => els.map((e) => ({ value: (e as HTMLOptionElement).value, label: e.textContent ?? '' })));
  const option = options.find((o) => label.test(o.label));
  assert(option, `the picker offers ${label} (has ${options.map((o) => o.label).join(' | ')})`);
  await page.selectOption('[data-testid="model-select"]', option.value);
  await page.waitForFunction((want) => (globalThis as unknown as { __kvscope: Explorer }).__kvscope.model?.id === want, id, { timeout: 90_000 });
  await waitReady(page);
}

export const MODEL_TESTS: TestCase[] = [
  {
    name: 'models: upload the draft folder, pick it in the explorer, Step; a corrupted copy names model.onnx; the default still works',
    timeoutMs: 300_000,
    async fn({ page, server }) {
      await page.goto(`${server.url}/models`);
      await page.waitForSelector('[data-testid="models-empty"]');
      const stored = await upload(page, DRAFT_DIR);
      assert(/^Checked and stored .*\(kvscope-draft-2l, sha256 [0-9a-f]{12}…\)/.test(stored), `the upload is stored (${stored})`);
      // the draft's id is also a shipped model's: the page says how the upload is kept apart
      assert(/also a shipped model's/.test(stored), `the shipped-id note (${stored})`);
      await page.waitForSelector('[data-testid="stored-model"]');
      const row = (await page.textContent('[data-testid="stored-model"]')) ?? '';
      assert(row.includes(DRAFT_ID) && /MiB/.test(row), `the list shows the model and its size (${row})`);
      // the same folder again: not stored twice
      const again = await upload(page, DRAFT_DIR);
      assert(/is stored already: nothing was added/.test(again), `a second upload is not duplicated (${again})`);
      assertEqual(await page.locator('[data-testid="stored-model"]').count(), 1, 'stored models after uploading twice');

      // the explorer: pick the upload, Step
      await page.goto(`${server.url}/`);
      await waitReady(page);
      await pick(page, /kvscope-draft-2l .*· uploaded · [0-9a-f]{8}/, DRAFT_ID);
      assertEqual((await loaded(page)).kind, 'uploaded', 'the explorer runs the uploaded model');
      await stepTimes(page, 3);
      // its link reopens with the upload selected, by the link alone (Copy link: the address
      // follows the session debounced, so it may still hold an earlier step)
      await page.click('[data-testid="share-link"]');
      await page.waitForSelector('[data-testid="share-url"]');
      const link = await page.inputValue('[data-testid="share-url"]');
      await page.evaluate(() => localStorage.removeItem('kvscope:model'));
      await page.goto(link);
      await waitReady(page);
      await waitTokens(page, 3, 90_000);
      assertEqual(await loaded(page), { id: DRAFT_ID, kind: 'uploaded' }, 'a link made with the upload opens with it');

      // a copy with flipped bytes in model.onnx
      const tmp = mkdtempSync(join(tmpdir(), 'kvscope-upload-'));
      try {
        const copy = join(tmp, 'kvscope-draft-2l');
        mkdirSync(copy);
        for (const name of readdirSync(DRAFT_DIR)) copyFileSync(join(DRAFT_DIR, name), join(copy, name));
        const graph = readFileSync(join(copy, 'model.onnx'));
        for (let i = 4096; i < 4160; i++) graph[i] ^= 0xff;
        writeFileSync(join(copy, 'model.onnx'), graph);
        await page.goto(`${server.url}/models`);
        await page.waitForSelector('[data-testid="stored-model"]');
        const refused = await upload(page, copy);
        assert(/was not stored: model\.onnx: sha256 mismatch/.test(refused), `the corrupted copy names model.onnx (${refused})`);
        assertEqual(await page.locator('[data-testid="stored-model"]').count(), 1, 'nothing more is stored');
      } finally {
        removeDir(tmp);
      }

      // the default model still loads and steps
      await page.goto(`${server.url}/`);
      await waitReady(page);
      await pick(page, /· default$/, INDEX.default);
      assertEqual(await loaded(page), { id: INDEX.default, kind: 'shipped' }, 'the default model is back');
      await page.click('[data-testid="step"]');
      await waitTokens(page, 1);
      await waitIdle(page);
    },
  },
];
