/** Chart helpers: colour scales, max-pooled rasterization, readable token labels. */
import { describe, expect, it } from 'vitest';
import { attentionIndexer, EMPTY_COLORS, packColor, VIRIDIS_LUT } from '../../src/lib/charts/colors.ts';
import { maxWeight, rasterizeHead, type HistoryRow } from '../../src/lib/charts/raster.ts';
import { formatBytes, formatProb, labelPiece, streamPiece } from '../../src/lib/format.ts';

function row(step: number, weights: number[][], heads = 1): HistoryRow {
  // weights[head][token]; one layer
  const tokens = weights[0].length;
  const flat = new Float32Array(heads * tokens);
  weights.forEach((w, h) => flat.set(w, h * tokens));
  return { step, tokens, heads, weights: flat };
}

describe('attention colour scale', () => {
  it('maps linear weights onto 0…255 and clamps', () => {
    const index = attentionIndexer('linear', 0.5);
    expect(index(0)).toBe(0);
    expect(index(0.25)).toBe(128);
    expect(index(0.5)).toBe(255);
    expect(index(0.9)).toBe(255);
  });
  it('spans four decades in log mode', () => {
    const index = attentionIndexer('log', 1);
    expect(index(1)).toBe(255);
    expect(index(1e-4)).toBe(0);
    expect(index(1e-2)).toBe(128);
    expect(index(1e-7)).toBe(0);
    expect(index(0)).toBe(0);
  });
  it('viridis runs from dark purple to yellow', () => {
    expect(VIRIDIS_LUT[0]).toBe(packColor('#440154'));
    expect(VIRIDIS_LUT[255]).toBe(packColor('#fde725'));
  });
});

describe('rasterizeHead', () => {
  const style = { excludeSink: false, index: attentionIndexer('linear', 1) };

  it('max-pools tokens into pixels so that a single peak survives', () => {
    const weights = new Array(100).fill(0.001);
    weights[57] = 0.9;
    const rows = [row(0, [weights])];
    const pixels = new Uint32Array(10);
    rasterizeHead(pixels, 10, 0, 0, 10, 1, rows, 0, 0, 0, 100, style);
    expect(pixels[5]).toBe(VIRIDIS_LUT[attentionIndexer('linear', 1)(Math.fround(0.9))]);
    expect(pixels[4]).toBe(VIRIDIS_LUT[0]);
  });

  it('shows tokens a head does not hold, future tokens, and an excluded sink distinctly', () => {
    const rows = [row(0, [[0.5, NaN, 0.5]]), row(1, [[0.2, NaN, 0.3, 0.5]])];
    const pixels = new Uint32Array(4 * 2);
    rasterizeHead(pixels, 4, 0, 0, 4, 2, rows, 0, 0, 0, 4, { excludeSink: true, index: attentionIndexer('linear', 0.5) });
    expect(pixels[0]).toBe(packColor(EMPTY_COLORS.sink));
    expect(pixels[1]).toBe(packColor(EMPTY_COLORS.notHeld));
    expect(pixels[2]).toBe(VIRIDIS_LUT[255]);
    expect(pixels[3]).toBe(packColor(EMPTY_COLORS.background)); // token 3 did not exist at step 0
    expect(pixels[4 + 3]).toBe(VIRIDIS_LUT[255]);
  });

  it('stretches rows over the pixel height, newest at the bottom', () => {
    const rows = [row(0, [[1, 0]]), row(1, [[0, 1]])];
    const pixels = new Uint32Array(2 * 4);
    rasterizeHead(pixels, 2, 0, 0, 2, 4, rows, 0, 0, 0, 2, style);
    expect([pixels[0], pixels[2], pixels[4], pixels[6]]).toEqual([VIRIDIS_LUT[255], VIRIDIS_LUT[255], VIRIDIS_LUT[0], VIRIDIS_LUT[0]]);
    expect(pixels[7]).toBe(VIRIDIS_LUT[255]);
  });

  it('finds the colour domain without the sink when asked', () => {
    const rows = [row(0, [[0.9, 0.05, 0.05], [0.1, 0.6, 0.3]], 2)];
    expect(maxWeight(rows, [[0, 0], [0, 1]], 0, 3, false)).toBeCloseTo(0.9);
    expect(maxWeight(rows, [[0, 0]], 0, 3, true)).toBeCloseTo(0.05);
    expect(maxWeight(rows, [[0, 1]], 0, 3, true)).toBeCloseTo(0.6);
  });
});

describe('token labels', () => {
  it('makes whitespace and control bytes visible and never shows a replacement character', () => {
    expect(labelPiece(' the')).toBe('␣the');
    expect(labelPiece('\n')).toBe('↵');
    expect(labelPiece('\t\x01')).toBe('⇥<0x01>');
    expect(labelPiece('')).toBe('∅');
    expect(streamPiece(' a\nb')).toBe(' a↵b');
    expect(labelPiece('<0xE2>')).toBe('<0xE2>');
    for (const s of [' the', '\n', '<0xE2><0x80>', 'é']) expect(labelPiece(s)).not.toContain('\uFFFD');
  });
  it('formats bytes and probabilities', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(4096)).toBe('4.0 KiB');
    expect(formatBytes(4 * 1024 * 1024)).toBe('4.00 MiB');
    expect(formatProb(0.4271)).toBe('0.43');
    expect(formatProb(0.0042)).toBe('0.004');
    expect(formatProb(0.00004)).toBe('4e-5');
  });
});

describe('export captions', async () => {
  const { captionLines } = await import('../../src/lib/charts/export.ts');
  it('wraps a long caption at its separators to fit the figure', () => {
    const caption = 'kvscope Llama 8L (7.1M) · step 7 · policy window:size=16 · T=0.8, top-k 40, top-p 0.95, seed 1';
    expect(captionLines(caption, 2000)).toEqual([caption]);
    const lines = captionLines(caption, 300);
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.join(' · ')).toBe(caption);
    expect(captionLines('', 300)).toEqual([]);
  });
});
