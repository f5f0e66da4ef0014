/**
 * `kvscope generate --draft` and `kvscope eval --task spec` on the tiny fixture, in process. The
 * fixture's manifest names no draft model, so `model:model=tiny-fixture` makes it draft for itself
 * (every draft accepted at temperature 0); lookup drafts without a model.
 */
import { describe, expect, it } from 'vitest';
import { main } from '../../engine/cli/index.ts';
import type { SpecReport } from '../../engine/eval/spec.ts';
import { FIXTURE_DIR } from '../engine/helpers/fixture.ts';

const tiny = ['--model', FIXTURE_DIR];

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) });
  return { code, stdout, stderr };
}

interface GenerateJson {
  tokens: number[];
  steps: { token: number }[];
  speculative?: Record<string, unknown>;
}

const ISSUE_KEYS = ['drafter', 'gamma', 'rounds', 'target_calls', 'drafted', 'accepted', 'mean_accepted_length', 'per_position_acceptance'];

describe('kvscope generate --draft (tiny fixture)', () => {
  it('--json gains the speculative object; at temperature 0 the tokens are plain decoding\'s', async () => {
    const base = ['generate', ...tiny, '--prompt', 'The cache keeps the cache keeps', '--steps', '9', '--json'];
    const plain = await run(base);
    expect(plain.code).toBe(0);
    const reference = JSON.parse(plain.stdout) as GenerateJson;
    expect(reference.speculative).toBeUndefined();
    for (const draft of ['model:model=tiny-fixture,gamma=3', 'lookup:max_ngram=2,k=4', 'self:gamma=2,policy=window(size=8)']) {
      const spec = await run([...base, '--draft', draft, '--compare-plain']);
      expect(spec.stderr).toMatch(/rounds, [\d.]+ target calls\/token/);
      expect(spec.code).toBe(0);
      const out = JSON.parse(spec.stdout) as GenerateJson;
      expect(Object.keys(out)).toEqual(['model', 'prompt_tokens', 'tokens', 'text', 'prefill', 'steps', 'speculative']);
      expect(out.tokens).toEqual(reference.tokens);
      expect(out.steps.map((s) => s.token)).toEqual(out.tokens);
      const s = out.speculative!;
      expect(Object.keys(s).slice(0, ISSUE_KEYS.length)).toEqual(ISSUE_KEYS);
      expect(s.rounds).toBe(s.target_calls);
      expect(s.tokens).toBe(9);
      expect(s.identical_to_plain).toBe(true);
      expect(typeof s.speedup).toBe('number');
      expect(Array.isArray(s.per_position_acceptance)).toBe(true);
    }
    const self = JSON.parse((await run([...base, '--draft', 'model:model=tiny-fixture,gamma=4'])).stdout) as GenerateJson;
    // the model drafting for itself: every draft accepted, γ + 1 tokens per target call
    expect(self.speculative).toMatchObject({ drafter: 'model:gamma=4,model=tiny-fixture,policy=full', gamma: 4, acceptance_rate: 1, drafted: 7, accepted: 7, rounds: 2, mean_accepted_length: 4.5 });
    expect(self.speculative!.plain_ms).toBeUndefined(); // only with --compare-plain
    // a drafter with numbers of its own reports them (Drafter.describe)
    const cache = JSON.parse((await run([...base, '--draft', 'omnidraft:model=none'])).stdout) as GenerateJson & { speculative: { drafter_stats?: Record<string, number> } };
    expect(cache.speculative.drafter_stats).toMatchObject({ cache_entries: expect.any(Number), cache_lookups: expect.any(Number) });
    expect(cache.tokens).toEqual(self.tokens);
  }, 60_000);

  it('a bad --draft is a usage error (exit 2) and nothing is loaded', async () => {
    // a model directory that does not exist: loading it would fail with exit code 1 instead
    const fails = async (draft: string, message: string | RegExp) => {
      const r = await run(['generate', '--model', '/nonexistent/model', '--prompt', 'hi', '--draft', draft]);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      if (typeof message === 'string') expect(r.stderr).toBe(`kvscope generate: invalid --draft: ${message}\n`);
      else expect(r.stderr).toMatch(message);
    };
    await fails('bogus', /^kvscope generate: invalid --draft: unknown drafter "bogus" \(known: [\w, -]*\blookup\b[\w, -]*, or none\)\n$/);
    await fails('model:gamma=0', 'model: gamma must be an integer in [1, 32], got "0"');
    await fails('model:gama=4', /^kvscope generate: invalid --draft: model: unknown parameter "gama" \(did you mean gamma\?\)\n$/);
    await fails('self:policy=streaming(sinks=4', 'self: unbalanced "(" in "policy=streaming(sinks=4"');
    await fails('self:policy=windw(size=8)', /^kvscope generate: invalid --draft: self: policy: unknown policy "windw" .*did you mean window\?\n$/);
    await fails('self:policy=window(size=0)', /^kvscope generate: invalid --draft: self: policy: window: size must be an integer ≥ 1, got "0"\n$/);
    const r = await run(['generate', '--model', '/nonexistent/model', '--prompt', 'hi', '--compare-plain']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--compare-plain .* give --draft SPEC/);
  });

  it('a draft model that cannot be found is a runtime failure (exit 1)', async () => {
    const r = await run(['generate', ...tiny, '--prompt', 'hi', '--draft', 'model:model=no-such-model']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('kvscope generate: draft model "no-such-model" not found: not in static/models/index.json, nor next to the target\'s directory\n');
  });
});

describe('kvscope eval --task spec (tiny fixture)', () => {
  it('reports per drafter and text set; greedy output equals plain decoding', async () => {
    const r = await run(['eval', ...tiny, '--task', 'spec', '--draft', 'model:model=tiny-fixture', '--draft', 'lookup', '--gamma', '2,3', '--prompts', '1', '--prompt-tokens', '24', '--tokens', '8', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as SpecReport;
    expect(report).toMatchObject({ format: 'kvscope-eval', version: 1, task: 'spec', cancelled: false });
    expect(report.settings).toMatchObject({ prompts: 1, promptTokens: 24, tokens: 8, temperature: 0, policy: 'full', texts: ['prose', 'python-doc'], gammas: [2, 3] });
    expect(report.plain.map((p) => p.text)).toEqual(['prose', 'python-doc']);
    expect(report.records.map((rec) => rec.draft)).toEqual(['model:model=tiny-fixture', 'lookup']);
    expect(report.records[0].rows.map((row) => [row.gamma, row.text])).toEqual([
      [2, 'prose'],
      [2, 'python-doc'],
      [3, 'prose'],
      [3, 'python-doc'],
    ]);
    expect(report.records[1].rows.map((row) => row.spec)).toEqual(['lookup:max_ngram=3,k=2', 'lookup:max_ngram=3,k=2', 'lookup:max_ngram=3,k=3', 'lookup:max_ngram=3,k=3']);
    for (const row of report.records.flatMap((rec) => rec.rows)) {
      expect(row.tokens).toBe(8);
      expect(row.identical_to_plain).toBe(true);
      expect(row.target_calls_per_token).toBeGreaterThan(0);
      expect(row.target_calls_per_token).toBeLessThanOrEqual(1);
      expect(row.speedup).toBeGreaterThan(0);
      expect(row.mean_accepted_length).toBeCloseTo(1 / row.target_calls_per_token);
    }
    expect(report.records[0].rows[0].acceptance_rate).toBe(1);
    // the table form
    const table = await run(['eval', ...tiny, '--task', 'spec', '--draft', 'lookup', '--texts', 'python-doc', '--prompts', '1', '--prompt-tokens', '24', '--tokens', '4']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^Speculative decoding — tiny-fixture, 1 held-out prompt\(s\) of 24 tokens per text set/);
    expect(table.stdout).toMatch(/lookup:max_ngram=3,k=10\s+python-doc\s+[\d.]+\s+[\d.]+\s+[\d.]+/);
  });

  it('refuses bad drafter specs and options of the other tasks before loading', async () => {
    const fails = async (args: string[], message: string | RegExp) => {
      const r = await run(['eval', '--model', '/nonexistent/model', '--task', 'spec', ...args]);
      expect(r.code).toBe(2);
      if (typeof message === 'string') expect(r.stderr).toBe(`kvscope eval: ${message}\n`);
      else expect(r.stderr).toMatch(message);
    };
    await fails([], 'missing --draft SPEC (repeatable, e.g. --draft model:gamma=4 --draft lookup)');
    await fails(['--draft', 'bogus'], /^kvscope eval: invalid --draft or --gamma: unknown drafter "bogus"/);
    await fails(['--draft', 'lookup', '--gamma', '0'], 'invalid --draft or --gamma: lookup: k must be an integer in [1, 32], got "0"');
    await fails(['--draft', 'lookup', '--budgets', '64'], '--budgets does not apply to --task spec');
    await fails(['--draft', 'lookup', '--texts', 'poetry'], '--texts must be a comma-separated list of prose, python-doc, got "poetry"');
    const ppl = await run(['eval', ...tiny, '--task', 'ppl', '--policy', 'full', '--draft', 'lookup']);
    expect(ppl.code).toBe(2);
    expect(ppl.stderr).toBe('kvscope eval: --draft applies to --task spec, not --task ppl\n');
  });
});
