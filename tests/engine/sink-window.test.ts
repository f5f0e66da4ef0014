/** The sink ablation (engine/metrics/sink-window.ts): late perplexity with and without sinks, through engine/eval/perplexity.ts. */
import { describe, expect, it } from 'vitest';
import { perplexityRun } from '../../engine/eval/perplexity.ts';
import { perplexity } from '../../engine/metrics/perplexity.ts';
import { phenomenaSettings } from '../../engine/metrics/phenomena.ts';
import { firstEvictingPosition, latePerplexity, sinkAblation, sinkAblationPlan } from '../../engine/metrics/sink-window.ts';
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

describe('sinkAblationPlan', () => {
  it('starts late positions where every kept budget evicts, and leaves out budgets that do not fit', () => {
    expect(sinkAblationPlan(1024)).toEqual({ prefix: 32, lateFrom: 512, budgets: [64, 128], leftOut: [] });
    // 128 + 2 > 256 / 2: the late positions start where budget 128 first loses a token
    expect(sinkAblationPlan(256)).toEqual({ prefix: 32, lateFrom: 130, budgets: [64, 128], leftOut: [] });
    const hundred = sinkAblationPlan(100);
    expect(hundred).toMatchObject({ prefix: 25, lateFrom: 66, budgets: [64] });
    expect(hundred.leftOut).toEqual([{ budget: 128, reason: 'first evicts at position 130, too late in a window of 100 tokens (at most 75)' }]);
    // a context below 66 once threw (prefix 32 ≥ lateFrom): now no budget fits and the full cache still runs
    expect(sinkAblationPlan(48)).toMatchObject({ prefix: 12, lateFrom: 24, budgets: [] });
    expect(sinkAblationPlan(48).leftOut.map((b) => b.budget)).toEqual([64, 128]);
    expect(sinkAblationPlan(3)).toEqual({ prefix: 1, lateFrom: 2, budgets: [], leftOut: expect.any(Array) });
  });

  it('with a fixed lateFrom, leaves out budgets that are not yet evicting there; refuses a prefix or lateFrom that cannot work', () => {
    const plan = sinkAblationPlan(64, { budgets: [32, 16, 4], prefix: 8, lateFrom: 33 });
    expect(plan.budgets).toEqual([16]);
    expect(plan.leftOut).toEqual([
      { budget: 4, reason: 'not an integer ≥ 5 (streaming keeps 4 sinks + at least 1 recent entry)' },
      { budget: 32, reason: 'first evicts at position 34, after the late positions start (33)' },
    ]);
    expect(() => sinkAblationPlan(64, { prefix: 63 })).toThrow(/prefix must be an integer from 1 to 62 .* got 63/);
    expect(() => sinkAblationPlan(2)).toThrow(/at least 3 tokens, got 2/);
  });

  it('phenomenaSettings never plans late positions before a budget evicts, for any context', () => {
    for (const context of [8, 16, 40, 48, 65, 66, 100, 130, 200, 256, 512, 2048, 8192]) {
      for (const quick of [false, true]) {
        const a = phenomenaSettings(context, { quick }).sinkAblation;
        expect(a.lateFrom).toBeGreaterThan(a.prefix);
        expect(a.lateFrom).toBeLessThan(a.tokens);
        for (const budget of a.budgets) expect(a.lateFrom).toBeGreaterThanOrEqual(firstEvictingPosition(budget));
        expect([...a.budgets, ...a.leftOut.map((b) => b.budget)].sort((x, y) => x - y)).toEqual([64, 128]);
      }
    }
  });
});

describe('firstEvictingPosition (tiny fixture)', () => {
  it('is the first position whose prediction differs from the full cache’s, with and without sinks', async () => {
    const model = await fixtureModel();
    const windows = [[1, ...tokenSequence(39, 3)]];
    const full = (await perplexityRun(model, windows, 'full', 8, { blockSize: 1 })).nllByPosition;
    for (const spec of ['window:size=16', 'streaming:sinks=4,recent=12']) {
      const run = (await perplexityRun(model, windows, spec, 8, { blockSize: 1 })).nllByPosition;
      const first = run.from.find((_, b) => Math.abs(run.meanNll[b] - full.meanNll[b]) > 1e-6);
      expect(first).toBe(firstEvictingPosition(16));
    }
  });
});

describe('sinkAblation (tiny fixture)', () => {
  it('a small window runs the budgets that fit and names the others, never throwing', async () => {
    const model = await fixtureModel();
    const small = await sinkAblation(model, [[1, ...tokenSequence(47, 4)]]);
    expect(small).toMatchObject({ windowTokens: 48, prefix: 12, lateFrom: 24, scored: 36, lateScored: 24, budgets: [] });
    expect(small.leftOut.map((b) => b.budget)).toEqual([64, 128]);
    expect(small.full.latePerplexity).toBeGreaterThan(1);
    const hundred = await sinkAblation(model, [[1, ...tokenSequence(99, 5)]], { budgets: [64, 128] });
    expect(hundred).toMatchObject({ prefix: 25, lateFrom: 66, lateScored: 34 });
    expect(hundred.budgets.map((b) => b.budget)).toEqual([64]);
    expect(hundred.leftOut.map((b) => b.budget)).toEqual([128]);
  });

  it('runs full, streaming and window at each budget over the same windows', async () => {
    const model = await fixtureModel();
    const windows = [1, 2].map((seed) => [1, ...tokenSequence(159, seed)]);
    const report = await sinkAblation(model, windows, { budgets: [16, 32], prefix: 8, lateFrom: 96 });
    expect(report).toMatchObject({ windows: 2, windowTokens: 160, prefix: 8, lateFrom: 96, scored: 2 * 152, lateScored: 2 * 64, leftOut: [] });
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
