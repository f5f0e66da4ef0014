/** `kvscope eval`, spawned as a user runs it (node bin/kvscope.js eval …) on the tiny fixture. */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { EvalReport } from '../../engine/eval/index.ts';
import { FIXTURE_DIR } from '../engine/helpers/fixture.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'kvscope.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function kvscope(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--liftoff-only', BIN, ...args], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, KVSCOPE_DEBUG: '' } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const tiny = ['--model', FIXTURE_DIR];

describe.concurrent('kvscope eval (tiny fixture)', () => {
  it('--task ppl --json: one record per policy, one row per budget, with its figures', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kvscope-eval-'));
    const out = join(dir, 'report.json');
    const run = await kvscope(['eval', ...tiny, '--task', 'ppl', '--policy', 'full', '--policy', 'window', '--budgets', '16,32', '--windows', '1', '--tokens', '64', '--prefix', '8', '--json', '--out', out]);
    expect(run.stderr).not.toMatch(/^\s+at /m);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as EvalReport;
    expect(report.format).toBe('kvscope-eval');
    expect(report.task).toBe('ppl');
    expect(report.model.id).toBe('tiny-fixture');
    expect(report.settings).toEqual({ windows: 1, tokens: 64, prefix: 8, seed: 0 });
    expect(report.records.map((r) => r.policy)).toEqual(['full', 'window']);
    expect(report.records[1].rows.map((r) => [r.budget, r.spec])).toEqual([
      [16, 'window:size=16'],
      [32, 'window:size=32'],
    ]);
    for (const record of report.records) {
      for (const row of record.rows) {
        expect(row.ppl!.perplexity).toBeGreaterThan(1);
        expect(row.ppl!.scored).toBe(56);
        expect(row.ppl!.entries.mean).toBeGreaterThan(0);
      }
    }
    expect(JSON.parse(await readFile(out, 'utf8'))).toEqual(report);
    expect(run.stderr).toMatch(/eval ppl: /);
  });

  it('--task needle prints tables; --json has the grid', async () => {
    const plain = await kvscope(['eval', ...tiny, '--task', 'needle', '--policy', 'streaming', '--budgets', '32', '--lengths', '90,130', '--depths', '0,1', '--trials', '1']);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(/Passkey retrieval — tiny-fixture, lengths 90, 130 × depths 0, 1/);
    expect(plain.stdout).toMatch(/streaming\s+\d+% \(\d\/4 · \d+\)/);
    expect(plain.stdout).toMatch(/budget mapping:\n {2}streaming\s+sinks = 4, recent = B − 4/);
    const json = await kvscope(['eval', ...tiny, '--task', 'needle', '--policy', 'window:size=16', '--lengths', '90', '--depths', '0.5', '--json']);
    expect(json.code).toBe(0);
    const report = JSON.parse(json.stdout) as EvalReport;
    expect(report.records).toHaveLength(1);
    expect(report.records[0].rows).toEqual([expect.objectContaining({ budget: null, spec: 'window:size=16' })]);
    expect(report.records[0].rows[0].needle!.cells).toEqual([expect.objectContaining({ length: 90, depth: 0.5, trials: 1 })]);
  });

  it('bad input: one clear line on stderr and exit code 2', async () => {
    const cases: [string[], RegExp][] = [
      [['--policy', 'full'], /missing --task/],
      [['--task', 'speed', '--policy', 'full'], /--task must be one of ppl, needle, spec, got "speed"/],
      [['--task', 'ppl'], /missing --policy/],
      [['--task', 'ppl', '--policy', 'h20'], /unknown policy "h20".*did you mean h2o/],
      [['--task', 'ppl', '--policy', 'h2o:heavy=0'], /heavy must be a number/],
      [['--task', 'ppl', '--policy', 'window', '--budgets', '64,abc'], /--budgets must be a comma-separated list of positive integers/],
      [['--task', 'ppl', '--policy', 'window', '--budgets', '0'], /budgets must be positive integers/],
      [['--task', 'ppl', '--policy', 'window', '--depths', '0.5'], /--depths applies to --task needle/],
      [['--task', 'needle', '--policy', 'window', '--windows', '2'], /--windows applies to --task ppl/],
      [['--task', 'ppl', '--policy', 'window', '--tokens', '9999'], /tokens per window must be an integer in 2\.\.256/],
      [['--task', 'needle', '--policy', 'window', '--depths', '0,2'], /depths must be in \[0, 1\]/],
      [['--task', 'ppl', '--policy', 'window', '--verbose'], /unknown option --verbose/],
    ];
    const runs = await Promise.all(cases.map(([args]) => kvscope(['eval', ...tiny, ...args])));
    runs.forEach((run, i) => {
      expect(run.code, cases[i][0].join(' ')).toBe(2);
      expect(run.stderr).toMatch(cases[i][1]);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expect(run.stdout).toBe('');
    });
  });

  it('--jobs 2 (worker threads) reports exactly what --jobs 1 (serial, in process) does', async () => {
    // timings are the only figures that may differ
    const withoutTimings = (stdout: string) => JSON.parse(stdout, (key, value) => (key === 'seconds' || key === 'msPerStep' ? undefined : value)) as EvalReport;
    const ppl = ['--task', 'ppl', '--policy', 'full', '--policy', 'h2o', '--policy', 'window:size=12', '--budgets', '8,16,24', '--windows', '1', '--tokens', '40', '--prefix', '8'];
    const needle = ['--task', 'needle', '--policy', 'tova', '--policy', 'streaming', '--budgets', '16,40', '--lengths', '80', '--depths', '0,1'];
    // one after another: each --jobs 2 run is two threads, and the other tests spawn processes too
    const runs: Run[] = [];
    for (const args of [ppl, needle]) for (const jobs of ['1', '2']) runs.push(await kvscope(['eval', ...tiny, ...args, '--seed', '5', '--json', '--jobs', jobs]));
    for (const run of runs) {
      expect(run.stderr).not.toMatch(/^\s+at /m);
      expect(run.code).toBe(0);
    }
    const [pplSerial, pplParallel, needleSerial, needleParallel] = runs.map((run) => withoutTimings(run.stdout));
    expect(pplSerial.records.map((r) => r.rows.map((row) => row.budget))).toEqual([[null], [8, 16, 24], [null]]);
    expect(pplParallel).toEqual(pplSerial);
    expect(JSON.stringify(pplParallel)).toBe(JSON.stringify(pplSerial));
    expect(needleSerial.records.flatMap((r) => r.rows)).toHaveLength(4);
    expect(JSON.stringify(needleParallel)).toBe(JSON.stringify(needleSerial));
  }, 120_000);

  it('--jobs must be a positive integer', async () => {
    const run = await kvscope(['eval', ...tiny, '--task', 'ppl', '--policy', 'full', '--jobs', '0']);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('kvscope eval: --jobs must be a positive integer, got "0"\n');
  });

  it('--help documents the options and the main help lists eval', async () => {
    const help = await kvscope(['eval', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--task ppl\|needle/);
    expect(help.stdout).toMatch(/--budgets LIST/);
    const main = await kvscope(['--help']);
    expect(main.stdout).toMatch(/kvscope eval --task ppl\|needle/);
  });
});
