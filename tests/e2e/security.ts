/**
 * End-to-end security test (issue 11): a published XSS payload list (tests/fixtures/xss/payloads.txt,
 * OWASP's and PortSwigger's cheat sheets; every executing vector calls alert(1)) goes through every
 * input the app has — the explorer's prompt, typed policy spec, links and trace import, /compare and
 * /bench links, notebook titles, markdown cells, imported bundles (every string field), the HTML
 * export and the "Add to notebook" list — and nothing may execute: markdown is sanitized
 * (DOMPurify), everything else is text. Registered by tests/e2e/run.ts.
 *
 * After every input, assertNothingRan (xss-trap.ts) checks that no trapped alert/confirm/prompt/
 * print was called, no dialog opened and no injection left its marks in the document. Each input
 * is a named step: a failure names it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { encodePayload, readExperimentQuery } from '../../src/lib/links/codec.ts';
import type { Experiment } from '../../src/lib/links/experiment.ts';
import { encodeBundle } from '../../src/lib/notebooks/bundle.ts';
import type { Notebook } from '../../src/lib/notebooks/types.ts';
import { AssertionError, assert, assertEqual, RESULTS_DIR, waitIdle, waitReady, waitTokens, type TestCase } from './harness.ts';
import { assertDetectorWorks, assertNothingRan, assertTrapped, installTrap, type Trap } from './xss-trap.ts';

/** the payloads, one per line; blank lines and "# " comments skipped */
const PAYLOADS = readFileSync(join(process.cwd(), 'tests/fixtures/xss/payloads.txt'), 'utf8')
  .split('\n')
  .map((line) => line.replace(/\r$/, ''))
  .filter((line) => line.trim() !== '' && !line.startsWith('# '));

/**
 * Payloads that messages quote unchanged (JSON.stringify of their first 60 characters adds only the
 * outer quotes): no quotes, backslashes or control characters, and no spaces or commas, which
 * list fields split on.
 */
