/**
 * Chart export (BertViz#13/#33: users want to save visualisations, in vector form too).
 *
 * A chart is a container element holding canvases (matrices) and SVGs (axes, legends, small
 * vector charts), laid out by CSS. `composeSvg` rebuilds that layout as one standalone SVG:
 * canvases become embedded PNG <image>s, SVGs are nested as vectors. `composePng` draws the same
 * layout onto a canvas at 2× for a PNG. Elements marked `data-export="skip"` are left out.
 */

const SVG_NS = 'http://www.w3.org/2000/svg';
const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif';

interface Part {
  kind: 'canvas' | 'svg';
  element: HTMLCanvasElement | SVGSVGElement;
  x: number;
  y: number;
  width: number;
  height: number;
}

function isSkipped(element: Element, root: Element): boolean {
  for (let e: Element | null = element; e && e !== root; e = e.parentElement) {
    if (e.getAttribute('data-export') === 'skip') return true;
  }
  return false;
}

/** Visible canvases and top-level SVGs of `root`, with positions relative to it. */
export function collectParts(root: HTMLElement): { parts: Part[]; width: number; height: number } {
  const box = root.getBoundingClientRect();
  const parts: Part[] = [];
  for (const element of root.querySelectorAll('canvas, svg')) {
    if (element.tagName.toLowerCase() === 'svg' && element.parentElement?.closest('svg')) continue; // nested svg
    if (isSkipped(element, root)) continue;
    const r = element.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    parts.push({
      kind: element instanceof HTMLCanvasElement ? 'canvas' : 'svg',
      element: element as HTMLCanvasElement | SVGSVGElement,
      x: r.left - box.left,
      y: r.top - box.top,
      width: r.width,
      height: r.height,
    });
  }
  return { parts, width: box.width, height: box.height };
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** A standalone copy of an inline SVG: explicit size, namespace, font and colour. */
export function standaloneSvg(svg: SVGSVGElement, width: number, height: number): SVGSVGElement {
  const copy = svg.cloneNode(true) as SVGSVGElement;
  copy.setAttribute('xmlns', SVG_NS);
  copy.setAttribute('width', String(width));
  copy.setAttribute('height', String(height));
  if (!copy.getAttribute('viewBox') && svg.viewBox?.baseVal && svg.viewBox.baseVal.width > 0) {
    const v = svg.viewBox.baseVal;
    copy.setAttribute('viewBox', `${v.x} ${v.y} ${v.width} ${v.height}`);
  }
  copy.setAttribute('font-family', copy.getAttribute('font-family') ?? FONT);
  const color = typeof getComputedStyle === 'function' ? getComputedStyle(svg).color : '';
  copy.setAttribute('color', color || '#222');
  copy.removeAttribute('class');
  copy.removeAttribute('style');
  for (const skipped of copy.querySelectorAll('[data-export="skip"]')) skipped.remove();
  return copy;
}

export interface ComposeOptions {
  title?: string;
  /** extra lines under the title (model, step, settings) */
  caption?: string;
}

const TITLE_HEIGHT = 24;
const CAPTION_HEIGHT = 15;

/** The caption split at " · " into lines that fit `width` (≈ 6 px per character at 11 px). */
export function captionLines(caption: string | undefined, width: number): string[] {
  if (!caption) return [];
  const fit = Math.max(20, Math.floor((width - 16) / 6));
  const lines: string[] = [];
  let line = '';
  for (const part of caption.split(' · ')) {
    const next = line ? `${line} · ${part}` : part;
    if (next.length > fit && line) {
      lines.push(line);
      line = part;
    } else line = next;
  }
  if (line) lines.push(line);
  return lines;
}

function header(options: ComposeOptions, width: number): number {
  const lines = captionLines(options.caption, width).length;
  return (options.title ? TITLE_HEIGHT : 0) + lines * CAPTION_HEIGHT + (options.title || lines ? 6 : 0);
}

/** The chart as one standalone SVG document (string). */
export function composeSvg(root: HTMLElement, options: ComposeOptions = {}): string {
  const { parts, width, height } = collectParts(root);
  const top = header(options, width);
  const W = Math.ceil(width);
  const H = Math.ceil(height + top);
  const out: string[] = [];
  out.push(
    `<svg xmlns="${SVG_NS}" xmlns:xlink="http://www.w3.org/1999/xlink" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family='${FONT}'>`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  let y = 0;
  if (options.title) {
    y += TITLE_HEIGHT;
    out.push(`<text x="8" y="${y - 6}" font-size="15" font-weight="600" fill="#111">${escapeXml(options.title)}</text>`);
  }
  for (const line of captionLines(options.caption, width)) {
    y += CAPTION_HEIGHT;
    out.push(`<text x="8" y="${y - 3}" font-size="11" fill="#555">${escapeXml(line)}</text>`);
  }
  const serializer = new XMLSerializer();
  for (const part of parts) {
    const px = part.x.toFixed(1);
    const py = (part.y + top).toFixed(1);
    if (part.kind === 'canvas') {
      const url = (part.element as HTMLCanvasElement).toDataURL('image/png');
      out.push(
        `<image x="${px}" y="${py}" width="${part.width.toFixed(1)}" height="${part.height.toFixed(1)}" preserveAspectRatio="none" style="image-rendering:pixelated" href="${url}" xlink:href="${url}"/>`,
      );
    } else {
      const copy = standaloneSvg(part.element as SVGSVGElement, part.width, part.height);
      copy.setAttribute('x', px);
      copy.setAttribute('y', py);
      copy.removeAttribute('xmlns');
      out.push(serializer.serializeToString(copy).replace(/ xmlns="http:\/\/www\.w3\.org\/2000\/svg"/, ''));
    }
  }
  out.push('</svg>');
  return out.join('\n');
}

function loadImage(url: string): Promise<HTMLImageElement> {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error('an SVG layer could not be rendered'));
    image.src = url;
  });
}

