/**
 * A small end-to-end harness over playwright-core and Debian's Chromium (no browser download):
 * serves build/ with scripts/serve-static.mjs, gives every test a fresh browser context, collects
 * console errors, and prints `N passed, N failed`.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type ConsoleMessage, type Page } from 'playwright-core';
import { serveStatic, type StaticServer } from '../../scripts/serve-static.mjs';

export const CHROMIUM = process.env.KVSCOPE_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
];
export const RESULTS_DIR = join(process.cwd(), 'test-results');

export type Server = StaticServer;

export function startServer(root = 'build'): Promise<Server> {
  return serveStatic(root);
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

/** A persistent context in a fresh user-data dir (real disk cache, Cache API, service worker). */
export async function persistentContext(dir?: string): Promise<{ context: BrowserContext; dir: string }> {
  const userDataDir = dir ?? mkdtempSync(join(tmpdir(), 'kvscope-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    headless: true,
    viewport: { width: 1440, height: 1000 },
    acceptDownloads: true,
  });
  return { context, dir: userDataDir };
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export interface TestContext {
  browser: Browser;
  server: Server;
  page: Page;
  context: BrowserContext;
  /** console errors and page errors seen so far */
  errors: string[];
  /** ignore console errors matching these (expected in fault tests) */
  allowErrors(...patterns: RegExp[]): void;
}

export interface TestCase {
  name: string;
  fn(t: TestContext): Promise<void>;
  /** use a persistent context (service worker + disk) instead of an incognito one */
  persistent?: boolean;
  timeoutMs?: number;
}

export class AssertionError extends Error {}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

export function assertEqual<T>(actual: T, expected: T, what: string): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new AssertionError(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export async function runTests(tests: TestCase[]): Promise<number> {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const only = process.env.E2E_ONLY ? new RegExp(process.env.E2E_ONLY) : null;
  const server = await startServer();
  const browser = await launchBrowser();
  let passed = 0;
  let failed = 0;
  const started = Date.now();
  for (const test of tests) {
    if (only && !only.test(test.name)) continue;
    const t0 = Date.now();
    let context: BrowserContext;
    let dir: string | null = null;
    if (test.persistent) {
      const made = await persistentContext();
      context = made.context;
      dir = made.dir;
    } else {
      context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, acceptDownloads: true });
    }
    const page = context.pages()[0] ?? (await context.newPage());
    const errors: string[] = [];
    const allowed: RegExp[] = [];
    const onConsole = (message: ConsoleMessage) => {
      if (message.type() !== 'error') return;
      const text = `${message.text()} ${message.location().url ?? ''}`;
      if (!allowed.some((re) => re.test(text))) errors.push(`console: ${text}`);
    };
    page.on('console', onConsole);
    page.on('pageerror', (error) => {
      const text = error.message;
      if (!allowed.some((re) => re.test(text))) errors.push(`pageerror: ${text}`);
    });
    const ctx: TestContext = { browser, server, page, context, errors, allowErrors: (...p) => allowed.push(...p) };
    try {
      await withTimeout(test.fn(ctx), test.timeoutMs ?? 120_000, test.name);
      assert(errors.length === 0, `console errors:\n  ${errors.join('\n  ')}`);
      passed++;
      console.log(`  ✓ ${test.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (error) {
      failed++;
      console.log(`  ✗ ${test.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n    ${(error as Error).message.split('\n').join('\n    ')}`);
      const shot = join(RESULTS_DIR, `failure-${test.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}.png`);
      await page.screenshot({ path: shot, fullPage: true }).catch(() => undefined);
      console.log(`    screenshot: ${shot}`);
    } finally {
      server.faults.clear();
      await context.close().catch(() => undefined);
      if (dir) removeDir(dir);
    }
  }
  await browser.close();
  await server.close();
  console.log(`\nend-to-end: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(`${passed} passed, ${failed} failed`);
  return failed;
}

// ---- page helpers ---------------------------------------------------------------------------

export async function waitReady(page: Page, timeout = 120_000): Promise<void> {
  await page.waitForFunction(
    () => {
      const status = document.querySelector('[data-testid="model-status"]')?.textContent;
      return status === 'ready' || status === 'error' || status === 'crashed';
    },
    null,
    { timeout },
  );
  const status = await page.textContent('[data-testid="model-status"]');
  if (status !== 'ready') {
    const message = await page.textContent('[data-testid="error-message"]').catch(() => '');
    throw new AssertionError(`model status is ${status}: ${message}`);
  }
  // the default prompt is prefilled right after loading
  await page.waitForFunction(() => !(document.querySelector('[data-testid="step"]') as HTMLButtonElement | null)?.disabled, null, { timeout });
}

export async function tokenCount(page: Page): Promise<number> {
  return page.locator('[data-testid="token"]').count();
}

export async function waitTokens(page: Page, n: number, timeout = 30_000): Promise<void> {
  await page.waitForFunction((count) => document.querySelectorAll('[data-testid="token"]').length === count, n, { timeout });
}

export async function waitIdle(page: Page, timeout = 30_000): Promise<void> {
  await page.waitForFunction(() => !(document.querySelector('[data-testid="step"]') as HTMLButtonElement | null)?.disabled, null, { timeout });
}

/** Clicks the explorer's Step `n` times, each time waiting for its token and for the page to be idle. */
export async function stepTimes(page: Page, n: number): Promise<void> {
  const start = await page.locator('[data-testid="token"]').count();
  for (let i = 1; i <= n; i++) {
    await page.click('[data-testid="step"]');
    await waitTokens(page, start + i);
    await waitIdle(page);
  }
}

/** Non-white pixels and distinct colours of a canvas (proves something was drawn). */
export async function canvasStats(page: Page, testid: string): Promise<{ width: number; height: number; inked: number; colours: number }> {
  return page.$eval(`[data-testid="${testid}"]`, (element) => {
    const canvas = element as HTMLCanvasElement;
    const ctx = canvas.getContext('2d')!;
    const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
    let inked = 0;
    const colours = new Set<number>();
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      if (a > 0 && !(r > 245 && g > 245 && b > 245)) inked++;
      if (colours.size < 5000) colours.add((r << 16) | (g << 8) | b);
    }
    return { width: canvas.width, height: canvas.height, inked, colours: colours.size };
  });
}
