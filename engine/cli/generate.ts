/**
 * `kvscope generate`: a continuation through the engine with any KV-cache policy (docs/cli.md).
 * Plain mode streams the prompt and the continuation on stdout and a summary line on stderr;
 * --json prints GenerateJson instead; --trace also writes the engine trace. --draft SPEC decodes
 * speculatively (engine/spec): the same output, plus the rounds' statistics.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { DraftSpecError, KvscopeError, PolicySpecError } from '../errors.ts';
import { loadModelFromDirectory } from '../model/load-node.ts';
import { parsePolicyChain } from '../policies/spec.ts';
import { Session, type RunResult } from '../session.ts';
import { nodeDrafterEnv } from '../spec/env-node.ts';
import { createDrafter, DRAFTERS, parseDrafter, SpeculativeDecoder, type DraftSpec, type SpeculativeSummary } from '../spec/index.ts';
import { exportTraceJson, type StepTrace } from '../trace/schema.ts';
import { integerOption, noExtraPositionals, numberOption, parse, requireFileName, seedOption, UsageError } from './args.ts';
import { formatBytes } from './format.ts';
import type { CliIO } from './io.ts';
import { resolveModelDir } from './models.ts';

/** Help lines per registered drafter: an example spec and what it does. */
function drafterExamples(): string {
  return DRAFTERS.map((d) => {
    const { spec: example, what } = d.example;
    const pad = ' '.repeat(23);
    return example.length <= 26 ? `${pad}${example.padEnd(28)}${what}` : `${pad}${example}\n${pad}${' '.repeat(28)}${what}`;
  }).join('\n');
}

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
  --draft SPEC         speculative decoding: a drafter proposes tokens, the target verifies
                       them in one forward (same tokens as plain decoding at temperature 0,
                       the target's distribution otherwise); "none" = plain. Drafters:
${drafterExamples()}
                       A nested KV-cache policy is written id(name=value,…), a composition
                       joins members with +: policy=snapkv(budget=256)+kivi(bits=4)
  --compare-plain      with --draft: also decode plainly, report the wall-clock speed-up (and,
                       at temperature 0, whether the tokens are identical)
  --json               print {model, prompt_tokens, tokens, text, steps[]} instead of text
                       (with --draft also speculative: {drafter, gamma, rounds, …})
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
  /** --draft only */
  speculative?: SpeculativeJson;
}

/** The issue's keys first (docs/cli.md), then the rest of the summary; --compare-plain adds the timings. */
type SpeculativeJson = SpeculativeSummary & {
  /** the drafter's own numbers (Drafter.describe: index bytes and lookup µs, cache entries, updates …) */
  drafter_stats?: Record<string, number | string>;
  plain_ms?: number;
  speculative_ms?: number;
  speedup?: number;
  identical_to_plain?: boolean;
};

