/**
 * The `kvscope` command line (DESIGN.md §7): the engine in Node, for policy debugging, regression
 * checks and the phenomena report. bin/kvscope.js registers tsx and calls `main`.
 *
 *   kvscope generate --prompt TEXT [--steps N] [--policy SPEC] [--json] [--trace FILE] …
 *   kvscope inspect [--model DIR] [--trials N] [--quick] [--json]
 *
 * Exit codes: 0 success · 1 runtime failure (model or file missing/corrupt, engine error) ·
 * 2 usage (unknown option, bad value, missing/empty prompt, prompt too long, bad policy spec).
 * Every failure is one line on stderr; no stack traces (set KVSCOPE_DEBUG=1 to get them).
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { KvscopeError, ModelError, PolicySpecError } from './errors.ts';
import type { PhenomenaReport } from './metrics/phenomena.ts';
import { runPhenomena } from './metrics/phenomena.ts';
import type { Manifest } from './model/manifest.ts';
import { loadModelFromDirectory } from './model/load-node.ts';
import type { LoadedModel } from './model/load.ts';
import { parsePolicySpec } from './policies/spec.ts';
import { Session } from './session.ts';
import { exportTraceJson, type StepTrace } from './trace/schema.ts';

/** Where the command writes; tests may pass their own. */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** whether stderr is a terminal (progress lines overwrite each other) */
  stderrIsTTY?: boolean;
}

const PACKAGE_ROOT = fileURLToPath(new URL('../', import.meta.url));

/** The command line itself is wrong: exit code 2. */
class UsageError extends Error {}

// ---------------------------------------------------------------------------------------------
// help texts

const MAIN_HELP = `kvscope — step through LLM decoding and watch the KV cache

Usage:
  kvscope generate --prompt TEXT [options]   generate a continuation through the engine
  kvscope inspect [options]                  model summary and measured phenomena
  kvscope calibrate [MODEL_DIR] [options]    compute calibration.json (head / layer statistics
                                             that razor, compresskv and d2o need)
  kvscope eval --task ppl|needle --policy SPEC …
                                             perplexity / passkey retrieval of policies at budgets
  kvscope <command> --help                   options of a command
  kvscope --version

Exit codes: 0 ok · 1 runtime failure (model/file missing or corrupt) · 2 usage error.
Docs: docs/cli.md
`;

const GENERATE_HELP = `Usage: kvscope generate (--prompt TEXT | --prompt-file FILE) [options]

Generates a continuation with the engine (KV cache in TypeScript, policy applied every step).
Plain mode prints the prompt followed by the continuation (streamed) on stdout and a one-line
summary on stderr.

Options:
  --prompt TEXT        prompt text (BOS is added as the model's manifest says)
  --prompt-file FILE   read the prompt from FILE (UTF-8, used verbatim)
  --steps N            tokens to generate, a positive integer (default 32); stops early at
                       end-of-sequence or when the context is full
  --seed S             sampler seed, integer 0..4294967295 (default 0)
  --temperature T      0 = greedy (default), else sample from softmax(logits / T)
  --top-k K            keep the K most likely tokens (0 = off, default)
  --top-p P            nucleus sampling, P in (0, 1] (1 = off, default)
  --policy SPEC        KV-cache policy, e.g. full (default), window:size=128
  --model DIR          model directory or id from static/models/index.json
                       (default: the index's default model)
  --json               print {model, prompt_tokens, tokens, text, steps[]} instead of text
  --trace FILE         write the full trace (engine trace JSON, attention included) to FILE
  -h, --help           this help
`;

const INSPECT_HELP = `Usage: kvscope inspect [options]

Prints the model's manifest summary (architecture, parameters, files, provenance) and measures
phenomena on held-out text: attention sinks per layer, passkey retrieval accuracy by depth,
retrieval heads (Wu et al. 2024) and draft acceptance under greedy verification. Progress goes to
stderr. The full report takes about a minute or two on the default model.

Options:
  --model DIR          model directory or id (default: the index's default model)
  --draft DIR          draft model for the acceptance measurement (default: the manifest's
                       "draft", looked up next to the model directory)
  --trials N           passkey trials, a positive integer (default 50, --quick 10)
  --seed S             seed for windows, prompts and keys (default 0)
  --heldout FILE       held-out documents {documents:[{text}]} (default static/data/heldout.json)
  --quick              fewer, shorter measurements (smoke tests)
  --json               print the report as JSON
  -h, --help           this help
`;

const CALIBRATE_HELP = `Usage: kvscope calibrate [MODEL_DIR] [options]

Computes the offline statistics that calibrated policies read (RazorAttention echo / induction
scores, Wu et al. and semantic retrieval-head scores, per-layer output error) and writes them to
calibration.json next to the model's manifest (engine/calibration/).

Options:
  MODEL_DIR, --model DIR   model directory or id (default: the index's default model)
  --heldout FILE           held-out documents (default static/data/heldout.json)
  --seed S                 seed (default 1)
  --trials N               passkey prompts for the retrieval scores (default 10)
  --out FILE               write here instead of <model>/calibration.json
  -h, --help               this help
`;

