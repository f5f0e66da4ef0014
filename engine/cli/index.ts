/**
 * The `kvscope` command line (docs/cli.md): the engine in Node, for policy debugging, regression
 * checks and the phenomena report. bin/kvscope.js registers tsx and calls `main`; each command
 * is its own module, loaded when it runs.
 *
 * Exit codes: 0 success · 1 runtime failure (model or file missing/corrupt, engine error) ·
 * 2 usage (unknown option, bad value, missing/empty prompt, prompt too long, bad policy spec).
 * Every failure is one line on stderr; no stack traces (set KVSCOPE_DEBUG=1 to get them).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KvscopeError } from '../errors.ts';
import { UsageError } from './args.ts';
import { processIO, type CliIO } from './io.ts';
import { asObject, str } from './json.ts';
import { PACKAGE_ROOT } from './models.ts';

export type { CliIO } from './io.ts';

type Command = (args: string[], io: CliIO) => Promise<number>;

/** In the order the help lists them; a command's module (and the engine behind it) loads only when it runs. */
const COMMANDS: Record<string, () => Promise<Command>> = {
  generate: async () => (await import('./generate.ts')).generate,
  inspect: async () => (await import('./inspect.ts')).inspect,
  calibrate: async () => (await import('./calibrate.ts')).calibrate,
  eval: async () => (await import('./eval.ts')).evaluate,
  index: async () => (await import('./index-build.ts')).indexCommand,
};

const MAIN_HELP = `kvscope — step through LLM decoding and watch the KV cache

Usage:
  kvscope generate --prompt TEXT [options]   generate a continuation through the engine
                                             (--draft SPEC: speculative decoding)
  kvscope inspect [options]                  model summary and measured phenomena
  kvscope calibrate [MODEL_DIR] [options]    compute calibration.json (head / layer statistics
                                             that razor, compresskv and d2o need)
  kvscope eval --task ppl|needle --policy SPEC …
                                             perplexity / passkey retrieval of policies at budgets
  kvscope eval --task spec --draft SPEC …    speculative decoding: acceptance, target calls per
                                             token and speed-up over held-out prompts
  kvscope index build --input FILE --out DIR  ∞-gram token indexes (suffix array, FM-index)
                                             for the infinigram drafter
  kvscope <command> --help                   options of a command
  kvscope --version

Exit codes: 0 ok · 1 runtime failure (model/file missing or corrupt) · 2 usage error.
Docs: docs/cli.md
`;

function version(): string {
  try {
    const pkg = asObject(JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')));
    return str(pkg?.version) ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** Runs the command line; returns the exit code (0 ok, 1 runtime failure, 2 usage). */
export async function main(argv: readonly string[], io: CliIO = processIO()): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined) {
    io.stderr(MAIN_HELP);
    return 2;
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    const topic = rest[0];
    if (topic && Object.hasOwn(COMMANDS, topic)) return (await COMMANDS[topic]())(['--help'], io);
    io.stdout(MAIN_HELP);
    return 0;
  }
  if (command === '--version' || command === '-v') {
    io.stdout(`kvscope ${version()}\n`);
    return 0;
  }
  const load = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!load) {
    const what = command.startsWith('-') ? `unknown option ${command}` : `unknown command ${JSON.stringify(command)}`;
    io.stderr(`kvscope: ${what} (commands: ${Object.keys(COMMANDS).join(', ')}; see kvscope --help)\n`);
    return 2;
  }
  try {
    return await (await load())(rest, io);
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
