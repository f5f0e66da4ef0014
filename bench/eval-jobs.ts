/**
 * `kvscope eval --jobs`: wall time of one evaluation run serially (--jobs 1, in process) and on
 * N worker threads (--jobs N), each as a user runs it (node bin/kvscope.js eval … --json), and a
 * check that both reports are identical but for their timings.
 *
 *   tsx bench/eval-jobs.ts [--jobs N] [--repeats R] [--out FILE] [-- EVAL ARGS…]
 *
 * Default workload: the ppl evaluation of docs/cli.md's --jobs example on the default model
 * (window:size=64 and h2o:heavy=32,recent=32: two runs of 2 × 1024 held-out tokens). The runs
 * alternate serial / parallel so that a change in the machine's load hits both alike; the load
 * average is recorded with every run (on a shared machine other jobs take cores too). Writes
 * JSON to bench-results/eval-jobs.json.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const BIN = join(ROOT, 'bin', 'kvscope.js');

const { values: args, positionals } = parseArgs({
  options: {
    jobs: { type: 'string', default: String(availableParallelism()) },
    repeats: { type: 'string', default: '1' },
    out: { type: 'string', default: join(ROOT, 'bench-results', 'eval-jobs.json') },
  },
  allowPositionals: true,
  strict: true,
});
const evalArgs = positionals.length ? positionals : ['--task', 'ppl', '--policy', 'window:size=64', '--policy', 'h2o:heavy=32,recent=32', '--budgets', '64,128'];
const parallelJobs = Number(args.jobs);
const repeats = Number(args.repeats);

interface Timed {
  jobs: number;
  wallSeconds: number;
  /** load average over the last minute when the run ended */
  load1: number;
  report: string;
}

function kvscopeEval(jobs: number): Promise<Timed> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [BIN, 'eval', ...evalArgs, '--json', '--jobs', String(jobs)], { maxBuffer: 256 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`kvscope eval --jobs ${jobs} failed: ${stderr.trim().split('\n').at(-1)}`));
      resolve({ jobs, wallSeconds: (performance.now() - started) / 1000, load1: loadavg()[0], report: stdout });
    });
  });
}

/** The report without what depends on the clock. */
const withoutTimings = (json: string) => JSON.stringify(JSON.parse(json), (key, value) => (key === 'seconds' || key === 'msPerStep' ? undefined : value));

const runs: Timed[] = [];
for (let r = 0; r < repeats; r++) {
  for (const jobs of [1, parallelJobs]) {
    const run = await kvscopeEval(jobs);
    runs.push(run);
    console.log(`--jobs ${jobs}: ${run.wallSeconds.toFixed(1)} s wall (load average ${run.load1.toFixed(1)})`);
  }
}
const serial = runs.filter((r) => r.jobs === 1);
const parallel = runs.filter((r) => r.jobs === parallelJobs);
const identical = runs.every((r) => withoutTimings(r.report) === withoutTimings(serial[0].report));
const best = (xs: Timed[]) => Math.min(...xs.map((x) => x.wallSeconds));
const speedUp = best(serial) / best(parallel);
console.log(`best of ${repeats}: --jobs 1 ${best(serial).toFixed(1)} s, --jobs ${parallelJobs} ${best(parallel).toFixed(1)} s: ${speedUp.toFixed(2)}× · reports identical but for timings: ${identical ? 'yes' : 'NO'}`);

const result = {
  command: ['kvscope', 'eval', ...evalArgs],
  cpus: availableParallelism(),
  node: process.version,
  runs: runs.map(({ jobs, wallSeconds, load1 }) => ({ jobs, wallSeconds, load1 })),
  bestSeconds: { serial: best(serial), parallel: best(parallel) },
  speedUp,
  identical,
};
await mkdir(dirname(args.out), { recursive: true });
await writeFile(args.out, `${JSON.stringify(result, null, 2)}\n`);
console.log(`wrote ${args.out}`);
if (!identical) process.exitCode = 1;
