/**
 * `kvscope generate`: a continuation through the engine with any KV-cache policy (docs/cli.md).
 * Plain mode streams the prompt and the continuation on stdout and a summary line on stderr;
 * --json prints GenerateJson instead; --trace also writes the engine trace.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { KvscopeError, PolicySpecError } from '../errors.ts';
import { loadModelFromDirectory } from '../model/load-node.ts';
import { parsePolicyChain } from '../policies/spec.ts';
import { Session } from '../session.ts';
import { exportTraceJson, type StepTrace } from '../trace/schema.ts';
import { integerOption, noExtraPositionals, numberOption, parse, requireFileName, seedOption, UsageError } from './args.ts';
import { formatBytes } from './format.ts';
import type { CliIO } from './io.ts';
import { resolveModelDir } from './models.ts';

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
  --policy SPEC        KV-cache policy, e.g. full (default), window:size=128, or a composition
                       run in order: "snapkv:budget=256 + streaming:sinks=4,recent=60"
  --model DIR          model directory or id from static/models/index.json
                       (default: the index's default model)
  --json               print {model, prompt_tokens, tokens, text, steps[]} instead of text
  --trace FILE         write the full trace (engine trace JSON, attention included) to FILE
  -h, --help           this help
`;

/** `--json` output: exactly these keys (docs/cli.md). */
interface GenerateJson {
  model: string;
  prompt_tokens: number;
  tokens: number[];
  text: string;
  /** what the policy did to the prompt's cache: entries evicted, merged entries made, entries re-encoded */
  prefill: DecisionCounts;
  steps: ({ token: number; text: string; prob: number; cache_entries: number; cache_bytes: number; full_cache_bytes: number } & DecisionCounts)[];
}

interface DecisionCounts {
  evicted: number;
  merged: number;
  reencoded: number;
}

const decisionCounts = (d: DecisionCounts): DecisionCounts => ({ evicted: d.evicted, merged: d.merged, reencoded: d.reencoded });

export async function generate(args: string[], io: CliIO): Promise<number> {
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
  const seed = seedOption(values.seed, 0);
  const temperature = numberOption('temperature', values.temperature, 0, (v) => v >= 0, 'a number ≥ 0 (0 = greedy)');
  const topK = integerOption('top-k', values['top-k'], 0, 0, Number.MAX_SAFE_INTEGER, 'an integer ≥ 0 (0 = off)');
  const topP = numberOption('top-p', values['top-p'], 1, (v) => v > 0 && v <= 1, 'a number in (0, 1]');
  let policy;
  try {
    policy = parsePolicyChain(values.policy ?? 'full');
  } catch (error) {
    if (error instanceof PolicySpecError) throw new UsageError(`invalid --policy: ${error.message}`);
    throw error;
  }
  requireFileName('trace', values.trace);

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
  const model = await loadModelFromDirectory(modelDir);
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
    const prefilled = await session.prefill(ids);

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
        prefill: decisionCounts(prefilled.trace.decision),
        steps: result.steps.map((s) => ({
          token: s.token.id,
          text: s.token.piece,
          prob: s.token.prob,
          cache_entries: s.memory.heldEntries,
          cache_bytes: s.memory.bytes,
          full_cache_bytes: s.memory.fullBytes,
          ...decisionCounts(s.decision),
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