function speculativeJson(summary: SpeculativeSummary): SpeculativeJson {
  const { drafter, gamma, rounds, target_calls, drafted, accepted, mean_accepted_length, per_position_acceptance, ...rest } = summary;
  return { drafter, gamma, rounds, target_calls, drafted, accepted, mean_accepted_length, per_position_acceptance, ...rest };
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
    draft: { type: 'string' },
    'compare-plain': { type: 'boolean' },
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
  let draft: DraftSpec | null = null;
  if (values.draft !== undefined) {
    // checked against the registry before anything loads
    try {
      draft = parseDrafter(values.draft);
    } catch (error) {
      if (error instanceof DraftSpecError) throw new UsageError(`invalid --draft: ${error.message}`);
      throw error;
    }
  }
  if (values['compare-plain'] && !draft) throw new UsageError('--compare-plain compares speculative decoding with plain decoding: give --draft SPEC');
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
  const env = nodeDrafterEnv(model, { targetDir: modelDir });
  try {
    const { manifest, tokenizer } = model;
    const context = manifest.architecture.context_length;
    const ids = tokenizer.encode(prompt);
    if (ids.length >= context) {
      throw new UsageError(
        `prompt is too long: ${ids.length} tokens, but the model's context is ${context} and at least one position must be left to generate (max ${context - 1} prompt tokens)`,
      );
    }
    const sampler = { seed, temperature, topK, topP };
    const session = new Session(model, {
      policy,
      sampler,
      trace: values.trace !== undefined ? {} : { attention: false, fullSteps: 0, topTokens: 0 },
    });
    // made before the prefill, so that a drafter that cannot be made (no draft model) fails first
    const drafter = draft ? await createDrafter(draft, env) : null;
    const prefilled = await session.prefill(ids);

    const generated: number[] = [];
    let printed = 0;
    const streaming = !values.json;
    if (streaming) io.stdout(prompt);
    const onStep = (step: StepTrace) => {
      generated.push(step.token.id);
      if (!streaming) return;
      const text = tokenizer.decode(generated, { skipSpecial: true });
      if (text.endsWith('\uFFFD')) return; // an incomplete UTF-8 character: wait for its next byte
      io.stdout(text.slice(printed));
      printed = text.length;
    };
    const started = globalThis.performance.now();
    let result: RunResult;
    let decoder: SpeculativeDecoder | null = null;
    if (drafter) {
      decoder = new SpeculativeDecoder(session, drafter);
      const run = await decoder.run(steps, { onRound: (round) => round.steps.forEach(onStep) });
      result = { steps: run.steps, stopReason: run.stopReason, message: run.message };
    } else {
      result = await session.run(steps, { onStep });
    }
    const seconds = (globalThis.performance.now() - started) / 1000;
    let speculative: SpeculativeJson | undefined;
    /** plain decoding's seconds per token (each run counts its own tokens: at T > 0 they may stop at EOS apart) */
    let plainPerToken: number | null = null;
    const perToken = seconds / Math.max(1, generated.length);
    if (decoder) {
      speculative = speculativeJson(decoder.stats.summary());
      const stats = drafter?.describe?.();
      if (stats) speculative.drafter_stats = stats;
      if (values['compare-plain']) {
        // plain decoding of the same prompt and length (it stops where the speculative run did, at EOS too)
        const plain = new Session(model, { policy, sampler, trace: { attention: false, fullSteps: 0, topTokens: 0 } });
        await plain.prefill(ids);
        const t0 = globalThis.performance.now();
        const reference = await plain.run(steps);
        const plainSeconds = (globalThis.performance.now() - t0) / 1000;
        plainPerToken = plainSeconds / Math.max(1, reference.steps.length);
        speculative.plain_ms = plainSeconds * 1000;
        speculative.speculative_ms = seconds * 1000;
        speculative.speedup = perToken > 0 ? plainPerToken / perToken : 0;
        if (temperature === 0) {
          const tokens = reference.steps.map((s) => s.token.id);
          speculative.identical_to_plain = tokens.length === generated.length && tokens.every((t, i) => t === generated[i]);
        }
      }
    }
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
        ...(speculative ? { speculative } : {}),
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
    const rate = (secondsPerToken: number) => (secondsPerToken > 0 ? (1 / secondsPerToken).toFixed(0) : '–');
    io.stderr(
      `[${manifest.id} · ${session.policySpec} · ${speculative ? `draft ${speculative.drafter} · ` : ''}${ids.length} prompt + ${generated.length} generated tokens · ` +
        `${speculative ? `${speculative.rounds} rounds, ${speculative.target_calls_per_token.toFixed(2)} target calls/token, ${Math.round(100 * speculative.acceptance_rate)}% of ${speculative.drafted} drafted accepted · ` : ''}` +
        `cache ${formatBytes(memory.bytes)} of ${formatBytes(memory.fullBytes)} full · ` +
        `${rate(perToken)} tokens/s${plainPerToken !== null ? ` (plain ${rate(plainPerToken)} tokens/s: ${(plainPerToken / Math.max(perToken, 1e-12)).toFixed(2)}× speed-up${speculative?.identical_to_plain === undefined ? '' : speculative.identical_to_plain ? ', identical tokens' : ', DIFFERENT tokens'})` : ''}${stop}` +
        `${values.trace !== undefined ? ` · trace → ${values.trace}` : ''}]\n`,
    );
    return 0;
  } finally {
    await env.release();
    await model.release();
  }
}