// ---------------------------------------------------------------------------------------------
// argument helpers

type OptionSpecs = NonNullable<ParseArgsConfig['options']>;

/**
 * `--temperature -1` would read "-1" as an option: a value that looks like a negative number is
 * joined to its option (`--temperature=-1`) so that the value check names the real problem.
 */
function joinNegativeValues(args: readonly string[], options: OptionSpecs): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = /^--([\w-]+)$/.exec(args[i])?.[1];
    const next = args[i + 1];
    if (name && options[name]?.type === 'string' && next !== undefined && /^-(\d|\.\d)/.test(next)) {
      out.push(`${args[i]}=${next}`);
      i++;
    } else {
      out.push(args[i]);
    }
  }
  return out;
}

function parse<const T extends OptionSpecs>(command: string, args: string[], options: T) {
  try {
    return parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: true }>({
      args: joinNegativeValues(args, options),
      options,
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    const e = error as Error & { code?: string };
    const quoted = /'([^']+)'/.exec(e.message)?.[1];
    let message = e.message;
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') message = `unknown option ${quoted ?? ''}`.trim();
    else if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const option = /--[\w-]+/.exec(e.message)?.[0] ?? 'an option';
      message = /does not take an argument/.test(e.message) ? `${option} does not take a value` : `${option} needs a value`;
    }
    throw new UsageError(`${message} (see kvscope ${command} --help)`);
  }
}

/** Fails on positional arguments beyond `allowed` (values must follow their option). */
function noExtraPositionals(command: string, positionals: string[], allowed: number, example: string): void {
  if (positionals.length > allowed) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[allowed])} (values follow their option, e.g. ${example}) (see kvscope ${command} --help)`);
  }
}

function integerOption(name: string, raw: string | undefined, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER, what?: string): number {
  if (raw === undefined) return fallback;
  const text = raw.trim();
  const value = /^[+-]?\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    const expected = what ?? (min === 1 && max === Number.MAX_SAFE_INTEGER ? 'a positive integer' : `an integer in ${min}..${max}`);
    throw new UsageError(`--${name} must be ${expected}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function numberOption(name: string, raw: string | undefined, fallback: number, check: (v: number) => boolean, expected: string): number {
  if (raw === undefined) return fallback;
  const text = raw.trim();
  const value = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text) ? Number(text) : NaN;
  if (!Number.isFinite(value) || !check(value)) throw new UsageError(`--${name} must be ${expected}, got ${JSON.stringify(raw)}`);
  return value;
}

// ---------------------------------------------------------------------------------------------
// models

interface ModelIndex {
  default?: string;
  models?: { id: string; path: string; role?: string; draft?: string }[];
}

function readIndex(path: string): ModelIndex | null {
  if (!existsSync(path)) return null;
  try {
    const json: unknown = JSON.parse(readFileSync(path, 'utf8'));
    return typeof json === 'object' && json !== null ? (json as ModelIndex) : null;
  } catch {
    throw new ModelError(`${path}: not valid JSON`);
  }
}

const MODELS_DIR = join(PACKAGE_ROOT, 'static', 'models');

/** --model: a directory (relative to the working directory), or an id of static/models/index.json. */
function resolveModelDir(given: string | undefined): string {
  const index = readIndex(join(MODELS_DIR, 'index.json'));
  const byId = (id: string) => {
    const entry = index?.models?.find((m) => m.id === id);
    return entry ? join(MODELS_DIR, entry.path) : null;
  };
  if (given === undefined) {
    if (!index?.default) throw new ModelError(`no default model: ${join(MODELS_DIR, 'index.json')} is missing or names no "default" (pass --model DIR)`);
    const dir = byId(index.default);
    if (!dir) throw new ModelError(`${join(MODELS_DIR, 'index.json')}: default model "${index.default}" is not listed in "models"`);
    return dir;
  }
  if (given.trim() === '') throw new UsageError('--model needs a directory or a model id, got ""');
  if (existsSync(given)) return resolve(given);
  return byId(given) ?? resolve(given);
}

/** The draft named by the model's manifest, looked up next to the model directory. */
function resolveDraftDir(modelDir: string, manifest: Manifest): string | null {
  if (!manifest.draft) return null;
  const parent = dirname(modelDir);
  const entry = readIndex(join(parent, 'index.json'))?.models?.find((m) => m.id === manifest.draft);
  for (const candidate of [entry ? join(parent, entry.path) : null, join(parent, manifest.draft)]) {
    if (candidate && existsSync(join(candidate, 'manifest.json'))) return candidate;
  }
  return null;
}

async function loadModel(dir: string): Promise<LoadedModel> {
  return loadModelFromDirectory(dir);
}

function displayPath(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel === '' ? '.' : rel.startsWith('..') ? path : rel;
}

// ---------------------------------------------------------------------------------------------
// formatting helpers

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

function formatMillions(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : String(n);
}

function percent(x: number): string {
  return `${(100 * x).toFixed(0)}%`;
}