const QUOTABLE = PAYLOADS.filter((p) => p.length <= 60 && !/["'\\`\s,]/.test(p));

/** the model's context (tokens): a prompt chunk must fit in it */
const CONTEXT = 1024;
/** payloads per prompt, and a character cap that keeps ~20 of them under the context */
const CHUNK_PAYLOADS = 20;
const CHUNK_CHARS = 1400;

/** Runs one named step; a failure says which input it was. */
async function step(name: string, run: () => Promise<void>): Promise<void> {
  const t0 = Date.now();
  try {
    await run();
  } catch (error) {
    throw new AssertionError(`step "${name}": ${(error as Error).message}`);
  }
  console.log(`      · ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

/** The payloads in prompts that fit the context: at most CHUNK_PAYLOADS and CHUNK_CHARS each. */
function promptChunks(): string[][] {
  const chunks: string[][] = [[]];
  let chars = 0;
  for (const payload of PAYLOADS) {
    const last = chunks[chunks.length - 1];
    if (last.length > 0 && (last.length >= CHUNK_PAYLOADS || chars + payload.length > CHUNK_CHARS)) {
      chunks.push([payload]);
      chars = payload.length;
    } else {
      last.push(payload);
      chars += payload.length + 1;
    }
  }
  return chunks;
}

/** A payload as the token stream writes it (format.ts streamPiece: line breaks ↵, tabs ⇥). */
function streamed(text: string): string {
  return text.replace(/\n/g, '↵').replace(/\t/g, '⇥').replace(/\r/g, '␍');
}

async function text(page: Page, testid: string): Promise<string> {
  return (await page.textContent(`[data-testid="${testid}"]`)) ?? '';
}

/** The prompt as the token stream shows it: its prompt pieces, joined. */
async function streamedPrompt(page: Page): Promise<string> {
  return page.$$eval('[data-testid="token-stream"] .tok.prompt', (els) => els.map((e) => e.textContent ?? '').join(''));
}

function assertShowsAll(shown: string, payloads: readonly string[], where: string): void {
  const missing = payloads.filter((p) => !shown.includes(streamed(p)));
  assert(missing.length === 0, `${where} does not show ${missing.length} payload(s) literally, e.g. ${JSON.stringify(missing[0])}`);
}

/** Every text a problem message quotes for `raw` (the messages quote the first 60 characters). */
const quoted = (raw: string): string => JSON.stringify(raw.slice(0, 60));

// ---- explorer -------------------------------------------------------------------------------

async function explorerPrompt(page: Page, trap: Trap): Promise<void> {
  const chunks = promptChunks();
  assertEqual(chunks.flat().length, PAYLOADS.length, 'payloads in the prompt chunks');
  for (const [i, chunk] of chunks.entries()) {
    const prompt = chunk.join('\n');
    await page.fill('[data-testid="prompt"]', prompt);
    await page.click('[data-testid="reset"]');
    await page.waitForFunction(
      (p) => {
        const app = (globalThis as unknown as { __kvscope: { appliedPrompt: string | null; activity: string } }).__kvscope;
        return app.appliedPrompt === p && app.activity === 'idle';
      },
      prompt,
      { timeout: 30_000 },
    );
    const count = await page.locator('[data-testid="token-stream"] .tok.prompt').count();
    const shownCount = await text(page, 'prompt-tokens');
    assert(count <= CONTEXT && shownCount.includes(`${count} tokens of ${CONTEXT}`), `prompt ${i + 1} fits the context (${count} tokens; the count says "${shownCount.trim()}")`);
    for (let n = 1; n <= 2; n++) {
      await page.click('[data-testid="step"]');
      await waitTokens(page, n);
      await waitIdle(page);
    }
    assertShowsAll(await streamedPrompt(page), chunk, `the token stream of prompt ${i + 1}`);
    if (chunk.includes('<script>alert(1)</script>')) {
      const stream = (await page.textContent('[data-testid="token-stream"]')) ?? '';
      assert(stream.includes('<script>alert(1)</script>'), 'the token stream\'s text holds <script>alert(1)</script>');
    }
    await assertNothingRan(page, trap, `after prompt ${i + 1} of ${chunks.length} (payloads ${PAYLOADS.indexOf(chunk[0]) + 1}–${PAYLOADS.indexOf(chunk[0]) + chunk.length}) was prefilled and stepped`);
  }
}

async function explorerPolicySpec(page: Page, trap: Trap): Promise<void> {
  const spec = page.locator('[data-testid="policy-spec"]');
  for (const payload of [...QUOTABLE.slice(0, 4), PAYLOADS.find((p) => p.startsWith('"><img'))!, 'full + <svg/onload=alert(1)>']) {
    await spec.fill(payload);
    await spec.press('Enter');
    await page.waitForSelector('[data-testid="policy-spec-error"]', { timeout: 10_000 });
    const error = await text(page, 'policy-spec-error');
    assert(error.trim().length > 10, `the typed spec ${JSON.stringify(payload)} is refused with a message (${error})`);
    assert(error.includes(JSON.stringify(payload)), `the error quotes the typed spec as text: ${JSON.stringify(payload)} in "${error}"`);
    await assertNothingRan(page, trap, `after the typed policy spec ${JSON.stringify(payload)}`);
  }
  await spec.press('Escape');
}

async function explorerTraceImport(page: Page, trap: Trap): Promise<void> {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-trace"]')]);
  const path = join(RESULTS_DIR, 'security-trace.json');
  await download.saveAs(path);
  const trace = JSON.parse(readFileSync(path, 'utf8')) as unknown;
  let next = 0;
  const payload = () => PAYLOADS[next++ % PAYLOADS.length];
  // every prompt text and every token piece becomes a payload (counts stay: the reader checks them)
  const poison = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(poison);
    if (value === null || typeof value !== 'object') return value;
    const out: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(value)) {
      if ((key === 'prompt' || key === 'promptText') && typeof v === 'string') out[key] = PAYLOADS.join('\n');
      else if (key === 'piece' && typeof v === 'string') out[key] = payload();
      else if (key === 'pieces' && Array.isArray(v)) out[key] = v.map(() => payload());
      else out[key] = poison(v);
    }
    return out;
  };
  const fileName = '<img src=x onerror=alert(1)>.json';
  await page.setInputFiles('[data-testid="trace-import"]', { name: fileName, mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(poison(trace))) });
  await page.waitForSelector('[data-testid="replay-banner"]', { timeout: 30_000 });
  assert((await text(page, 'replay-banner')).includes(`Read-only replay of ${fileName}`), 'the replay banner names the payload file as text');
  assertEqual(await page.inputValue('[data-testid="prompt"]'), PAYLOADS.join('\n'), 'the prompt editor holds the trace\'s payload prompt');
  const pieces = await page.$$eval('[data-testid="token"] .piece', (els) => els.map((e) => e.textContent ?? ''));
  assert(pieces.length === 2 && pieces.every((p) => PAYLOADS.map(streamed).includes(p)), `the recorded tokens show their payload pieces as text (${JSON.stringify(pieces)})`);
  const prompt = await streamedPrompt(page);
  assert(prompt.includes('<script>alert(1)</script>') && prompt.includes('<svg/onload=alert(1)>'), 'the replayed prompt pieces show the payloads as text');
  await page.waitForTimeout(300);
  await assertNothingRan(page, trap, `after importing the trace ${fileName} (prompt and pieces replaced by payloads)`);
}

async function explorerLinks(page: Page, trap: Trap, server: string, base: Experiment): Promise<void> {
  const chunks = promptChunks();
  const [prompt, draft] = [chunks[0].join('\n'), chunks[1].join('\n')];
  const experiment: Experiment = { ...base, prompt, actions: [{ kind: 'decode', steps: 1 }], steps: 1, view: { ...base.view, step: null } };
  await page.goto(`${server}/?v=1&x=${encodePayload(experiment, draft)}`);
  await waitReady(page);
  await page.waitForFunction(() => !document.querySelector('[data-testid="link-opening"]'), null, { timeout: 30_000 });
  await waitTokens(page, 1);
  await waitIdle(page);
  const linkErrors = await page.$$eval('[data-testid="link-error"]', (els) => els.map((e) => e.textContent ?? ''));
  assertEqual(linkErrors, [], 'link errors of the payload link');
  assertShowsAll(await streamedPrompt(page), chunks[0], 'the token stream of the link\'s prompt');
  assertEqual(await page.inputValue('[data-testid="prompt"]'), draft, 'the prompt editor holds the link\'s unapplied edit');
  await assertNothingRan(page, trap, 'after opening an explorer link whose prompt and unapplied edit are payloads');

  const svg = QUOTABLE.find((p) => p.startsWith('<svg'))!;
  const textarea = QUOTABLE.find((p) => p.startsWith('</textarea>'))!;
  const broken: { what: string; experiment: Experiment; error: string }[] = [
    { what: 'a payload policy', experiment: { ...base, policy: svg }, error: `P (the policy) is not a policy spec (${quoted(svg)})` },
    {
      what: 'a payload policy switch',
      experiment: { ...base, actions: [{ kind: 'policy', spec: textarea }, { kind: 'decode', steps: 1 }], steps: 1 },
      error: `a[0][1] is not a policy spec (${quoted(textarea)})`,
    },
    { what: 'a payload drafter', experiment: { ...base, actions: [{ kind: 'drafter', spec: svg }], steps: 0 }, error: 'a[0][1] is not a drafter spec' },
  ];
  for (const link of broken) {
    await page.goto(`${server}/?v=1&x=${encodePayload(link.experiment)}`);
    await page.waitForSelector('[data-testid="link-error"]');
    const error = await text(page, 'link-error');
    assert(error.includes(`This link cannot be opened: ${link.error}`), `an explorer link with ${link.what} names the problem as text (${error})`);
    await page.waitForTimeout(200);
    await assertNothingRan(page, trap, `after opening an explorer link with ${link.what}`);
  }
}

// ---- notebooks ------------------------------------------------------------------------------

const NOTEBOOK_TITLE = '<img src=x onerror=alert(1)>';
const BUNDLE_TITLE = '<svg/onload=alert(1)>';
const SECOND_TITLE = '"><script>alert(1)</script>';
const EVIL_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40" onload="alert(1)"><script>alert(1)</script><image href="javascript:alert(1)"/><text x="4" y="24">${PAYLOADS.length} payloads</text></svg>`;

/** A payload for every string field of a bundle's notebooks, picked in turn. */
function payloadNotebooks(): Notebook[] {
  let next = 0;
  const p = () => PAYLOADS[next++ % PAYLOADS.length];
  const figure = () => ({ name: p().slice(0, 200), title: p(), caption: p(), svg: EVIL_SVG });
  const table = () => ({ columns: [p(), p(), p()], rows: [[p(), 1.5, null], [p(), p(), 2]] });
  const now = Date.now();
  return [
    {
      id: 'xss-bundle',
      title: BUNDLE_TITLE,
      created: now,
      updated: now,
      cells: [
        { kind: 'markdown', id: 'md', text: PAYLOADS.join('\n\n') },
        { kind: 'experiment', id: 'exp', link: `/?v=1&x=${encodeURIComponent(p())}`, trace: p(), summary: p(), text: PAYLOADS.join('\n'), figure: figure() },
        { kind: 'comparison', id: 'cmp', link: `/compare?v=1&lane=${encodeURIComponent(p())}&prompt=${encodeURIComponent(p())}`, summary: p(), table: table(), figure: figure() },
        { kind: 'evaluation', id: 'eval', link: `/bench?task=${encodeURIComponent(p())}`, summary: p(), table: table(), figure: figure() },
        { kind: 'experiment', id: 'exp-path', link: '/javascript:alert(1)', trace: null, summary: p(), text: p(), figure: null },
      ],
    },
    { id: 'xss-second', title: SECOND_TITLE, created: now - 1000, updated: now - 1000, cells: [{ kind: 'markdown', id: 'md', text: p() }] },
  ];
}

/** Checks that an imported payload notebook shows every field as text. */
async function checkBundleCells(page: Page, notebook: Notebook): Promise<void> {
  await page.waitForFunction((title) => (document.querySelector('[data-testid="notebook-title"]') as HTMLInputElement | null)?.value === title, notebook.title);
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="cell"]').length === n, notebook.cells.length);
  const shown = await page.$$eval('[data-testid="cell"]', (cells) =>
    cells.map((cell) => ({
      kind: cell.getAttribute('data-kind'),
      rendered: cell.querySelector('[data-testid="cell-rendered"]')?.textContent ?? null,
      summary: cell.querySelector('[data-testid="cell-summary"]')?.textContent ?? null,
      text: cell.querySelector('[data-testid="cell-text"]')?.textContent ?? null,
      alt: cell.querySelector('[data-testid="cell-figure"]')?.getAttribute('alt') ?? null,
      figureSrc: cell.querySelector('[data-testid="cell-figure"]')?.getAttribute('src') ?? null,
      head: [...cell.querySelectorAll('[data-testid="cell-table"] th')].map((th) => th.textContent),
      body: [...cell.querySelectorAll('[data-testid="cell-table"] tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
      open: cell.querySelector('[data-testid="cell-open"]')?.getAttribute('href') ?? null,
    })),
  );
  for (const [i, cell] of notebook.cells.entries()) {
    const got = shown[i];
    const where = `cell ${i + 1} (${cell.kind})`;
    assertEqual(got.kind, cell.kind, `${where} kind`);
    if (cell.kind === 'markdown') {
      const rendered = got.rendered ?? '';
      for (const raw of ['<script>alert(1)</script>', '<svg/onload=alert(1)>', '<iframe src="javascript:alert(1)"></iframe>', '<img src=x onerror=alert(1)>']) {
        assert(rendered.includes(raw), `${where}: the raw HTML ${raw} is shown as text`);
      }
      continue;
    }
    assertEqual(got.summary, cell.summary, `${where} summary, as text`);
    if (cell.kind === 'experiment') assertEqual(got.text, cell.text, `${where} text, as text`);
    if (cell.figure) {
      assertEqual(got.alt, cell.figure.caption ? `${cell.figure.title}: ${cell.figure.caption}` : cell.figure.title, `${where} figure title and caption (the image's alt)`);
      assert(got.figureSrc?.startsWith('data:image/svg+xml;base64,'), `${where}: the figure SVG is only an image (${got.figureSrc?.slice(0, 40)})`);
    }
    if (cell.kind !== 'experiment') {
      assertEqual(got.head, cell.table.columns, `${where} table columns, as text`);
      assertEqual(got.body, cell.table.rows.map((row) => row.map((v) => (v === null ? '–' : String(v)))), `${where} table cells, as text`);
    }
    if (got.open !== null) assert(/^\/(compare|bench)?\?/.test(got.open), `${where}: the link stays an app page (${got.open})`);
  }
  const items = await page.$$eval('[data-testid="notebook-item-title"]', (els) => els.map((e) => e.textContent));
  assert(items.includes(BUNDLE_TITLE) && items.includes(SECOND_TITLE), `the list shows the payload titles as text (${JSON.stringify(items)})`);
}

async function notebookWritten(page: Page, trap: Trap): Promise<void> {
  await page.click('[data-testid="notebook-new"]');
  await page.waitForSelector('[data-testid="cell-editor"]');
  await page.fill('[data-testid="cell-editor"]', PAYLOADS.join('\n\n'));
  await page.click('[data-testid="cell-done"]');
  await page.waitForSelector('[data-testid="cell-rendered"]');
  await page.fill('[data-testid="notebook-title"]', NOTEBOOK_TITLE);
  await page.press('[data-testid="notebook-title"]', 'Enter');
  await page.waitForFunction((title) => [...document.querySelectorAll('[data-testid="notebook-item-title"]')].some((e) => e.textContent === title), NOTEBOOK_TITLE);
  await page.waitForFunction(() => document.querySelector('[data-testid="notebook-save-status"]')?.getAttribute('data-state') === 'saved');
  const rendered = (await text(page, 'cell-rendered')).replace(/\s+/g, ' ');
  for (const raw of ['<script>alert(1)</script>', '<svg/onload=alert(1)>', '<BODY ONLOAD=alert(1)>', '<a href="javascript:alert(1)">link</a>']) {
    assert(rendered.includes(raw), `the markdown cell shows the raw HTML ${raw} as text`);
  }
  const linkTexts = await page.$$eval('[data-testid="cell-rendered"] a', (els) => els.map((a) => a.getAttribute('href')));
  assert(linkTexts.every((href) => href !== null && !/^\s*(javascript|data):/i.test(href)), `markdown links keep safe addresses only (${JSON.stringify(linkTexts)})`);
  await page.waitForTimeout(300);
  await assertNothingRan(page, trap, 'after a notebook titled with a payload and a markdown cell of all payloads was rendered');
  // the rendering is re-made when the page is loaded again
  await page.reload();
  await page.waitForSelector('[data-testid="cell-rendered"]');
  await page.waitForTimeout(300);
  await assertNothingRan(page, trap, 'after reloading the notebook with the payload markdown cell');
}

async function notebookExportHtml(page: Page, trap: Trap, context: BrowserContext, what: string): Promise<void> {
  const slug = what.replace(/\W+/g, '-');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="notebook-export-html"]')]);
  const path = join(RESULTS_DIR, `security-${slug}.html`);
  await download.saveAs(path);
  const html = readFileSync(path, 'utf8');
  assert(!/<script/i.test(html), `the HTML export of ${what} has no <script`);
  const view = await context.newPage();
  try {
    await view.goto(`file://${path}`);
    await view.waitForTimeout(300);
    const body = (await view.textContent('body')) ?? '';
    assert(body.includes('<script>alert(1)</script>'), `the HTML export of ${what} shows the payloads as text`);
    await assertNothingRan(view, trap, `in the exported HTML of ${what}, opened from disk`);
  } finally {
    await view.close();
  }
}

export const SECURITY_TESTS: TestCase[] = [
  {
    name: 'security: XSS payloads in the explorer prompt, typed policy spec, trace import and links are text; nothing runs',
    timeoutMs: 180_000,
    async fn({ page, server, context }) {
      const trap = await installTrap(context);
      let base: Experiment | null = null;
      await step('explorer loads with the trap installed', async () => {
        await page.goto(`${server.url}/`);
        await waitReady(page);
        await page.waitForFunction(() => /[?&]x=/.test(location.search));
        const reading = readExperimentQuery(new URL(page.url()).search);
        assert(reading.kind === 'experiment', `the explorer's own address carries its experiment (${reading.kind})`);
        base = reading.experiment;
        await assertTrapped(page);
        await assertDetectorWorks(page, trap);
        await assertNothingRan(page, trap, 'on the explorer before any input');
      });
      await step('1. explorer prompt: every payload prefilled and stepped', () => explorerPrompt(page, trap));
      await step('2. explorer typed policy spec', () => explorerPolicySpec(page, trap));
      await step('4. explorer trace import (payload prompt, pieces and file name)', () => explorerTraceImport(page, trap));
      await step('3. explorer links (payload prompt and edit; payload policy, switch and drafter)', () => explorerLinks(page, trap, server.url, base!));
    },
  },
  {
    name: 'security: XSS payloads in /compare and /bench links are shown as named problems, as text; nothing runs',
    timeoutMs: 120_000,
    async fn({ page, server, context }) {
      const trap = await installTrap(context);
      await step('5. /compare link: payload prompt and lane specs', async () => {
        const prompt = promptChunks()[0];
        const [badLane, badDrafter] = [QUOTABLE[0], QUOTABLE.find((p) => p.startsWith('<svg'))!];
        const q = new URLSearchParams();
        q.set('v', '1');
        for (const lane of ['full', badLane, 'window:size=32', `full | ${badDrafter}`]) q.append('lane', lane);
        q.set('prompt', prompt.join('\n'));
        q.set('steps', '1');
        await page.goto(`${server.url}/compare?${q}`);
        await page.waitForSelector('[data-testid="compare-link-problems"]');
        const problems = await text(page, 'compare-link-problems');
        assert(problems.includes(`ignored the lane ${quoted(badLane)}: not a policy spec`), `the bad lane is named, as text (${problems})`);
        assert(problems.includes(`ignored the drafter ${quoted(badDrafter)}`), `the bad drafter is named, as text (${problems})`);
        assertEqual(await page.inputValue('[data-testid="compare-prompt"]'), prompt.join('\n'), 'the prompt editor holds the payload prompt');
        await page.waitForFunction(
          () => {
            const lanes = [...document.querySelectorAll('[data-testid="compare-lane"]')];
            return lanes.length === 3 && lanes.every((lane) => lane.querySelectorAll('[data-testid="lane-token"]').length === 1);
          },
          null,
          { timeout: 60_000 },
        );
        await assertNothingRan(page, trap, 'on /compare after a link with a payload prompt and payload lanes ran a step');
      });
      await step('6. /bench link: a payload in every field', async () => {
        const fields = ['task', 'policies', 'extra', 'budgets', 'seed', 'windows', 'tokens', 'prefix', 'lengths', 'depths', 'trials', 'drafters', 'draft.model', 'target', 'gammas', 'spec-prompts', 'spec-prompt-tokens', 'spec-tokens', 'temperature', 'texts'];
        const q = new URLSearchParams();
        q.set('v', '1');
        const given = new Map(fields.map((field, i) => [field, QUOTABLE[i % QUOTABLE.length]]));
        for (const [field, value] of given) q.set(field, value);
        const foreign = `draft.${QUOTABLE[1]}`;
        q.set(foreign, QUOTABLE[2]);
        await page.goto(`${server.url}/bench?${q}`);
        await page.waitForSelector('[data-testid="bench-link-problems"]');
        const problems = await text(page, 'bench-link-problems');
        const unnamed = [...given].filter(([field, value]) => !problems.includes(`ignored ${field}=${quoted(value)} in the link`));
        assert(unnamed.length === 0, `every payload field is named as text; missing: ${unnamed.map(([f]) => f).join(', ')} (${problems.slice(0, 300)})`);
        assert(problems.includes(`ignored ${quoted(foreign)}`), `the payload drafter key is named as text (${problems.slice(0, 300)})`);
        await page.waitForTimeout(300);
        await assertNothingRan(page, trap, 'on /bench after a link with a payload in every field');
      });
    },
  },
  {
    name: 'security: XSS payloads in notebook titles, markdown, imported bundles, the HTML export and Add to notebook are text; nothing runs',
    timeoutMs: 150_000,
    async fn({ page, server, context }) {
      const trap = await installTrap(context);
      await page.goto(`${server.url}/notebooks`);
      await page.waitForSelector('[data-testid="notebook-list-empty"]');
      await step('7a. notebook: a payload title and a markdown cell of all payloads', () => notebookWritten(page, trap));
      await step('7b. notebook: HTML export of the written notebook, opened from disk', () => notebookExportHtml(page, trap, context, 'the written notebook'));
      const notebooks = payloadNotebooks();
      await step('7c. notebook: an imported bundle with payloads in every field', async () => {
        await page.setInputFiles('[data-testid="notebook-import"]', { name: '<svg onload=alert(1)>.zip', mimeType: 'application/zip', buffer: Buffer.from(encodeBundle(notebooks)) });
        await checkBundleCells(page, notebooks[0]);
        await page.waitForTimeout(300);
        await assertNothingRan(page, trap, 'after importing the payload bundle and opening its notebook');
        await page.locator('[data-testid="notebook-item"]', { hasText: SECOND_TITLE }).locator('a').click();
        await page.waitForFunction((title) => (document.querySelector('[data-testid="notebook-title"]') as HTMLInputElement | null)?.value === title, SECOND_TITLE);
        const second = notebooks[1].cells[0];
        assert(second.kind === 'markdown' && (await text(page, 'cell-rendered')).includes(second.text), 'the second notebook\'s payload cell is shown as text');
        await assertNothingRan(page, trap, 'after opening the second imported notebook');
        await page.locator('[data-testid="notebook-item"]', { hasText: BUNDLE_TITLE }).locator('a').click();
        await checkBundleCells(page, notebooks[0]);
      });
      await step('7d. notebook: HTML export of the imported notebook, opened from disk', () => notebookExportHtml(page, trap, context, 'the imported notebook'));
      await step('7e. notebook: a bundle that is refused names its payload file name as text', async () => {
        const name = '<img src=x onerror=alert(1)>.zip';
        await page.setInputFiles('[data-testid="notebook-import"]', { name, mimeType: 'application/zip', buffer: Buffer.from('<script>alert(1)</script>') });
        await page.waitForSelector('[data-testid="notebook-error"]');
        const message = await text(page, 'notebook-error-message');
        assert(message.includes(name), `the error names the file as text (${message})`);
        await assertNothingRan(page, trap, 'after a refused bundle with a payload file name');
      });
      await step('8. explorer: Add to notebook lists the payload titles as text', async () => {
        await page.goto(`${server.url}/`);
        await waitReady(page);
        const button = page.locator('button[data-testid^="add-to-notebook-"]').first();
        await button.click();
        await page.waitForSelector('[data-testid="add-to-notebook-choice"]');
        const titles = await page.$$eval('[data-testid="add-to-notebook-choice"] .title', (els) => els.map((e) => e.textContent));
        for (const title of [NOTEBOOK_TITLE, BUNDLE_TITLE, SECOND_TITLE]) assert(titles.includes(title), `the popover lists ${title} as text (${JSON.stringify(titles)})`);
        await assertNothingRan(page, trap, 'with the Add to notebook popover open');
        await page.locator('[data-testid="add-to-notebook-choice"]', { hasText: SECOND_TITLE }).click();
        await page.waitForSelector('[data-testid="add-to-notebook-added"]');
        assert((await text(page, 'add-to-notebook-added')).includes(SECOND_TITLE), 'the "Added to" note names the payload title as text');
        await assertNothingRan(page, trap, 'after adding a figure to the payload-titled notebook');
      });
    },
  },
];
