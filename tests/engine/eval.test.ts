/** engine/eval on the tiny fixture: budget mapping, perplexity protocol, needle grid, the driver. */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { PolicySpecError } from '../../engine/errors.ts';
import {
  BUDGET_RULES,
  budgetTable,
  DEFAULT_BUDGETS,
  EvalSettingsError,
  expandRuns,
  explicitParamNames,
  formatEvalReport,
  needlePrompts,
  needleRun,
  needleSettings,
  perplexityRun,
  planEval,
  pplSettings,
  runEval,
  specForBudget,
  UNBUDGETED,
} from '../../engine/eval/index.ts';
import { fillerSentences, heldoutWindows } from '../../engine/metrics/heldout.ts';
import { perplexity } from '../../engine/metrics/perplexity.ts';
import { POLICIES } from '../../engine/policies/index.ts';
import { parsePolicySpec } from '../../engine/policies/spec.ts';
import { fixtureModel } from './helpers/fixture.ts';

const HELDOUT = fileURLToPath(new URL('../../static/data/heldout.json', import.meta.url));

async function documents(): Promise<string[]> {
  const json = JSON.parse(await readFile(HELDOUT, 'utf8')) as { documents: { text: string }[] };
  return json.documents.map((d) => d.text);
}

describe('budget mapping', () => {
  it('maps every budget of every budgeted policy to a valid spec with the mapped parameters', () => {
    for (const policy of POLICIES) {
      if (UNBUDGETED.includes(policy.id)) continue;
      const rule = BUDGET_RULES[policy.id];
      expect(rule, `${policy.id} has a budget rule`).toBeDefined();
      for (const budget of [...DEFAULT_BUDGETS, rule.min, 1000]) {
        const spec = specForBudget(policy.id, budget);
        const parsed = parsePolicySpec(spec);
        expect(parsed.id).toBe(policy.id);
        for (const [name, value] of Object.entries(rule.map(budget))) expect(parsed.params[name], `${spec}: ${name}`).toBe(value);
      }
      expect(() => specForBudget(policy.id, rule.min - 1)).toThrow(PolicySpecError);
    }
  });

  it('keeps the other parameters of a spec and documents every policy', () => {
    expect(specForBudget('h2o:accumulate=mean', 128)).toBe('h2o:heavy=64,recent=64,accumulate=mean,gqa=sum');
    expect(specForBudget('streaming:positions=p1', 64)).toBe('streaming:sinks=4,recent=60,positions=p1');
    expect(specForBudget('razor', 64)).toContain('sinks=4,recent=59');
    expect(budgetTable().map((r) => r.id)).toEqual(POLICIES.map((p) => p.id));
    expect(budgetTable().every((r) => r.mapping.length > 0)).toBe(true);
    expect(explicitParamNames('h2o:heavy=8, recent=4')).toEqual(['heavy', 'recent']);
  });

  it('expands specs over budgets; full and explicit budget parameters run once', () => {
    const runs = expandRuns(['full', 'window', 'window:size=8', 'h2o:gqa=max', 'all'].slice(0, 4), [128, 64]);
    expect(runs.map((r) => [r.id, r.budget])).toEqual([
      ['full', null],
      ['window', 64],
      ['window', 128],
      ['window', null],
      ['h2o', 64],
      ['h2o', 128],
    ]);
    expect(runs[3].spec).toBe('window:size=8');
    expect(expandRuns(['all'], [64]).map((r) => r.id)).toEqual(POLICIES.map((p) => p.id));
    expect(() => expandRuns(['nope'], [64])).toThrow(/unknown policy/);
    expect(() => expandRuns(['window'], [64, 64])).toThrow(/twice/);
    expect(() => expandRuns(['window'], [0])).toThrow(/positive integers/);
    expect(() => expandRuns([], [64])).toThrow(/no policy/);
    expect(() => expandRuns(['streaming'], [4])).toThrow(/≥ 5/);
  });
});

describe('settings', () => {
  it('fills defaults that fit the model and rejects what does not', () => {
    expect(pplSettings(256)).toEqual({ windows: 2, tokens: 256, prefix: 32, seed: 0 });
    expect(needleSettings(256).lengths).toEqual([248]);
    expect(needleSettings(1024).lengths).toEqual([256, 512, 1000]);
    expect(() => pplSettings(256, { tokens: 300 })).toThrow(EvalSettingsError);
    expect(() => pplSettings(256, { tokens: 64, prefix: 64 })).toThrow(EvalSettingsError);
    expect(() => needleSettings(256, { depths: [1.5] })).toThrow(/depths/);
    expect(() => needleSettings(256, { lengths: [300] })).toThrow(/prompt length/);
  });
});

