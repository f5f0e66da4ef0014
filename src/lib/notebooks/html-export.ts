/**
 * A notebook as one self-contained static HTML page: inline CSS, figures as data: images, no script
 * at all and nothing fetched (its Content-Security-Policy forbids both), so it can be mailed, archived
 * or opened from disk years later. Markdown goes through renderMarkdown (sanitized); every other
 * string is escaped text. Figures stay SVG behind <img>, where no script inside them can run.
 */
import { base64FromText } from '../base64.ts';
import { notebookFileStem } from './bundle.ts';
import { escapeHtml, renderMarkdown } from './markdown.ts';
import type { Cell, DataTable, FigureSnapshot, Notebook } from './types.ts';

export { escapeHtml } from './markdown.ts';

const CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'";

const KIND_LABEL: Record<Exclude<Cell['kind'], 'markdown'>, string> = {
  experiment: 'Experiment',
  comparison: 'Comparison',
  evaluation: 'Evaluation',
};

const STYLE = `
:root { color-scheme: light dark; --muted: #666; --line: #ddd; }
@media (prefers-color-scheme: dark) { :root { --muted: #aaa; --line: #444; } }
body { font: 16px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; }
header { border-bottom: 1px solid var(--line); margin-bottom: 1.5rem; }
.meta, .summary { color: var(--muted); font-size: 0.9rem; }
section.cell { margin: 1.5rem 0; }
section.record { border: 1px solid var(--line); border-radius: 6px; padding: 0.75rem 1rem; }
section.record h2 { font-size: 1rem; margin: 0 0 0.25rem; }
figure { margin: 0.75rem 0; }
figure img { max-width: 100%; height: auto; background: #fff; }
figcaption { color: var(--muted); font-size: 0.85rem; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: rgba(127,127,127,0.1); padding: 0.5rem; border-radius: 4px; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border: 1px solid var(--line); padding: 0.2rem 0.5rem; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
`;

export interface NotebookHtmlOptions {
  /** the app's origin (e.g. location.origin): links become absolute so they open kvscope */
  origin?: string;
  exportedAt?: Date;
}

export function notebookHtml(notebook: Notebook, options: NotebookHtmlOptions = {}): string {
  const exportedAt = options.exportedAt ?? new Date();
  const cells = notebook.cells.map((cell) => cellHtml(cell, options.origin)).join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(notebook.title)}</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>${escapeHtml(notebook.title)}</h1>
<p class="meta">A kvscope notebook, exported ${escapeHtml(exportedAt.toISOString().slice(0, 16).replace('T', ' '))} UTC.</p>
</header>
${cells}
</body>
</html>
`;
}

/** "<title>.html" for the download ("notebook.html" when the title has no letter or digit to keep). */
export function notebookHtmlFileName(notebook: Notebook): string {
  return `${notebookFileStem(notebook.title) ?? 'notebook'}.html`;
}

function cellHtml(cell: Cell, origin: string | undefined): string {
  if (cell.kind === 'markdown') return `<section class="cell markdown">${renderMarkdown(cell.text)}</section>`;
  const parts = [`<h2>${KIND_LABEL[cell.kind]}</h2>`];
  if (cell.summary) parts.push(`<p class="summary">${escapeHtml(cell.summary)}</p>`);
  if (cell.figure) parts.push(figureHtml(cell.figure));
  if (cell.kind === 'experiment' && cell.text) parts.push(`<pre>${escapeHtml(cell.text)}</pre>`);
  if (cell.kind !== 'experiment') parts.push(tableHtml(cell.table));
  parts.push(linkHtml(cell.link, origin));
  return `<section class="cell record ${cell.kind}">\n${parts.join('\n')}\n</section>`;
}

function figureHtml(figure: FigureSnapshot): string {
  const alt = figure.caption ? `${figure.title} — ${figure.caption}` : figure.title;
  const src = `data:image/svg+xml;base64,${base64FromText(figure.svg)}`;
  const caption = [figure.title, figure.caption].filter(Boolean).map(escapeHtml).join('<br>');
  return `<figure><img alt="${escapeHtml(alt)}" src="${src}"><figcaption>${caption}</figcaption></figure>`;
}

function tableHtml(table: DataTable): string {
  const head = table.columns.map((column) => `<th>${escapeHtml(column)}</th>`).join('');
  const rows = table.rows.map((row) => {
    const cells = row.map((value) => (typeof value === 'number' ? `<td class="number">${value}</td>` : `<td>${escapeHtml(value ?? '')}</td>`));
    return `<tr>${cells.join('')}</tr>`;
  });
  return `<table><thead><tr>${head}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

/** The cell's link, absolute when the origin is known; without it, the relative link as text. */
function linkHtml(link: string, origin: string | undefined): string {
  const url = origin && link.startsWith('/') && !link.startsWith('//') ? absolute(link, origin) : null;
  if (!url) return `<p class="meta">Replay in kvscope: <code>${escapeHtml(link)}</code></p>`;
  return `<p class="meta"><a href="${escapeHtml(url)}" rel="noopener noreferrer">Open in kvscope</a></p>`;
}

function absolute(link: string, origin: string): string | null {
  try {
    const url = new URL(link, origin);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch {
    return null;
  }
}

