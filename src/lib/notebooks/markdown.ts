/**
 * Markdown cells to safe HTML, in two layers.
 *
 * 1. markdownHtml: `marked` (GitHub-flavoured) with a renderer that is safe on its own. Raw HTML in
 *    a cell is shown as the text it is (a note is markdown, and a bundle from someone else must not
 *    slip markup in); link URLs must be http(s), mailto or relative, anything else (`javascript:`,
 *    `data:`, …) keeps only its text; links open in a new tab without handing it this page
 *    (rel="noopener noreferrer"). Only relative images are drawn: a remote one becomes a link (see
 *    `image` below). Pure string work: runs anywhere.
 * 2. renderMarkdown: that HTML through DOMPurify, the browser's second line. DOMPurify needs a real
 *    DOM: under happy-dom it mangles markup (cure53/DOMPurify#1457, "happy-dom is not supported"),
 *    so tests check layer 1 in happy-dom and the whole in Chromium (tests/ui/notebook-markdown-browser).
 */
import DOMPurify, { type DOMPurify as Purifier } from 'dompurify';
import { Marked, type Tokens } from 'marked';

/** Escapes text for HTML element content and quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

const SAFE_SCHEMES = new Set(['http', 'https', 'mailto']);

/** The URL if following it cannot run anything: a safe scheme, or none at all (relative). */
function safeUrl(href: string, schemes: Set<string>): string | null {
  // browsers ignore control characters and spaces inside a scheme ("java\tscript:")
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(href.replace(/[\u0000-\u0020\u007f]/g, ''));
  return scheme && !schemes.has(scheme[1].toLowerCase()) ? null : href.trim();
}

/** No scheme and no host: a path on this site ("//host/x" and "/\\host/x" name another host). */
function isRelative(href: string): boolean {
  const compact = href.replace(/[\u0000-\u0020\u007f]/g, '');
  return !/^[a-z][a-z0-9+.-]*:/i.test(compact) && !/^[/\\]{2}/.test(compact);
}

const titleAttribute = (title: string | null | undefined): string => (title ? ` title="${escapeHtml(title)}"` : '');

const markdown = new Marked({
  gfm: true,
  renderer: {
    html: ({ text }) => escapeHtml(text),
    link(token: Tokens.Link) {
      const inner = this.parser.parseInline(token.tokens);
      const url = safeUrl(token.href, SAFE_SCHEMES);
      if (url === null) return inner;
      return `<a href="${escapeHtml(url)}"${titleAttribute(token.title)} target="_blank" rel="noopener noreferrer">${inner}</a>`;
    },
    image(token: Tokens.Image) {
      // A remote image would be fetched by whoever opens the notebook (an imported bundle could
      // track its readers), breaks offline and is blocked by the HTML export's CSP anyway: it is
      // shown as a link named by its alt text, followed only if the reader chooses to.
      if (isRelative(token.href)) return `<img src="${escapeHtml(token.href.trim())}" alt="${escapeHtml(token.text)}"${titleAttribute(token.title)}>`;
      const url = safeUrl(token.href, SAFE_SCHEMES);
      const label = escapeHtml(token.text || token.href);
      if (url === null) return label;
      return `<a href="${escapeHtml(url)}"${titleAttribute(token.title)} target="_blank" rel="noopener noreferrer">${label}</a>`;
    },
  },
});

/** Layer 1 alone: the markdown as HTML that is safe by construction (no DOM needed). */
export function markdownHtml(text: string): string {
  return markdown.parse(text, { async: false });
}

let purifier: Purifier | null = null;

/** One DOMPurify of our own, so its hook does not reach other users of the shared instance. */
function sanitizer(): Purifier {
  if (purifier) return purifier;
  if (typeof window === 'undefined') throw new Error('renderMarkdown needs a DOM: call it in the browser.');
  const instance = DOMPurify(window);
  // DOMPurify drops `target`; put the new-tab pair back on every link that kept its href
  instance.addHook('afterSanitizeAttributes', (node) => {
    if (node instanceof window.Element && node.nodeName === 'A' && node.hasAttribute('href')) {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer');
    }
  });
  purifier = instance;
  return instance;
}

/** A markdown cell's text as sanitized HTML, ready for {@html}. */
export function renderMarkdown(text: string): string {
  return sanitizer().sanitize(markdownHtml(text));
}