describe('perplexity with a policy', () => {
  it('with the full cache equals the engine perplexity of the same window and prefix', async () => {
    const model = await fixtureModel();
    const [window] = heldoutWindows(model.tokenizer, await documents(), { windows: 1, tokens: 80, seed: 3 });
    const ours = await perplexityRun(model, [window], 'full', 8);
    const engine = await perplexity(model, window, { prefix: 8 });
    expect(ours.scored).toBe(engine.scored);
    expect(ours.meanNll).toBeCloseTo(engine.meanNll, 10);
    expect(ours.perplexity).toBeCloseTo(engine.perplexity, 8);
    expect(ours.memoryRatio.mean).toBe(1);
    expect(ours.nllByPosition.from[0]).toBe(8);
  });

  it('evicts while the text is fed: a window holds its budget and scores differently', async () => {
    const model = await fixtureModel();
    const [window] = heldoutWindows(model.tokenizer, await documents(), { windows: 1, tokens: 96, seed: 1 });
    const small = await perplexityRun(model, [window], 'window:size=8', 4);
    const full = await perplexityRun(model, [window], 'full', 4);
    expect(small.entries.last).toBe(8);
    expect(small.memoryRatio.last).toBeLessThan(0.1);
    expect(small.meanNll).not.toBeCloseTo(full.meanNll, 6);
  });
});

describe('needle grid', () => {
  it('has one cell per length × depth with the trials asked for, and is deterministic', async () => {
    const model = await fixtureModel();
    const sentences = fillerSentences(await documents());
    const settings = needleSettings(256, { lengths: [80, 120], depths: [0, 0.5, 1], trials: 2, seed: 5 });
    const prompts = needlePrompts(model.tokenizer, sentences, settings);
    expect(prompts).toHaveLength(6);
    expect(prompts.every((c) => c.length === 2)).toBe(true);
    // the same prompts whatever the policy: they depend on the grid coordinates and the seed only
    const again = needlePrompts(model.tokenizer, sentences, settings);
    expect(again.map((c) => c.map((p) => p.key))).toEqual(prompts.map((c) => c.map((p) => p.key)));
    expect(prompts[0][0].ids.length).toBeLessThanOrEqual(80);

    const a = await needleRun(model, prompts, settings, 'window:size=16');
    const b = await needleRun(model, prompts, settings, 'window:size=16');
    expect(a.cells.map((c) => [c.length, c.depth, c.trials])).toEqual([
      [80, 0, 2],
      [80, 0.5, 2],
      [80, 1, 2],
      [120, 0, 2],
      [120, 0.5, 2],
      [120, 1, 2],
    ]);
    expect(a.trials).toBe(12);
    expect(b.cells.map((c) => c.examples)).toEqual(a.cells.map((c) => c.examples));
    expect(a.entries.mean).toBeLessThanOrEqual(16);
  });
});

describe('runEval', () => {
  it('gives one record per policy given, one row per budget, and the mapping', async () => {
    const model = await fixtureModel();
    const progress: number[] = [];
    const report = await runEval(
      model,
      await documents(),
      { task: 'ppl', policies: ['full', 'streaming'], budgets: [16, 32], ppl: { windows: 1, tokens: 48, prefix: 8 } },
      { onProgress: (p) => progress.push(p.done) },
    );
    expect(report.format).toBe('kvscope-eval');
    expect(report.records.map((r) => [r.policy, r.rows.map((row) => row.budget)])).toEqual([
      ['full', [null]],
      ['streaming', [16, 32]],
    ]);
    expect(report.records[1].rows[0].spec).toBe('streaming:sinks=4,recent=12,positions=p2');
    expect(report.budgetMapping.map((m) => m.id)).toEqual(['full', 'streaming']);
    expect(progress.at(-1)).toBe(3 * 40);
    expect(report.cancelled).toBe(false);
    expect(formatEvalReport(report)).toMatch(/streaming\s+[\d.]+ \(1[0-9]\)\s+[\d.]+ \(\d+\)/);
    // JSON round trip
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });

  it('stops when cancelled and keeps the rows that finished', async () => {
    const model = await fixtureModel();
    const controller = new AbortController();
    const report = await runEval(
      model,
      await documents(),
      { task: 'ppl', policies: ['window'], budgets: [8, 16, 32], ppl: { windows: 1, tokens: 40, prefix: 4 } },
      {
        signal: controller.signal,
        onRow: () => controller.abort(),
      },
    );
    expect(report.cancelled).toBe(true);
    expect(report.records[0].rows).toHaveLength(1);
  });

  it('checks everything before running: specs, settings and calibration', async () => {
    const model = await fixtureModel();
    expect(() => planEval(model, { task: 'ppl', policies: ['window'], ppl: { tokens: 999 } })).toThrow(EvalSettingsError);
    expect(() => planEval(model, { task: 'ppl', policies: ['razor'], budgets: [64] })).toThrow(/calibration/);
    await expect(runEval(model, await documents(), { task: 'bogus' as 'ppl', policies: ['full'] })).rejects.toThrow(/unknown task/);
  });
});
