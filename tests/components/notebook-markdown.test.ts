/**
 * Markdown cells and the static HTML export (happy-dom): markdown renders headings, lists, code,
 * tables and links (new tab, no opener); nothing that runs survives (script, on* handlers,
 * javascript:/data: links, iframes, svg onload), raw HTML shows as text; the exported page has no
 * script, forbids scripts and requests by CSP, and escapes every string that is not markdown.
 *
 * DOMPurify does not work under happy-dom (cure53/DOMPurify#1457), so here the markdown checks run on
 * markdownHtml, the layer that is safe without it; tests/ui/notebook-markdown-browser.test.ts runs
 * renderMarkdown and the exported page in Chromium.
 */
import { describe, expect, it } from 'vitest';
import { escapeHtml, notebookHtml, notebookHtmlFileName } from '../../src/lib/notebooks/html-export.ts';
import { markdownHtml } from '../../src/lib/notebooks/markdown.ts';
import type { Notebook } from '../../src/lib/notebooks/types.ts';

function dom(html: string): HTMLElement {
  const root = document.createElement('div');
  root.innerHTML = html;
  return root;
}

/** Every attribute in the tree, as name=value. */
function attributes(root: Element): string[] {
  return [...root.querySelectorAll('*')].flatMap((el) => [...el.attributes].map((a) => `${a.name}=${a.value}`));
}

const XSS = '<img src=x onerror=alert(1)>';

describe('markdownHtml', () => {
  it('renders GitHub-flavoured markdown', () => {
    const root = dom(
      markdownHtml(
        ['# Findings', '', '- H2O', '- TOVA', '', '1. one', '', '```ts', 'const k = 1 < 2;', '```', '', '| lane | KL |', '| --- | --: |', '| h2o | 0.01 |', '', 'See [the paper](https://arxiv.org/abs/2306.14048) and `inline`.', '', '~~old~~'].join('\n'),
      ),
    );
    expect(root.querySelector('h1')?.textContent).toBe('Findings');
    expect([...root.querySelectorAll('ul li')].map((li) => li.textContent)).toEqual(['H2O', 'TOVA']);
    expect(root.querySelector('ol li')?.textContent).toBe('one');
    expect(root.querySelector('pre code')?.textContent).toBe('const k = 1 < 2;\n');
    expect([...root.querySelectorAll('table th')].map((th) => th.textContent)).toEqual(['lane', 'KL']);
    expect(root.querySelector('table td')?.textContent).toBe('h2o');
    expect(root.querySelector('p code')?.textContent).toBe('inline');
    expect(root.querySelector('del')?.textContent).toBe('old');
    const link = root.querySelector('a')!;
    expect(link.getAttribute('href')).toBe('https://arxiv.org/abs/2306.14048');
    expect(link.getAttribute('target')).toBe('_blank');
    expect(link.getAttribute('rel')).toBe('noopener noreferrer');
  });

  it('lets nothing that runs through', () => {
    const inputs = [
      '<script>alert(1)</script>',
      XSS,
      '<iframe src="https://evil.example"></iframe>',
      '<svg onload="alert(1)"><circle r="4"/></svg>',
      '<a href="javascript:alert(1)">raw</a>',
      '[click](javascript:alert(1))',
      '[click](JaVaScRiPt:alert(1))',
      '[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)',
      '<div onclick="alert(1)">x</div>',
      '![pic](javascript:alert(1))',
      '![pic](data:image/svg+xml,%3Csvg%20onload=alert(1)%3E)',
      '[tab](java\tscript:alert(1)) [entity](javascript&#58;alert(1)) [vb](vbscript:msgbox(1))',
      '[x](https://a.example "title\" onmouseover=\"alert(1)")',
      '*emph* <b onmouseover=alert(1)>bold</b>',
    ];
    for (const input of inputs) {
      const html = markdownHtml(input);
      const root = dom(html);
      expect(root.querySelector('script, iframe, svg, object, embed, img, div, b'), input).toBeNull();
      for (const attribute of attributes(root)) {
        expect(attribute, input).not.toMatch(/^on/);
        expect(attribute, input).not.toMatch(/^href=\s*(javascript|data):/i);
      }
    }
  });

  it('keeps safe links and relative images', () => {
    const root = dom(markdownHtml('[mail](mailto:a@b.example) [rel](/compare?l=1) [frag](#top) <https://kvscope.example>\n\n![chart](figures/c.png "C")'));
    expect([...root.querySelectorAll('a')].map((a) => a.getAttribute('href'))).toEqual(['mailto:a@b.example', '/compare?l=1', '#top', 'https://kvscope.example']);
    expect(root.querySelector('img')?.getAttribute('src')).toBe('figures/c.png');
    expect(root.querySelector('img')?.getAttribute('alt')).toBe('chart');
    expect(root.querySelector('img')?.getAttribute('title')).toBe('C');
  });

  it('shows a remote image as a link named by its alt text, never as an <img> (nothing is fetched)', () => {
    const remote = ['https://img.example/c.png', 'HTTP://img.example/c.png', '//img.example/c.png', '/\\img.example/c.png', ' https://img.example/c.png'];
    for (const url of remote) {
      const root = dom(markdownHtml(`![chart <b>1</b>](${url} "C")`));
      expect(root.querySelector('img'), url).toBeNull();
      const link = root.querySelector('a')!;
      expect(link.getAttribute('href'), url).toBe(url.trim());
      expect(link.textContent, url).toBe('chart <b>1</b>');
      expect([link.getAttribute('title'), link.getAttribute('target'), link.getAttribute('rel')]).toEqual(['C', '_blank', 'noopener noreferrer']);
    }
    // without alt text the link shows its address
    expect(dom(markdownHtml('![](https://img.example/c.png)')).querySelector('a')?.textContent).toBe('https://img.example/c.png');
    // a scheme that could run keeps only the text
    const data = dom(markdownHtml('![pixel](data:image/png;base64,AAAA)'));
    expect([data.querySelector('img, a'), data.textContent?.trim()]).toEqual([null, 'pixel']);
  });

  it('shows raw HTML as the text it is', () => {
    const root = dom(markdownHtml(`Before ${XSS} after`));
    expect(root.textContent?.trim()).toBe(`Before ${XSS} after`);
    expect(root.querySelector('img')).toBeNull();
  });
});

