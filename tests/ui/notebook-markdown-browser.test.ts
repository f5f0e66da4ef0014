/**
 * Markdown and the HTML export in a real browser (Debian's Chromium through playwright-core, as the
 * e2e tests use it): DOMPurify does not work under happy-dom, so this is where renderMarkdown runs
 * whole. markdown.ts and html-export.ts are bundled with esbuild and loaded into a blank page; the
 * exported notebook page is then opened on its own: nothing runs, nothing is fetched, and its CSP
 * refuses scripts and remote images even when they are added to it later.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Notebook } from '../../src/lib/notebooks/types.ts';

const CHROMIUM = process.env.KVSCOPE_CHROMIUM ?? '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const source = (file: string) => fileURLToPath(new URL(`../../src/lib/notebooks/${file}`, import.meta.url));

interface NotebookGlobal {
  renderMarkdown(text: string): string;
  notebookHtml(notebook: Notebook, options?: { origin?: string; exportedAt?: Date }): string;
}
declare global {
  var kvscopeNotebook: NotebookGlobal;
}

const XSS_INPUTS = [
  '<script>window.pwned = 1</script>',
  '<img src=x onerror="window.pwned = 2">',
  '<iframe src="https://evil.example"></iframe>',
  '<svg onload="window.pwned = 3"><circle r="4"/></svg>',
  '[click](javascript:window.pwned=4)',
  '[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)',
  '![pic](javascript:window.pwned=5)',
  '<a href="javascript:window.pwned=6">raw</a> <div onclick="window.pwned=7">x</div>',
];

const NOTEBOOK: Notebook = {
  id: 'nb-1',
  title: '<img src=x onerror="window.pwned = 8">',
  created: 0,
  updated: 0,
  cells: [
    { kind: 'markdown', id: 'm', text: `## Notes\n\nSome **bold** and a [paper](https://arxiv.org/abs/2306.14048).\n\n![tracking pixel](https://tracker.example/notes.png)\n\n${XSS_INPUTS.join('\n\n')}` },
    {
      kind: 'experiment',
      id: 'x',
      link: '/?x=1',
      trace: null,
      summary: '<script>window.pwned = 9</script>',
      text: 'The cat sat',
      figure: { name: 'f', title: 'Figure', caption: 'c', svg: '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4" onload="window.pwned = 10"><script>window.pwned = 11</script><rect width="4" height="4"/></svg>' },
    },
    { kind: 'comparison', id: 'c', link: '/compare?l=1', summary: 's', table: { columns: ['<b onmouseover=x>lane</b>'], rows: [['<script>window.pwned=12</script>']] }, figure: null },
  ],
};

describe.skipIf(!existsSync(CHROMIUM))('notebook markdown and HTML export in Chromium', () => {
  let browser: Browser;
  let bundle: string;

  beforeAll(async () => {
    const built = await build({
      stdin: { contents: `export { renderMarkdown } from ${JSON.stringify(source('markdown.ts'))}; export { notebookHtml } from ${JSON.stringify(source('html-export.ts'))};`, resolveDir: process.cwd(), loader: 'ts' },
      bundle: true,
      write: false,
      format: 'iife',
      globalName: 'kvscopeNotebook',
      platform: 'browser',
      logLevel: 'silent',
    });
    bundle = built.outputFiles[0].text;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
  });

  async function blankPage() {
    const page = await browser.newPage();
    await page.setContent('<!doctype html><html><body></body></html>');
    await page.addScriptTag({ content: bundle });
    return page;
  }

  it('renderMarkdown keeps markdown and removes everything that runs', async () => {
    const page = await blankPage();
    const result = await page.evaluate((inputs) => {
      const root = document.createElement('div');
      const rendered = inputs.map((input) => {
        root.innerHTML = window.kvscopeNotebook.renderMarkdown(input);
        document.body.append(root.cloneNode(true));
        const attrs = [...root.querySelectorAll('*')].flatMap((el) => [...el.attributes].map((a) => `${a.name}=${a.value}`));
        return { tags: [...root.querySelectorAll('*')].map((el) => el.tagName.toLowerCase()), attrs };
      });
      root.innerHTML = window.kvscopeNotebook.renderMarkdown('# Title\n\n- a\n- b\n\n| x | y |\n| - | - |\n| 1 | 2 |\n\n`code` [link](https://example.org)');
      const link = root.querySelector('a');
      return { rendered, tags: [...root.querySelectorAll('*')].map((el) => el.tagName.toLowerCase()), link: link && [link.href, link.target, link.rel] };
    }, XSS_INPUTS);
    await page.waitForTimeout(100); // give any handler that slipped through the time to fire
    expect(await page.evaluate(() => (window as { pwned?: number }).pwned)).toBeUndefined();
    for (const [i, { tags, attrs }] of result.rendered.entries()) {
      expect(tags.filter((tag) => !['p', 'a'].includes(tag)), XSS_INPUTS[i]).toEqual([]);
      for (const attr of attrs) expect(attr, XSS_INPUTS[i]).toMatch(/^(href=https?:|target=_blank$|rel=noopener noreferrer$)/);
    }
    expect(result.tags).toEqual(expect.arrayContaining(['h1', 'ul', 'li', 'table', 'th', 'td', 'code', 'a']));
    expect(result.link).toEqual(['https://example.org/', '_blank', 'noopener noreferrer']);
    await page.close();
  });

  it('renderMarkdown shows a remote image as a link: the page fetches nothing for it', async () => {
    const page = await blankPage();
    const requests: string[] = [];
    page.on('request', (request) => requests.push(request.url()));
    const shown = await page.evaluate(async () => {
      const root = document.createElement('div');
      root.innerHTML = window.kvscopeNotebook.renderMarkdown('![tracking pixel](https://tracker.example/pixel.png)\n\n![protocol-relative](//tracker.example/p.png)');
      document.body.append(root);
      await new Promise((resolve) => setTimeout(resolve, 100));
      return { images: root.querySelectorAll('img').length, links: [...root.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.textContent, a.rel]) };
    });
    expect(shown.images).toBe(0);
    expect(shown.links).toEqual([
      ['https://tracker.example/pixel.png', 'tracking pixel', 'noopener noreferrer'],
      ['//tracker.example/p.png', 'protocol-relative', 'noopener noreferrer'],
    ]);
    expect(requests.filter((url) => url.includes('tracker.example'))).toEqual([]);
    await page.close();
  });

  it('the exported page runs nothing, fetches nothing and its CSP holds', async () => {
    const maker = await blankPage();
    const html = await maker.evaluate((notebook) => window.kvscopeNotebook.notebookHtml(notebook, { origin: 'https://kvscope.example' }), NOTEBOOK);
    await maker.close();

    const page = await browser.newPage();
    const requests: string[] = [];
    const dialogs: string[] = [];
    const fetched: string[] = [];
    page.on('request', (request) => requests.push(request.url()));
    // a request the CSP lets through reaches the router; one it blocks never does
    await page.route('**/*', (route) => {
      fetched.push(route.request().url());
      void route.abort();
    });
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    await page.setContent(html);
    const requestsOfThePage = requests.filter((url) => !url.startsWith('data:'));
    const shown = await page.evaluate(async () => {
      const violations: string[] = [];
      document.addEventListener('securitypolicyviolation', (event) => violations.push(event.violatedDirective));
      // what the CSP must refuse if anything ever got in: an inline script and a remote image
      const script = document.createElement('script');
      script.textContent = 'window.pwned = 99';
      document.body.append(script);
      const img = document.createElement('img');
      img.src = 'https://tracker.example/pixel.png';
      document.body.append(img);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const figure = document.querySelector<HTMLImageElement>('.experiment img')!;
      return {
        pwned: (window as { pwned?: number }).pwned,
        violations,
        h2: document.querySelector('.markdown h2')?.textContent,
        bold: document.querySelector('.markdown strong')?.textContent,
        title: document.querySelector('h1')?.textContent,
        th: document.querySelector('.comparison th')?.textContent,
        figureLoaded: figure.complete && figure.naturalWidth === 4,
        remoteImage: {
          images: document.querySelectorAll('.markdown img').length,
          text: document.querySelector('.markdown a[href="https://tracker.example/notes.png"]')?.textContent,
        },
        links: [...document.querySelectorAll('section a')].map((a) => a.getAttribute('href')),
      };
    });
    expect(shown.pwned).toBeUndefined();
    expect(dialogs).toEqual([]);
    expect(requestsOfThePage).toEqual([]);
    expect(fetched).toEqual([]);
    expect(shown.violations).toEqual(expect.arrayContaining([expect.stringMatching(/^script-src/), expect.stringMatching(/^img-src/)]));
    expect(shown.h2).toBe('Notes');
    expect(shown.bold).toBe('bold');
    expect(shown.title).toBe(NOTEBOOK.title);
    expect(shown.th).toBe('<b onmouseover=x>lane</b>');
    expect(shown.figureLoaded).toBe(true);
    expect(shown.remoteImage).toEqual({ images: 0, text: 'tracking pixel' });
    expect(shown.links).toEqual(['https://arxiv.org/abs/2306.14048', 'https://tracker.example/notes.png', 'https://kvscope.example/?x=1', 'https://kvscope.example/compare?l=1']);
    await page.close();
  });
});