function bar(x: number, width = 30): string {
  const cells = Math.max(0, Math.min(width, x * width));
  const full = Math.floor(cells);
  const partial = ' ▏▎▍▌▋▊▉'[Math.round((cells - full) * 8) % 8];
  return ('█'.repeat(full) + (full < width && partial !== ' ' ? partial : '')).padEnd(width);
}

type Json = Record<string, unknown>;

function asObject(value: unknown): Json | null {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : null;
}

function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function str(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

// ---------------------------------------------------------------------------------------------
// generate

interface GenerateJson {
  model: string;
  prompt_tokens: number;
  tokens: number[];
  text: string;
  steps: { token: number; text: string; prob: number; cache_entries: number; cache_bytes: number; full_cache_bytes: number }[];
}

async function generate(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse('generate', args, {
    prompt: { type: 'string' },
    'prompt-file': { type: 'string' },
    steps: { type: 'string' },
    seed: { type: 'string' },
    temperature: { type: 'string' },
    'top-k': { type: 'string' },
    'top-p': { type: 'string' },
    policy: { type: 'string' },
    model: { type: 'string' },
    json: { type: 'boolean' },
    trace: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout(GENERATE_HELP);
    return 0;
  }
  noExtraPositionals('generate', positionals, 0, '--prompt "text"');
  // Everything that can be checked without the model is checked first.
  if (values.prompt !== undefined && values['prompt-file'] !== undefined) throw new UsageError('give either --prompt or --prompt-file, not both');
  if (values.prompt === undefined && values['prompt-file'] === undefined) throw new UsageError('missing --prompt TEXT (or --prompt-file FILE)');
  const steps = integerOption('steps', values.steps, 32, 1);
  const seed = integerOption('seed', values.seed, 0, 0, 0xffffffff, 'an integer in 0..4294967295');
  const temperature = numberOption('temperature', values.temperature, 0, (v) => v >= 0, 'a number ≥ 0 (0 = greedy)');
  const topK = integerOption('top-k', values['top-k'], 0, 0, Number.MAX_SAFE_INTEGER, 'an integer ≥ 0 (0 = off)');
  const topP = numberOption('top-p', values['top-p'], 1, (v) => v > 0 && v <= 1, 'a number in (0, 1]');
  let policy;
  try {
    policy = parsePolicySpec(values.policy ?? 'full');
  } catch (error) {
    if (error instanceof PolicySpecError) throw new UsageError(`invalid --policy: ${error.message}`);
    throw error;
  }
  if (values.trace !== undefined && values.trace.trim() === '') throw new UsageError('--trace needs a file name');

  let prompt: string;
  if (values['prompt-file'] !== undefined) {
    const file = values['prompt-file'];
    try {
      prompt = await readFile(file, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new KvscopeError(`cannot read --prompt-file ${file}: ${code === 'ENOENT' ? 'no such file' : (error as Error).message}`);
    }
    if (prompt.length === 0) throw new UsageError(`empty prompt: ${file} is empty`);
  } else {
    prompt = values.prompt!;
    if (prompt.length === 0) throw new UsageError('empty prompt: --prompt needs some text');
  }

  const modelDir = resolveModelDir(values.model);
  const model = await loadModel(modelDir);
  try {
    const { manifest, tokenizer } = model;
    const context = manifest.architecture.context_length;
    const ids = tokenizer.encode(prompt);
    if (ids.length >= context) {
      throw new UsageError(
        `prompt is too long: ${ids.length} tokens, but the model's context is ${context} and at least one position must be left to generate (max ${context - 1} prompt tokens)`,
      );
    }
    const session = new Session(model, {
      policy,
      sampler: { seed, temperature, topK, topP },
      trace: values.trace !== undefined ? {} : { attention: false, fullSteps: 0, topTokens: 0 },
    });
    await session.prefill(ids);

    const generated: number[] = [];
    let printed = 0;
    const streaming = !values.json;
    if (streaming) io.stdout(prompt);
    const started = globalThis.performance.now();
    const result = await session.run(steps, {
      onStep: (step: StepTrace) => {
        generated.push(step.token.id);
        if (!streaming) return;
        const text = tokenizer.decode(generated, { skipSpecial: true });
        if (text.endsWith('\uFFFD')) return; // an incomplete UTF-8 character: wait for its next byte
        io.stdout(text.slice(printed));
        printed = text.length;
      },
    });
    const seconds = (globalThis.performance.now() - started) / 1000;
    const text = tokenizer.decode(generated, { skipSpecial: true });

    if (values.json) {
      const out: GenerateJson = {
        model: manifest.id,
        prompt_tokens: ids.length,
        tokens: generated,
        text,
        steps: result.steps.map((s) => ({
          token: s.token.id,
          text: s.token.piece,
          prob: s.token.prob,
          cache_entries: s.memory.heldEntries,
          cache_bytes: s.memory.bytes,
          full_cache_bytes: s.memory.fullBytes,
        })),
      };
      io.stdout(`${JSON.stringify(out, null, 2)}\n`);
    } else {
      io.stdout(`${text.slice(printed)}\n`);
    }
    if (values.trace !== undefined) {
      try {
        await writeFile(values.trace, exportTraceJson(session.trace));
      } catch (error) {
        throw new KvscopeError(`cannot write --trace ${values.trace}: ${(error as Error).message}`);
      }
    }
    const memory = session.memory();
    const stop = result.stopReason === 'length' ? '' : ` · stopped: ${result.message ?? result.stopReason}`;
    io.stderr(
      `[${manifest.id} · ${session.policySpec} · ${ids.length} prompt + ${generated.length} generated tokens · ` +
        `cache ${formatBytes(memory.bytes)} of ${formatBytes(memory.fullBytes)} full · ` +
        `${seconds > 0 ? (generated.length / seconds).toFixed(0) : '–'} tokens/s${stop}` +
        `${values.trace !== undefined ? ` · trace → ${values.trace}` : ''}]\n`,
    );
    return 0;
  } finally {
    await model.release();
  }
}

// ---------------------------------------------------------------------------------------------
// inspect

interface ModelSummary {
  id: string;
  name: string;
  role: string;
  directory: string;
  draft: string | null;
  architecture: Manifest['architecture'];
  rope: Manifest['rope'];
  tokenizer: Manifest['tokenizer'];
  files: Manifest['files'];
  provenance: Json | null;
}

/** The provenance without bulky fields (training history), for the report. */
function provenanceSummary(provenance: Record<string, unknown> | undefined): Json | null {
  if (!provenance) return null;
  const out: Json = { ...provenance };
  const training = asObject(provenance.training);
  if (training) {
    const { history: _history, ...rest } = training;
    out.training = rest;
  }
  return out;
}

function summarizeModel(dir: string, manifest: Manifest): ModelSummary {
  return {
    id: manifest.id,
    name: manifest.name,
    role: manifest.role,
    directory: dir,
    draft: manifest.draft ?? null,
    architecture: manifest.architecture,
    rope: manifest.rope,
    tokenizer: manifest.tokenizer,
    files: manifest.files,
    provenance: provenanceSummary(manifest.provenance),
  };
}

function formatModel(summary: ModelSummary, draftDir: string | null): string {
  const a = summary.architecture;
  const r = summary.rope;
  const lines: string[] = [];
  lines.push(`${summary.id} — ${summary.name}  [${summary.role}${summary.draft ? `, draft: ${summary.draft}` : ''}]`);
  lines.push(`  directory     ${displayPath(summary.directory)}`);
  lines.push(
    `  architecture  ${a.family} · ${a.n_layers} layers · ${a.n_heads} query / ${a.n_kv_heads} KV heads · head dim ${a.head_dim} · hidden ${a.hidden_size} · MLP ${a.intermediate_size}`,
  );
  lines.push(
    `                vocab ${formatCount(a.vocab_size)} · context ${formatCount(a.context_length)} · RoPE θ=${r.theta} (${r.style}, dim ${r.dim}) · ` +
      `RMSNorm ε=${a.rms_norm_eps}${a.tie_word_embeddings ? ' · tied embeddings' : ''}`,
  );
  const kvPerToken = a.n_layers * a.n_kv_heads * a.head_dim * 2 * 4;
  lines.push(
    `  parameters    ${a.parameters !== undefined ? `${formatCount(a.parameters)} (${formatMillions(a.parameters)})` : 'not recorded'}` +
      `${a.macs_per_token !== undefined ? ` · ${formatMillions(a.macs_per_token)} MACs/token` : ''} · fp32 KV cache ${formatBytes(kvPerToken)}/token, ${formatBytes(kvPerToken * a.context_length)} at full context`,
  );
  summary.files.forEach((f, i) => {
    lines.push(`  ${i === 0 ? 'files        ' : '             '} ${f.path.padEnd(18)} ${formatBytes(f.bytes).padStart(10)}  sha256 ${f.sha256.slice(0, 12)}…`);
  });
  const p = summary.provenance;
  if (!p) {
    lines.push('  provenance    not recorded');
  } else {
    const commit = str(p.git_commit);
    lines.push(
      `  provenance    created ${str(p.created) ?? '?'}${str(p.exporter) ? ` by ${str(p.exporter)}` : ''}` +
        `${str(p.source_checkpoint) ? ` from checkpoint "${str(p.source_checkpoint)}"` : ''} · git commit ${commit ?? 'not recorded'}` +
        `${str(p.torch) ? ` · torch ${str(p.torch)}` : ''}${str(p.onnxruntime) ? ` · onnxruntime ${str(p.onnxruntime)}` : ''}`,
    );
    const t = asObject(p.training);
    if (t) {
      const parts: string[] = [];
      if (str(t.preset)) parts.push(`preset ${str(t.preset)}`);
      const steps = num(t.steps);
      const batch = num(t.batch);
      const window = num(t.window);
      if (steps !== null) parts.push(`${formatCount(steps)} steps${batch !== null ? ` × batch ${batch}` : ''}${window !== null ? ` × ${window} tokens` : ''}`);
      const tokens = num(t.training_tokens);
      if (tokens !== null) parts.push(`${(tokens / 1e6).toFixed(1)} M training tokens`);
      const secs = num(t.train_seconds);
      if (secs !== null) parts.push(`${secs.toFixed(0)} s${str(t.gpu) ? ` on ${str(t.gpu)}` : ''}`);
      if (num(t.seed) !== null) parts.push(`seed ${num(t.seed)}`);
      lines.push(`  training      ${parts.join(' · ') || 'recorded (no summary fields)'}`);
      const loss = num(t.heldout_loss);
      const ppl = num(t.heldout_ppl);
      if (loss !== null || ppl !== null) {
        lines.push(`                held-out loss ${loss?.toFixed(4) ?? '?'} nats/token${ppl !== null ? ` (perplexity ${ppl.toFixed(2)})` : ''}`);
      }
    }
    const checks = asObject(p.checks);
    if (checks) {
      const parts = Object.entries(checks).map(([k, v]) => `${k.replace(/_/g, ' ')} ${typeof v === 'number' ? v.toExponential(1) : JSON.stringify(v)}`);
      lines.push(`  export checks ${parts.join(' · ')}`);
    }
  }
  lines.push(`  draft model   ${summary.draft ? (draftDir ? displayPath(draftDir) : `${summary.draft} (not found next to the model)`) : 'none'}`);
  return lines.join('\n');
}

function formatPhenomena(report: PhenomenaReport, nHeads: number, draftId: string | null): string {
  const lines: string[] = [];
  const { sinks, needle, acceptance, settings } = report;

  lines.push('');
  lines.push(
    `Attention sinks — attention on token 0 (BOS) per layer, mean over heads and queries at positions ≥ ${sinks.minQueryPosition}` +
      ` (${sinks.windows} held-out windows of ${sinks.windowTokens} tokens; uniform attention would give ${sinks.uniform.toFixed(3)})`,
  );
  sinks.layers.forEach((mass, l) => {
    const heads = sinks.heads[l].map((m) => m.toFixed(2)).join(' ');
    lines.push(`  layer ${String(l).padStart(2)}  ${mass.toFixed(3)}  ${bar(mass)}  heads ${heads}`);
  });
  lines.push(`  mean      ${sinks.mean.toFixed(3)}`);

  lines.push('');
  const lengths = needle.promptTokens;
  lines.push(
    `Passkey retrieval — ${needle.trials} prompts of ${lengths.min}–${lengths.max} tokens (target ${needle.targetTokens}), ` +
      `needle depths 0..1, greedy decoding of ${needle.decodeTokens} tokens with the full cache`,
  );
  lines.push(`  accuracy  ${needle.correct}/${needle.trials} = ${percent(needle.accuracy)}`);
  for (const b of needle.byDepth) {
    const label = `depth ${b.from.toFixed(1)}–${b.to.toFixed(1)}`;
    lines.push(`  ${label.padEnd(15)} ${`${b.correct}/${b.trials}`.padStart(6)}  ${percent(b.accuracy).padStart(4)}  ${bar(b.accuracy, 20)}`);
  }
  const examples = needle.examples.map((e) => `${e.key}→${JSON.stringify(e.output.trim())}${e.success ? '' : ' ✗'}`).join('  ');
  lines.push(`  examples  ${examples}`);

  lines.push('');
  const rh = needle.retrieval;
  lines.push(
    `Retrieval heads (Wu et al. 2024) — score over ${rh.trials} successful trials; heads with score > ${rh.threshold}: ${rh.heads.length}` +
      (rh.heads.length ? ` (${rh.heads.map((h) => `L${h.layer}H${h.head} ${h.score.toFixed(2)}`).join(', ')})` : ''),
  );
  if (rh.trials > 0) {
    lines.push(`  score ×100  ${Array.from({ length: nHeads }, (_, h) => `h${h}`.padStart(4)).join('')}`);
    rh.scores.forEach((row, l) => lines.push(`  layer ${String(l).padStart(2)}    ${row.map((s) => String(Math.round(100 * s)).padStart(4)).join('')}`));
  } else {
    lines.push('  (no successful trial, so no scores)');
  }

  lines.push('');
  if (acceptance) {
    const s = acceptance.speculative;
    lines.push(
      `Draft acceptance — ${draftId ?? 'draft'} proposing for the target, greedy verification ` +
        `(${acceptance.prompts} held-out prompts of ${acceptance.promptTokens} tokens, ${acceptance.tokensPerPrompt} greedy target tokens each)`,
    );
    lines.push(`  per-token acceptance α  ${acceptance.alpha.toFixed(3)}  (${percent(acceptance.alpha)} of positions: draft argmax = target token)`);
    lines.push(
      `  γ = ${s.gamma}: mean accepted length ${s.meanAcceptedLength.toFixed(2)} tokens per target call (bonus/correction token included) ` +
        `over ${s.blocks} simulated blocks; ${s.accepted}/${s.proposed} proposals accepted; ${s.targetCallsPerToken.toFixed(3)} target calls per token`,
    );
    lines.push(`  i.i.d. formula (1−α^(γ+1))/(1−α) = ${acceptance.expectedAcceptedLength.toFixed(2)}`);
  } else {
    lines.push(`Draft acceptance — skipped: ${report.acceptanceNote ?? 'no draft model'}`);
  }
  lines.push('');
  lines.push(
    `(seed ${settings.seed}${settings.quick ? ', quick' : ''}; ${report.seconds.sinks.toFixed(1)} s sinks, ${report.seconds.needle.toFixed(1)} s passkey, ${report.seconds.acceptance.toFixed(1)} s acceptance)`,
  );
  return lines.map((line) => line.trimEnd()).join('\n');
}

async function readHeldout(path: string): Promise<string[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new KvscopeError(`cannot read held-out text ${path}: ${code === 'ENOENT' ? 'no such file' : (error as Error).message}`);
  }
  const docs = asObject(json)?.documents;
  if (!Array.isArray(docs)) throw new KvscopeError(`${path}: expected {"documents": [{"text": …}]}`);
  const texts = docs.map((d) => str(asObject(d)?.text)).filter((t): t is string => t !== null && t.length > 0);
  if (texts.length === 0) throw new KvscopeError(`${path}: no documents with text`);
  return texts;
}

async function inspect(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse('inspect', args, {
    model: { type: 'string' },
    draft: { type: 'string' },
    trials: { type: 'string' },
    seed: { type: 'string' },
    heldout: { type: 'string' },
    quick: { type: 'boolean' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout(INSPECT_HELP);
    return 0;
  }
  noExtraPositionals('inspect', positionals, 0, '--trials 20');
  const quick = values.quick ?? false;
  const trials = integerOption('trials', values.trials, quick ? 10 : 50, 1);
  const seed = integerOption('seed', values.seed, 0, 0, 0xffffffff, 'an integer in 0..4294967295');
  if (values.draft !== undefined && values.draft.trim() === '') throw new UsageError('--draft needs a directory or a model id');
  const heldoutPath = values.heldout !== undefined ? resolve(values.heldout) : join(PACKAGE_ROOT, 'static', 'data', 'heldout.json');

  const modelDir = resolveModelDir(values.model);
  const progress = makeProgress(io);
  const model = await loadModel(modelDir);
  let draft: LoadedModel | null = null;
  try {
    const draftDir = values.draft !== undefined ? resolveModelDir(values.draft) : resolveDraftDir(modelDir, model.manifest);
    if (draftDir) {
      draft = await loadModel(draftDir);
    }
    const documents = await readHeldout(heldoutPath);
    const report = await runPhenomena(model, draft, documents, { quick, trials, seed, onProgress: progress });
    if (!draft && model.manifest.draft) report.acceptanceNote = `draft model "${model.manifest.draft}" not found next to ${displayPath(modelDir)} (pass --draft DIR)`;
    progress(null);
    const summary = summarizeModel(modelDir, model.manifest);
    if (values.json) {
      const out = { model: summary, draft: draft ? { id: draft.manifest.id, directory: draftDir } : null, heldout: heldoutPath, phenomena: report };
      io.stdout(`${JSON.stringify(out, null, 2)}\n`);
    } else {
      io.stdout(`${formatModel(summary, draftDir)}\n${formatPhenomena(report, model.manifest.architecture.n_heads, draft?.manifest.id ?? null)}\n`);
    }
    return 0;
  } finally {
    progress(null);
    await draft?.release();
    await model.release();
  }
}

// ---------------------------------------------------------------------------------------------
// calibrate (a thin wrapper over engine/calibration/node.ts)

async function calibrate(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse('calibrate', args, {
    model: { type: 'string' },
    heldout: { type: 'string' },
    seed: { type: 'string' },
    trials: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout(CALIBRATE_HELP);
    return 0;
  }
  noExtraPositionals('calibrate', positionals, 1, '--seed 3');
  if (positionals.length === 1 && values.model !== undefined) throw new UsageError('give the model either as an argument or with --model, not both');
  const seed = integerOption('seed', values.seed, 1, 0, 0xffffffff, 'an integer in 0..4294967295');
  const trials = values.trials === undefined ? undefined : integerOption('trials', values.trials, 10, 1);
  if (values.out !== undefined && values.out.trim() === '') throw new UsageError('--out needs a file name');
  const modelDir = resolveModelDir(positionals[0] ?? values.model);
  if (!existsSync(join(modelDir, 'manifest.json'))) throw new ModelError(`model directory not found: ${modelDir}`);
  const progress = makeProgress(io);
  try {
    const { calibrateDirectory } = await import('./calibration/node.ts');
    const { formatCalibration } = await import('./calibration/report.ts');
    const { calibration, path } = await calibrateDirectory(modelDir, {
      heldout: values.heldout !== undefined ? resolve(values.heldout) : undefined,
      out: values.out,
      seed,
      retrieval: trials !== undefined ? { trials } : undefined,
      onProgress: ({ section, done, total }) => progress(`calibrating: ${section} ${done}/${total}`),
    });
    progress(null);
    io.stdout(`${formatCalibration(calibration)}\nwrote ${path ? displayPath(path) : '(nothing)'}\n`);
    return 0;
  } finally {
    progress(null);
  }
}

// ---------------------------------------------------------------------------------------------
// eval (engine/eval: the same evaluations as the app's /bench page)

const EVAL_HELP = `Usage: kvscope eval --task ppl|needle --policy SPEC [--policy SPEC …] [options]

Evaluates KV-cache policies on the model, each at every budget of --budgets (B = entries a KV
head may hold; each policy's own parameters follow from B, see docs/evaluation.md). A spec that
sets its budget parameters itself (window:size=32) runs once as given; "full" runs once; "all"
stands for every policy. Progress goes to stderr.

  ppl      perplexity of held-out text: prefill --prefix tokens, then score every later token
           and feed it as a decode step (teacher forcing) with the policy evicting
  needle   passkey retrieval over --lengths × --depths, --trials prompts per cell, greedy; the
           policy compresses after the prefill and acts at every answer step

Options:
  --task ppl|needle     what to measure (required)
  --policy SPEC         policy spec, repeatable (required), e.g. full, h2o, h2o:accumulate=mean
  --budgets LIST        comma-separated budgets (default 64,128,256,512)
  --seed S              seed for windows, prompts and keys (default 0)
  --windows N           ppl: held-out windows (default 2)
  --tokens N            ppl: tokens per window, BOS included (default min(1024, context))
  --prefix N            ppl: tokens prefilled before scoring starts (default 32)
  --lengths LIST        needle: prompt lengths in tokens (default 256,512,1000, those that fit)
  --depths LIST         needle: needle depths in [0, 1] (default 0,0.25,0.5,0.75,1)
  --trials N            needle: prompts per length × depth cell (default 1)
  --decode-tokens N     needle: most answer tokens decoded (default 7)
  --model DIR           model directory or id (default: the index's default model)
  --heldout FILE        held-out documents (default static/data/heldout.json)
  --json                print the report as JSON (one record per --policy, one row per budget)
  --out FILE            also write the JSON report to FILE
  -h, --help            this help
`;

function listOption(name: string, raw: string | undefined, parse: (text: string) => number, expected: string): number[] | undefined {
  if (raw === undefined) return undefined;
  const parts = raw.split(',').map((p) => p.trim());
  if (parts.length === 0 || parts.some((p) => p === '')) throw new UsageError(`--${name} must be a comma-separated list of ${expected}, got ${JSON.stringify(raw)}`);
  return parts.map((p) => {
    const value = parse(p);
    if (!Number.isFinite(value)) throw new UsageError(`--${name} must be a comma-separated list of ${expected}, got ${JSON.stringify(p)} in ${JSON.stringify(raw)}`);
    return value;
  });
}

const asInteger = (text: string) => (/^[+-]?\d+$/.test(text) ? Number(text) : NaN);
const asNumber = (text: string) => (/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text) ? Number(text) : NaN);

async function evaluate(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse('eval', args, {
    task: { type: 'string' },
    policy: { type: 'string', multiple: true },
    budgets: { type: 'string' },
    seed: { type: 'string' },
    windows: { type: 'string' },
    tokens: { type: 'string' },
    prefix: { type: 'string' },
    lengths: { type: 'string' },
    depths: { type: 'string' },
    trials: { type: 'string' },
    'decode-tokens': { type: 'string' },
    model: { type: 'string' },
    heldout: { type: 'string' },
    json: { type: 'boolean' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout(EVAL_HELP);
    return 0;
  }
  noExtraPositionals('eval', positionals, 0, '--policy h2o');
  const { EVAL_TASKS, EvalSettingsError, expandRuns, formatEvalReport, planEval, runEval } = await import('./eval/index.ts');
  if (values.task === undefined) throw new UsageError(`missing --task (one of ${EVAL_TASKS.join(', ')})`);
  const task = values.task.trim();
  if (!(EVAL_TASKS as readonly string[]).includes(task)) throw new UsageError(`--task must be one of ${EVAL_TASKS.join(', ')}, got ${JSON.stringify(values.task)}`);
  const policies = values.policy ?? [];
  if (policies.length === 0) throw new UsageError('missing --policy SPEC (repeatable, e.g. --policy full --policy h2o)');
  const budgets = listOption('budgets', values.budgets, asInteger, 'positive integers');
  try {
    expandRuns(policies, budgets ?? [64, 128, 256, 512]);
  } catch (error) {
    if (error instanceof PolicySpecError) throw new UsageError(`invalid --policy or --budgets: ${error.message}`);
    throw error;
  }
  const seed = integerOption('seed', values.seed, 0, 0, 0xffffffff, 'an integer in 0..4294967295');
  const pplOnly = ['windows', 'tokens', 'prefix'] as const;
  const needleOnly = ['lengths', 'depths', 'trials', 'decode-tokens'] as const;
  for (const name of task === 'ppl' ? needleOnly : pplOnly) {
    if (values[name] !== undefined) throw new UsageError(`--${name} applies to --task ${task === 'ppl' ? 'needle' : 'ppl'}, not --task ${task}`);
  }
  const optionalInt = (name: 'windows' | 'tokens' | 'prefix' | 'trials' | 'decode-tokens') =>
    values[name] === undefined ? undefined : integerOption(name, values[name], 1, 1);
  // options not given stay out, so that the engine's defaults apply
  const given = <T extends object>(o: T) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
  const evalConfig = {
    task: task as 'ppl' | 'needle',
    policies,
    budgets,
    ppl: given({ windows: optionalInt('windows'), tokens: optionalInt('tokens'), prefix: optionalInt('prefix'), seed }),
    needle: given({
      lengths: listOption('lengths', values.lengths, asInteger, 'integers'),
      depths: listOption('depths', values.depths, asNumber, 'numbers in [0, 1]'),
      trials: optionalInt('trials'),
      decodeTokens: optionalInt('decode-tokens'),
      seed,
    }),
  };
  if (values.out !== undefined && values.out.trim() === '') throw new UsageError('--out needs a file name');
  const heldoutPath = values.heldout !== undefined ? resolve(values.heldout) : join(PACKAGE_ROOT, 'static', 'data', 'heldout.json');

  const modelDir = resolveModelDir(values.model);
  const model = await loadModel(modelDir);
  const progress = makeProgress(io);
  try {
    try {
      planEval(model, evalConfig);
    } catch (error) {
      if (error instanceof EvalSettingsError || error instanceof PolicySpecError) throw new UsageError(error.message);
      throw error;
    }
    const documents = await readHeldout(heldoutPath);
    let lastRun = -1;
    let lastTime = 0;
    const report = await runEval(model, documents, evalConfig, {
      onProgress: (p) => {
        const now = performance.now();
        if (p.run === lastRun && now - lastTime < (io.stderrIsTTY ? 250 : 5000)) return;
        lastRun = p.run;
        lastTime = now;
        progress(`eval ${task}: ${p.message} · ${Math.round((100 * p.done) / Math.max(1, p.total))}% of all`);
      },
    });
    progress(null);
    const json = `${JSON.stringify(report, null, 2)}\n`;
    if (values.out !== undefined) await writeFile(values.out, json);
    io.stdout(values.json ? json : `${formatEvalReport(report)}\n`);
    if (!values.json) io.stderr(`[${report.records.reduce((a, r) => a + r.rows.length, 0)} runs in ${report.seconds.toFixed(1)} s${values.out ? ` · JSON → ${values.out}` : ''}]\n`);
    return 0;
  } finally {
    progress(null);
    await model.release();
  }
}

/** Progress lines on stderr: overwritten in place on a terminal, one per line otherwise; null ends. */
function makeProgress(io: CliIO): (message: string | null) => void {
  let open = false;
  return (message) => {
    if (message === null) {
      if (open && io.stderrIsTTY) io.stderr('\r\x1b[2K');
      open = false;
      return;
    }
    if (io.stderrIsTTY) {
      io.stderr(`\r\x1b[2K${message.slice(0, 150)}`);
      open = true;
    } else {
      io.stderr(`${message}\n`);
    }
  };
}

// ---------------------------------------------------------------------------------------------
// entry

function version(): string {
  try {
    const pkg = asObject(JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')));
    return str(pkg?.version) ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

const COMMANDS: Record<string, (args: string[], io: CliIO) => Promise<number>> = { generate, inspect, calibrate, eval: evaluate };

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** Runs the command line; returns the exit code (0 ok, 1 runtime failure, 2 usage). */
export async function main(argv: readonly string[], io: CliIO = defaultIO()): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined) {
    io.stderr(MAIN_HELP);
    return 2;
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    const topic = rest[0];
    if (topic && topic in COMMANDS) return COMMANDS[topic](['--help'], io);
    io.stdout(MAIN_HELP);
    return 0;
  }
  if (command === '--version' || command === '-v') {
    io.stdout(`kvscope ${version()}\n`);
    return 0;
  }
  const run = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!run) {
    const what = command.startsWith('-') ? `unknown option ${command}` : `unknown command ${JSON.stringify(command)}`;
    io.stderr(`kvscope: ${what} (commands: ${Object.keys(COMMANDS).join(', ')}; see kvscope --help)\n`);
    return 2;
  }
  try {
    return await run(rest, io);
  } catch (error) {
    if (process.env.KVSCOPE_DEBUG && error instanceof Error) io.stderr(`${error.stack ?? error.message}\n`);
    if (error instanceof UsageError) {
      io.stderr(`kvscope ${command}: ${oneLine(error.message)}\n`);
      return 2;
    }
    if (error instanceof KvscopeError) {
      io.stderr(`kvscope ${command}: ${oneLine(error.message)}\n`);
      return 1;
    }
    const message = error instanceof Error ? error.message : String(error);
    io.stderr(`kvscope ${command}: internal error: ${oneLine(message)} (set KVSCOPE_DEBUG=1 for the stack)\n`);
    return 1;
  }
}

function defaultIO(): CliIO {
  return {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    stderrIsTTY: Boolean(process.stderr.isTTY),
  };
}