const SVG = '<svg xmlns="http://www.w3.org/2000/svg"><text>é ✓</text></svg>';
const evil = (label: string) => `${label} ${XSS}</td><script>alert(1)</script>`;

function sample(): Notebook {
  const figure = { name: 'cache-map', title: evil('Cache map'), caption: 'tiny · h2o · "step" 12', svg: SVG };
  const table = { columns: ['lane', evil('col')], rows: [['h2o', 0.25], [evil('cell'), null]] };
  return {
    id: 'nb-1',
    title: XSS,
    created: 0,
    updated: 0,
    cells: [
      { kind: 'markdown', id: 'm', text: '## Notes\n\n<script>alert(1)</script> **bold**' },
      { kind: 'experiment', id: 'x', link: '/?x=a&b=<c>', trace: '{"secret":"trace"}', summary: evil('summary'), text: evil('text'), figure },
      { kind: 'comparison', id: 'c', link: '/compare?l=1', summary: 'two lanes', table, figure: null },
      { kind: 'evaluation', id: 'e', link: '/bench?c=1', summary: 'needle', table, figure },
    ],
  };
}

describe('notebookHtml', () => {
  const html = notebookHtml(sample(), { origin: 'https://kvscope.example', exportedAt: new Date('2026-12-01T19:30:00Z') });
  const page = new DOMParser().parseFromString(html, 'text/html');

  it('is one static page: no script, a CSP that forbids scripts and requests', () => {
    expect(html).not.toMatch(/<script/i);
    for (const attribute of attributes(page.documentElement)) expect(attribute).not.toMatch(/^on/);
    expect(html).not.toContain('{"secret":"trace"}');
    const csp = page.querySelector('meta[http-equiv="Content-Security-Policy"]')?.getAttribute('content');
    expect(csp).toBe("default-src 'none'; img-src data:; style-src 'unsafe-inline'");
    for (const el of page.querySelectorAll('[src]')) expect(el.getAttribute('src')).toMatch(/^data:image\/svg\+xml;base64,/);
    expect(page.querySelectorAll('link, iframe, object, embed, script')).toHaveLength(0);
    expect(html).toContain('exported 2026-12-01 19:30 UTC');
  });

  it('escapes the title, summaries, text and table cells', () => {
    expect(page.querySelector('title')?.textContent).toBe(XSS);
    expect(page.querySelector('h1')?.textContent).toBe(XSS);
    expect(html).toContain(escapeHtml(XSS));
    expect(html).not.toContain(XSS);
    expect(page.querySelector('.experiment .summary')?.textContent).toBe(evil('summary'));
    expect(page.querySelector('.experiment pre')?.textContent).toBe(evil('text'));
    const rows = [...page.querySelectorAll('.comparison tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent));
    expect(rows).toEqual([['h2o', '0.25'], [evil('cell'), '']]);
    expect([...page.querySelectorAll('.comparison th')].map((th) => th.textContent)).toEqual(['lane', evil('col')]);
    // the markdown's raw <script> is text (its markup is checked in Chromium, where DOMPurify runs)
    expect(page.querySelector('.markdown')?.textContent).toContain('<script>alert(1)</script>');
  });

  it('shows figures as data: images with escaped alt text, and links as absolute links', () => {
    const img = page.querySelector('.experiment img')!;
    expect(img.getAttribute('alt')).toBe(`${evil('Cache map')} — tiny · h2o · "step" 12`);
    const src = img.getAttribute('src')!;
    const svg = new TextDecoder().decode(Uint8Array.from(atob(src.split(',')[1]), (ch) => ch.charCodeAt(0)));
    expect(svg).toBe(SVG);
    expect([...page.querySelectorAll('section a')].map((a) => a.getAttribute('href'))).toEqual([
      'https://kvscope.example/?x=a&b=%3Cc%3E',
      'https://kvscope.example/compare?l=1',
      'https://kvscope.example/bench?c=1',
    ]);
  });

  it('without an origin, shows each link as text', () => {
    const plain = new DOMParser().parseFromString(notebookHtml(sample()), 'text/html');
    expect(plain.querySelectorAll('section a')).toHaveLength(0);
    expect([...plain.querySelectorAll('.record code')].map((code) => code.textContent)).toEqual(['/?x=a&b=<c>', '/compare?l=1', '/bench?c=1']);
    expect(notebookHtmlFileName({ ...sample(), title: 'H2O vs TOVA: notes!' })).toBe('H2O-vs-TOVA-notes.html');
    expect(notebookHtmlFileName({ ...sample(), title: '★★★' })).toBe('notebook.html');
  });
});
