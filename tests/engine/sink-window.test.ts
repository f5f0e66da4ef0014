/** The sink ablation (engine/metrics/sink-window.ts): late perplexity with and without sinks, through engine/eval/perplexity.ts. */
import { describe, expect, it } from 'vitest';
import { perplexity } from '../../engine/metrics/perplexity.ts';
import { latePerplexity, sinkAblation } from '../../engine/metrics/sink-window.ts';
import { fixtureModel, tokenSequence } from './helpers/fixture.ts';

describe('latePerplexity', () => {
  it('is exp of the mean per-position NLL from lateFrom on', () => {
    const byPosition = { blockSize: 1, from: [4, 5, 6, 7], meanNll: [9, 9, 1, 3] };
    const late = latePerplexity(byPosition, 6);
    expect(late.blocks).toBe(2);
    expect(late.perplexity).toBeCloseTo(Math.exp(2), 12);
    expect(latePerplexity(byPosition, 8).perplexity).toBeNaN();
    expect(() => latePerplexity({ blockSize: 64, from: [0], meanNll: [1] }, 0)).toThrow(/block size 1/);
  });
});

describe('sinkAblation (tiny fixture)', () => {
  it('runs full, streaming and window at each budget over the same windows', async () => {
    const model = await fixtureModel();
    const windows = [1, 2].map((seed) => [1, ...tokenSequence(159, seed)]);
    const report = await sinkAblation(model, windows, { budgets: [16, 32], prefix: 8, lateFrom: 96 });
    expect(report).toMatchObject({ windows: 2, windowTokens: 160, prefix: 8, lateFrom: 96, scored: 2 * 152, lateScored: 2 * 64 });
    // the full cache's figure is plain teacher-forced perplexity over the windows
    const nll = (await Promise.all(windows.map((w) => perplexity(model, w, { prefix: 8 })))).flatMap((r) => r.nll);
    expect(report.full.perplexity).toBeCloseTo(Math.exp(nll.reduce((a, b) => a + b, 0) / nll.length), 4);
    const lateNll = (await Promise.all(windows.map((w) => perplexity(model, w, { prefix: 8 })))).flatMap((r) => r.nll.slice(96 - 8));
    expect(report.full.latePerplexity).toBeCloseTo(Math.exp(lateNll.reduce((a, b) => a + b, 0) / lateNll.length), 4);
    expect(report.budgets.map((b) => b.budget)).toEqual([16, 32]);
    for (const row of report.budgets) {
      expect(row.withSinks.spec).toMatch(/^streaming:.*sinks=4/);
      expect(row.withoutSinks.spec).toBe(`window:size=${row.budget}`);
      expect(row.withSinks.entries).toBeLessThanOrEqual(row.budget);
      expect(row.withoutSinks.entries).toBeLessThanOrEqual(row.budget);
      expect(row.ratio).toBeCloseTo(row.withoutSinks.latePerplexity / row.withSinks.latePerplexity, 12);
      // evicting changes the late positions' predictions
      expect(row.withoutSinks.latePerplexity).not.toBeCloseTo(report.full.latePerplexity, 6);
    }
  });

  it('refuses windows of unequal length and late positions outside the window', async () => {
    const model = await fixtureModel();
    await expect(sinkAblation(model, [[1, 5, 6, 7], [1, 5, 6]])).rejects.toThrow(/equal length/);
    await expect(sinkAblation(model, [[1, ...tokenSequence(63, 1)]], { prefix: 8, lateFrom: 64 })).rejects.toThrow(/late positions must start after the prefix \(8\) and inside the window \(64\), got 64/);
  });
});
