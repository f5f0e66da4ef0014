/**
 * The XSS trap of the security end-to-end test (security.ts): installed in a browser context before
 * any page script, it replaces alert/confirm/prompt/print with counters in every page and frame and
 * counts browser dialogs; assertNothingRan then fails, naming where, when anything was called or an
 * injection left its marks in the document even before firing — an on* attribute (Svelte attaches
 * its listeners as properties, so any such attribute was injected), a javascript: URL, a script that
 * mentions alert or xss.invalid, a frame, object, embed, <base> or refresh in the body.
 */
import type { BrowserContext, Page } from 'playwright-core';
import { AssertionError, assert, assertEqual } from './harness.ts';

/** the trapped functions: each counts its calls instead of doing anything */
const TRAPPED = ['alert', 'confirm', 'prompt', 'print'] as const;
/** attributes that hold URLs a browser follows or runs */
const URL_ATTRIBUTES = ['href', 'xlink:href', 'src', 'action', 'formaction', 'data', 'background', 'dynsrc', 'lowsrc', 'poster', 'values', 'to', 'from'];

/** what the trap keeps in every page and frame: the calls of the trapped functions */
export interface TrapWindow {
  __xssHits: number;
  __xssCalls: string[];
}

/** what the test side keeps: the browser dialogs any page of the context opened (dismissed) */
export interface Trap {
  dialogs: string[];
}

/**
 * The trap, as source text: a function handed to addInitScript would go through the test runner's
 * transform, which wraps named functions in a __name helper the page does not have.
 */
const TRAP_SCRIPT = `(() => {
  window.__xssHits = 0;
  window.__xssCalls = [];
  for (const name of ${JSON.stringify(TRAPPED)}) {
    Object.defineProperty(window, name, {
      configurable: false,
      writable: false,
      value: function () {
        window.__xssHits++;
        window.__xssCalls.push(name + '(' + Array.from(arguments).map(String).join(', ') + ')');
        return name === 'confirm' ? false : null;
      },
    });
  }
})();`;

export async function installTrap(context: BrowserContext): Promise<Trap> {
  await context.addInitScript({ content: TRAP_SCRIPT });
  const trap: Trap = { dialogs: [] };
  context.on('dialog', (dialog) => {
    trap.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    void dialog.dismiss().catch(() => undefined);
  });
  return trap;
}

/** Proves the trap is in place on this page: a call of each trapped function counts, then the count is cleared. */
export async function assertTrapped(page: Page): Promise<void> {
  const counted = await page.evaluate((names) => {
    const w = window as unknown as TrapWindow & Record<string, (text: string) => unknown>;
    for (const name of names) w[name]('trap self-test');
    const hits = w.__xssHits;
    w.__xssHits = 0;
    w.__xssCalls = [];
    return hits;
  }, TRAPPED);
  assertEqual(counted, TRAPPED.length, 'trapped self-test calls (the trap is installed before the page\'s scripts)');
}

/** Fails, naming `where`, when anything ran or an injection left its marks in the document. */
export async function assertNothingRan(page: Page, trap: Trap, where: string): Promise<void> {
  const found = await page.evaluate(
    ({ urlAttributes, trapped }) => {
      const problems: string[] = [];
      const w = window as unknown as TrapWindow & Record<string, unknown>;
      for (const name of trapped) if (!String(w[name]).includes('__xssHits')) problems.push(`the trap on ${name}() is not installed: nothing would be counted`);
      if (w.__xssHits !== 0) problems.push(`${w.__xssHits} trapped call(s): ${w.__xssCalls.join('; ')}`);
      // (no named helpers in here: the test runner's transform would wrap them in a __name call the page lacks)
      for (const el of document.querySelectorAll('*')) {
        const tag = `<${el.localName}${el.getAttribute('data-testid') ? ` data-testid="${el.getAttribute('data-testid')}"` : ''}>`;
        for (const attr of el.attributes) {
          const name = attr.name.toLowerCase();
          if (name.startsWith('on')) problems.push(`${tag} has the attribute ${name}="${attr.value.slice(0, 80)}"`);
          // browsers ignore control characters and spaces inside a scheme ("jav\tascript:")
          if (urlAttributes.includes(name) && /^javascript:/i.test(attr.value.replace(/[\u0000-\u0020\u007f]/g, ''))) {
            problems.push(`${tag} has ${name}="${attr.value.slice(0, 80)}"`);
          }
        }
      }
      for (const script of document.querySelectorAll('script')) {
        const text = `${script.textContent ?? ''} ${script.getAttribute('src') ?? ''}`;
        if (/alert|xss\.invalid/i.test(text)) problems.push(`an injected <script>: ${text.trim().slice(0, 80)}`);
      }
      for (const el of document.body?.querySelectorAll('iframe, object, embed, meta[http-equiv], base') ?? []) {
        problems.push(`an injected <${el.localName}> in the body: ${el.outerHTML.slice(0, 100)}`);
      }
      return problems;
    },
    { urlAttributes: URL_ATTRIBUTES, trapped: TRAPPED },
  );
  const problems = [...found, ...trap.dialogs.map((d) => `a dialog opened (${d})`)];
  if (problems.length > 0) throw new AssertionError(`something ran or was injected ${where}:\n  ${problems.join('\n  ')}`);
}

/** Proves the check can fail: an injected image whose onerror calls alert is counted and named. */
export async function assertDetectorWorks(page: Page, trap: Trap): Promise<void> {
  await page.evaluate(() => {
    const probe = document.createElement('div');
    probe.id = 'xss-detector-probe';
    probe.innerHTML = '<img src="data:," onerror="alert(1)">';
    document.body.append(probe);
  });
  await page.waitForFunction(() => (window as unknown as TrapWindow).__xssHits > 0, null, { timeout: 5_000 });
  const caught = await assertNothingRan(page, trap, 'by the probe').then(
    () => '',
    (error: Error) => error.message,
  );
  assert(caught.includes('1 trapped call(s): alert(1)') && caught.includes('has the attribute onerror="alert(1)"'), `the check sees an injected onerror (${caught})`);
  await page.evaluate(() => {
    const w = window as unknown as TrapWindow;
    document.getElementById('xss-detector-probe')?.remove();
    w.__xssHits = 0;
    w.__xssCalls = [];
  });
}