/** The chart as a PNG (2× resolution): canvases are copied directly, SVG layers rasterized. */
export async function composePng(root: HTMLElement, options: ComposeOptions = {}, scale = 2): Promise<Blob> {
  const { parts, width, height } = collectParts(root);
  const top = header(options, width);
  const canvas = document.createElement('canvas');
  canvas.width = Math.ceil(width * scale);
  canvas.height = Math.ceil((height + top) * scale);
  const ctx = canvas.getContext('2d');
  if (!ctx) throw new Error('canvas 2D is unavailable');
  ctx.scale(scale, scale);
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, width, height + top);
  let y = 0;
  if (options.title) {
    y += TITLE_HEIGHT;
    ctx.fillStyle = '#111';
    ctx.font = `600 15px ${FONT}`;
    ctx.fillText(options.title, 8, y - 6);
  }
  for (const line of captionLines(options.caption, width)) {
    y += CAPTION_HEIGHT;
    ctx.fillStyle = '#555';
    ctx.font = `11px ${FONT}`;
    ctx.fillText(line, 8, y - 3);
  }
  const serializer = new XMLSerializer();
  for (const part of parts) {
    if (part.kind === 'canvas') {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(part.element as HTMLCanvasElement, part.x, part.y + top, part.width, part.height);
      continue;
    }
    const copy = standaloneSvg(part.element as SVGSVGElement, part.width, part.height);
    const blob = new Blob([serializer.serializeToString(copy)], { type: 'image/svg+xml' });
    const url = URL.createObjectURL(blob);
    try {
      const image = await loadImage(url);
      ctx.drawImage(image, part.x, part.y + top, part.width, part.height);
    } finally {
      URL.revokeObjectURL(url);
    }
  }
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('PNG encoding failed'))), 'image/png'));
}

export function downloadBlob(blob: Blob, fileName: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function downloadText(text: string, fileName: string, type = 'application/json'): void {
  downloadBlob(new Blob([text], { type }), fileName);
}

export function safeFileName(text: string): string {
  return text.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 80) || 'chart';
}
