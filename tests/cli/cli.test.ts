/** The kvscope command line, spawned as a user runs it: node bin/kvscope.js … */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { main } from '../../engine/cli/index.ts';
import { FIXTURE_DIR, fixtureCopy } from '../engine/helpers/fixture.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'kvscope.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node bin/kvscope.js …`. --liftoff-only keeps V8 from compiling onnxruntime's WebAssembly a
 * second time with TurboFan in the background: for these tiny runs that costs more CPU (and a
 * second at exit) than it saves, and the suite spawns many processes on few cores.
 */
function kvscope(args: string[], cwd = ROOT): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--liftoff-only', BIN, ...args], { cwd, maxBuffer: 256 * 1024 * 1024, env: { ...process.env, KVSCOPE_DEBUG: '' } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const tiny = ['--model', FIXTURE_DIR];

interface GenerateJson {
  model: string;
  prompt_tokens: number;
  tokens: number[];
  text: string;
  prefill: { evicted: number; merged: number; reencoded: number };
  steps: { token: number; text: string; prob: number; cache_entries: number; cache_bytes: number; full_cache_bytes: number; evicted: number; merged: number; reencoded: number }[];
}

function parseGenerate(run: Run): GenerateJson {
  expect(run.stderr).not.toMatch(/^\s+at /m);
  expect(run.code).toBe(0);
  return JSON.parse(run.stdout) as GenerateJson;
}

describe.concurrent('kvscope generate (tiny fixture)', () => {
  it('plain mode prints the prompt and its continuation, a summary on stderr; --trace writes the engine trace', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kvscope-trace-'));
    const file = join(dir, 'trace.json');
    const run = await kvscope(['generate', ...tiny, '--prompt', 'Once upon a time', '--steps', '3', '--policy', 'window:size=4', '--trace', file]);
    expect(run.code).toBe(0);
    expect(run.stdout.startsWith('Once upon a time')).toBe(true);
    expect(run.stdout.length).toBeGreaterThan('Once upon a time\n'.length);
    expect(run.stderr).toMatch(/^\[tiny-fixture · window:size=4 · \d+ prompt \+ 3 generated tokens · cache .* tokens\/s · trace → .*\]\n$/);
    const trace = JSON.parse(await readFile(file, 'utf8')) as { version: number; header: { policy: string }; events: { kind: string; attention?: unknown[] | null }[] };
    expect(trace.version).toBe(1);
    expect(trace.header.policy).toBe('window:size=4');
    expect(trace.events.map((e) => e.kind)).toEqual(['prefill', 'step', 'step', 'step']);
    expect(trace.events[1].attention).toHaveLength(2); // attention captured for both layers
  });

  it('--json prints exactly {model, prompt_tokens, tokens, text, prefill, steps}; --top-k 1 equals greedy', async () => {
    const [greedy, topOne] = await Promise.all([
      kvscope(['generate', ...tiny, '--prompt', 'The cache keeps', '--steps', '5', '--json']),
      kvscope(['generate', ...tiny, '--prompt', 'The cache keeps', '--steps', '5', '--json', '--temperature', '1.5', '--top-k', '1', '--seed', '3']),
    ]);
    const out = parseGenerate(greedy);
    expect(Object.keys(out)).toEqual(['model', 'prompt_tokens', 'tokens', 'text', 'prefill', 'steps']);
    expect(out.prefill).toEqual({ evicted: 0, merged: 0, reencoded: 0 });
    expect(out.model).toBe('tiny-fixture');
    expect(out.prompt_tokens).toBeGreaterThan(1); // BOS + the text's tokens
    expect(out.tokens).toHaveLength(5);
    expect(out.steps.map((s) => s.token)).toEqual(out.tokens);
    out.steps.forEach((step, i) => {
      expect(Object.keys(step)).toEqual(['token', 'text', 'prob', 'cache_entries', 'cache_bytes', 'full_cache_bytes', 'evicted', 'merged', 'reencoded']);
      expect(step.prob).toBeGreaterThan(0);
      expect(step.prob).toBeLessThanOrEqual(1);
      // full cache: 2 layers × 2 KV heads hold every token fed so far; 8 floats × 4 bytes × K and V
      expect(step.cache_entries).toBe(4 * (out.prompt_tokens + i + 1));
      expect(step.cache_bytes).toBe(step.cache_entries * 8 * 4 * 2);
      expect(step.full_cache_bytes).toBe(step.cache_bytes);
      expect(typeof step.text).toBe('string');
    });
    expect(out.text.length).toBeGreaterThan(0);
    expect(parseGenerate(topOne).tokens).toEqual(out.tokens);
  });

  it('--json counts what a merging policy did at prefill and at each step', async () => {
    const out = parseGenerate(await kvscope(['generate', ...tiny, '--prompt', 'The cache keeps the tokens it needs and merges the rest of them', '--steps', '4', '--json', '--policy', 'chelsea:budget=6,sinks=1,recent=2,batch=1']));
    expect(out.prefill.merged).toBeGreaterThan(0);
    expect(out.prefill.evicted).toBe(0);
    // each step adds one entry per head over budget, which one merge per head takes back
    for (const step of out.steps) expect(step.merged).toBe(4);
    for (const step of out.steps) expect(step.cache_entries).toBe(4 * 6);
  });

  it('same seed ⇒ same tokens; another seed at temperature 1 ⇒ different tokens', async () => {
    const args = (seed: number) => ['generate', ...tiny, '--prompt', 'A seeded run', '--steps', '16', '--temperature', '1', '--seed', String(seed), '--json'];
    const [a, b, c] = await Promise.all([kvscope(args(7)), kvscope(args(7)), kvscope(args(8))]);
    const tokensA = parseGenerate(a).tokens;
    expect(parseGenerate(b).tokens).toEqual(tokensA);
    expect(parseGenerate(c).tokens).not.toEqual(tokensA);
  });
});

describe('kvscope generate (default model)', () => {
  it('finds the default model from the package root, whatever the working directory', async () => {
    const index = JSON.parse(await readFile(join(ROOT, 'static/models/index.json'), 'utf8')) as { default: string };
    const out = parseGenerate(await kvscope(['generate', '--prompt', 'Once upon a time', '--steps', '4', '--json'], tmpdir()));
    expect(out.model).toBe(index.default);
    expect(out.tokens.length).toBeGreaterThanOrEqual(1);
    expect(out.tokens.length).toBeLessThanOrEqual(4);
  });
});

/** One line on stderr, no stack trace, the given exit code. */
function checkFailure(run: Run, code: number, message: string | RegExp): void {
  expect(run.code).toBe(code);
  expect(run.stdout).toBe('');
  expect(run.stderr.endsWith('\n')).toBe(true);
  expect(run.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(run.stderr).not.toMatch(/\bat .*\.(ts|js):\d+/);
  if (typeof message === 'string') expect(run.stderr.trimEnd()).toBe(message);
  else expect(run.stderr).toMatch(message);
}

/** Spawned: the real process, its exit code and all it prints. */
async function expectFailure(args: string[], code: number, message: string | RegExp): Promise<void> {
  checkFailure(await kvscope(args), code, message);
}

/** In process (same main(), no process start-up): for the many argument checks. */
async function expectFailureInProcess(args: string[], code: number, message: string | RegExp): Promise<void> {
  let stdout = '';
  let stderr = '';
  const exit = await main(args, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) });
  checkFailure({ code: exit, stdout, stderr }, code, message);
}

describe.concurrent('kvscope errors (spawned): one line on stderr, exit 2 for usage, 1 for runtime', () => {
  it('unknown option', () => expectFailure(['generate', '--prompt', 'hi', '--bogus'], 2, 'kvscope generate: unknown option --bogus (see kvscope generate --help)'));
  it('missing --prompt', () => expectFailure(['generate', '--steps', '3'], 2, 'kvscope generate: missing --prompt TEXT (or --prompt-file FILE)'));
  it('prompt longer than the context', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kvscope-prompt-'));
    const file = join(dir, 'long.txt');
    await writeFile(file, 'word '.repeat(300));
    await expectFailure(
      ['generate', ...tiny, '--prompt-file', file],
      2,
      /^kvscope generate: prompt is too long: \d+ tokens, but the model's context is 256 and at least one position must be left to generate \(max 255 prompt tokens\)\n$/,
    );
  });
  it('missing model directory', () => expectFailure(['generate', '--prompt', 'hi', '--model', '/nonexistent/model'], 1, 'kvscope generate: model directory not found: /nonexistent/model'));
  it('corrupt model file (sha256)', async () => {
    const dir = await fixtureCopy();
    const graph = await readFile(join(dir, 'model.onnx'));
    graph[1000] ^= 0xff;
    await writeFile(join(dir, 'model.onnx'), graph);
    await expectFailure(['generate', '--prompt', 'hi', '--model', dir], 1, /^kvscope generate: model\.onnx: sha256 mismatch \(expected [0-9a-f]{64}, got [0-9a-f]{64}\)\n$/);
  });
});

describe('kvscope errors (in process)', () => {
  const fails = expectFailureInProcess;
  it('unknown command / option', async () => {
    await fails(['frobnicate'], 2, 'kvscope: unknown command "frobnicate" (commands: generate, inspect, calibrate, eval, index; see kvscope --help)');
    await fails(['--frob'], 2, 'kvscope: unknown option --frob (commands: generate, inspect, calibrate, eval, index; see kvscope --help)');
    await fails(['inspect', '--prompt', 'x'], 2, 'kvscope inspect: unknown option --prompt (see kvscope inspect --help)');
    await fails(['generate', 'hello'], 2, 'kvscope generate: unexpected argument "hello" (values follow their option, e.g. --prompt "text") (see kvscope generate --help)');
    await fails(['generate', '--prompt', 'hi', '--json=yes'], 2, 'kvscope generate: --json does not take a value (see kvscope generate --help)');
  });
  it('missing or empty prompt', async () => {
    await fails(['generate', '--prompt'], 2, 'kvscope generate: --prompt needs a value (see kvscope generate --help)');
    await fails(['generate', '--prompt', ''], 2, 'kvscope generate: empty prompt: --prompt needs some text');
    await fails(['generate', '--prompt', 'a', '--prompt-file', 'b'], 2, 'kvscope generate: give either --prompt or --prompt-file, not both');
    const dir = await mkdtemp(join(tmpdir(), 'kvscope-empty-'));
    await writeFile(join(dir, 'empty.txt'), '');
    await fails(['generate', '--prompt-file', join(dir, 'empty.txt')], 2, `kvscope generate: empty prompt: ${join(dir, 'empty.txt')} is empty`);
    await fails(['generate', '--prompt-file', '/nonexistent/prompt.txt'], 1, 'kvscope generate: cannot read --prompt-file /nonexistent/prompt.txt: no such file');
  });
  it('--steps not a positive integer', async () => {
    for (const bad of ['0', '2.5', '-3', 'ten', '']) {
      await fails(['generate', '--prompt', 'hi', '--steps', bad], 2, `kvscope generate: --steps must be a positive integer, got ${JSON.stringify(bad)}`);
    }
  });
  it('sampler values out of range', async () => {
    await fails(['generate', '--prompt', 'hi', '--top-p', '0'], 2, 'kvscope generate: --top-p must be a number in (0, 1], got "0"');
    await fails(['generate', '--prompt', 'hi', '--top-p', '1.01'], 2, 'kvscope generate: --top-p must be a number in (0, 1], got "1.01"');
    await fails(['generate', '--prompt', 'hi', '--temperature', '-1'], 2, 'kvscope generate: --temperature must be a number ≥ 0 (0 = greedy), got "-1"');
    await fails(['generate', '--prompt', 'hi', '--temperature', 'hot'], 2, 'kvscope generate: --temperature must be a number ≥ 0 (0 = greedy), got "hot"');
    await fails(['generate', '--prompt', 'hi', '--seed', 'abc'], 2, 'kvscope generate: --seed must be an integer in 0..4294967295, got "abc"');
    await fails(['generate', '--prompt', 'hi', '--top-k', '1.5'], 2, 'kvscope generate: --top-k must be an integer ≥ 0 (0 = off), got "1.5"');
  });
  it('invalid policy spec', async () => {
    // the registry grows as policies land: match the start of the list only
    await fails(['generate', '--prompt', 'hi', '--policy', 'windw'], 2, /^kvscope generate: invalid --policy: unknown policy "windw" \(known: full, window[\w, -]*\) — did you mean window\?\n$/);
    await fails(['generate', '--prompt', 'hi', '--policy', 'window:size=0'], 2, 'kvscope generate: invalid --policy: window: size must be an integer ≥ 1, got "0"');
    await fails(['generate', '--prompt', 'hi', '--policy', 'window:size'], 2, 'kvscope generate: invalid --policy: window: expected name=value, got "size"');
  });
  it('corrupt or incomplete model directories', async () => {
    const broken = await fixtureCopy();
    await writeFile(join(broken, 'manifest.json'), '{"format": ');
    await fails(['inspect', '--model', broken, '--quick'], 1, /^kvscope inspect: manifest\.json: not valid JSON/);
    const partial = await fixtureCopy();
    await rm(join(partial, 'tokenizer.json'));
    await fails(['generate', '--prompt', 'hi', '--model', partial], 1, `kvscope generate: tokenizer.json: file is missing (${join(partial, 'tokenizer.json')})`);
  });
  it('calibrate: at most one model argument', async () => {
    await fails(['calibrate', 'a', 'b'], 2, 'kvscope calibrate: unexpected argument "b" (values follow their option, e.g. --seed 3) (see kvscope calibrate --help)');
    await fails(['calibrate', 'a', '--model', 'b'], 2, 'kvscope calibrate: give the model either as an argument or with --model, not both');
  });
  it('inspect: bad --trials and --seed', async () => {
    await fails(['inspect', '--trials', '0'], 2, 'kvscope inspect: --trials must be a positive integer, got "0"');
    await fails(['inspect', '--seed', '-1'], 2, 'kvscope inspect: --seed must be an integer in 0..4294967295, got "-1"');
  });
});

describe.concurrent('kvscope help', () => {
  it('--help, <cmd> --help and no arguments', async () => {
    const [main, generate, inspect, none] = await Promise.all([kvscope(['--help']), kvscope(['generate', '--help']), kvscope(['inspect', '-h']), kvscope([])]);
    expect(main.code).toBe(0);
    expect(main.stdout).toContain('kvscope generate --prompt TEXT');
    expect(generate.code).toBe(0);
    expect(generate.stdout).toContain('--top-p P');
    expect(inspect.code).toBe(0);
    expect(inspect.stdout).toContain('--trials N');
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('Usage:');
  });
});

describe('kvscope generate --temperature below what logits / T can hold (in process)', () => {
  it('1e-320 (subnormal) generates the greedy tokens; 1e-400 reads as 0', async () => {
    const tokens = async (temperature: string | null) => {
      let stdout = '';
      const args = ['generate', ...tiny, '--prompt', 'The cache keeps', '--steps', '6', '--seed', '3', '--json', ...(temperature === null ? [] : ['--temperature', temperature])];
      const code = await main(args, { stdout: (t) => void (stdout += t), stderr: () => undefined });
      expect(code).toBe(0);
      return (JSON.parse(stdout) as GenerateJson).tokens;
    };
    const greedy = await tokens(null);
    expect(await tokens('1e-320')).toEqual(greedy);
    expect(await tokens('1e-400')).toEqual(greedy);
  });
});

describe('kvscope calibrate (tiny fixture, in process)', () => {
  it('writes calibration.json where --out says and prints its summary', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kvscope-calibrate-'));
    const out = join(dir, 'calibration.json');
    let stdout = '';
    const code = await main(['calibrate', FIXTURE_DIR, '--trials', '2', '--out', out], { stdout: (t) => void (stdout += t), stderr: () => {} });
    expect(code).toBe(0);
    expect(stdout).toMatch(/^calibration of tiny-fixture \(2 layers × 4 heads, 2 KV heads\)\n/);
    expect(stdout).toContain('Passkey retrieval: ');
    expect(stdout).toMatch(/\nwrote .*calibration\.json\n$/);
    const written = JSON.parse(await readFile(out, 'utf8')) as { model: { id: string } };
    expect(written.model.id).toBe('tiny-fixture');
  });
});

describe('kvscope inspect (tiny fixture, --quick)', () => {
  it('reports the manifest and every phenomenon as JSON; a model drafting for itself is always accepted', async () => {
    const run = await kvscope(['inspect', ...tiny, '--draft', FIXTURE_DIR, '--quick', '--trials', '3', '--json']);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as {
      model: { id: string; architecture: { n_layers: number } };
      phenomena: {
        sinks: { layers: number[]; heads: number[][]; windows: number };
        needle: { trials: number; byDepth: unknown[]; promptTokens: { max: number }; retrieval: { scores: number[][] } };
        acceptance: { alpha: number; speculative: { meanAcceptedLength: number; gamma: number } };
      };
    };
    expect(report.model.id).toBe('tiny-fixture');
    const { sinks, needle, acceptance } = report.phenomena;
    expect(sinks.layers).toHaveLength(2);
    expect(sinks.heads[0]).toHaveLength(4);
    sinks.layers.forEach((m) => expect(m).toBeGreaterThan(0));
    expect(needle.trials).toBe(3);
    expect(needle.byDepth).toHaveLength(5);
    expect(needle.promptTokens.max).toBeLessThanOrEqual(256 - 7);
    expect(needle.retrieval.scores).toHaveLength(2);
    expect(acceptance.alpha).toBe(1);
    expect(acceptance.speculative.gamma).toBe(4);
    expect(acceptance.speculative.meanAcceptedLength).toBe(5);
    expect(run.stderr).toContain('passkey: trial 3/3');
  });
});
