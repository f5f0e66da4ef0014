/** Composing a chart (canvas + SVG layers laid out by CSS) into one standalone SVG. */
import { describe, expect, it } from 'vitest';
import { composeSvg } from '../../src/lib/charts/export.ts';

function box(element: Element, x: number, y: number, width: number, height: number): void {
  (element as HTMLElement).getBoundingClientRect = () => ({ x, y, left: x, top: y, width, height, right: x + width, bottom: y + height, toJSON: () => ({}) }) as DOMRect;
}

describe('composeSvg', () => {
  it('embeds canvases as images, nests SVG layers as vectors at their positions, and skips UI-only parts', () => {
    const root = document.createElement('div');
    root.innerHTML = `
      <svg class="axes"><text x="1" y="10">token index</text><rect data-export="skip" width="5" height="5"/></svg>
      <canvas></canvas>
      <div data-export="skip"><svg><text>hover help</text></svg></div>`;
    document.body.appendChild(root);
    box(root, 100, 50, 400, 300);
    const [svg, canvas] = [root.querySelector('svg')!, root.querySelector('canvas')!];
    box(svg, 100, 50, 400, 300);
    box(canvas, 160, 60, 300, 200);
    box(root.querySelectorAll('svg')[1], 100, 330, 100, 20);
    canvas.toDataURL = () => 'data:image/png;base64,AAAA';

    const out = composeSvg(root, { title: 'Layer 0 & head 1', caption: 'step 3' });
    expect(out.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(out).toContain('Layer 0 &amp; head 1');
    expect(out).toContain('step 3');
    expect(out).toMatch(/<image x="60\.0" y="\d+\.0" width="300\.0" height="200\.0"[^>]*href="data:image\/png;base64,AAAA"/);
    expect(out).toContain('token index');
    expect(out).not.toContain('hover help');
    expect(out).not.toMatch(/<rect[^>]*width="5"/);
    // well-formed XML
    const doc = new DOMParser().parseFromString(out, 'image/svg+xml');
    expect(doc.querySelector('parsererror')).toBeNull();
  });
});
