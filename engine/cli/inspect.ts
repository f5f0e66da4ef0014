/**
 * `kvscope inspect`: the model's manifest summary and its measured phenomena on held-out text
 * (engine/metrics/phenomena.ts); the text layout is inspect-report.ts. With --kv-similarity it
 * measures only the KV cache similarities merge methods assume (engine/metrics/kv-similarity.ts,
 * text layout kv-similarity-report.ts).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { KvscopeError } from '../errors.ts';
import type { LoadedModel } from '../model/load.ts';
import { loadModelFromDirectory } from '../model/load-node.ts';
import { runKvSimilarity } from '../metrics/kv-similarity.ts';
import { parseNeedleFamily, type NeedleFamily } from '../metrics/needle-family.ts';
import { runPhenomena } from '../metrics/phenomena.ts';
import { integerOption, noExtraPositionals, parse, requireFileName, seedOption, UsageError } from './args.ts';
import { formatModel, formatPhenomena, summarizeModel } from './inspect-report.ts';
import { formatKvSimilarity } from './kv-similarity-report.ts';
import { makeProgress, type CliIO } from './io.ts';
import { displayPath, heldoutPath, PACKAGE_ROOT, readHeldout, resolveDraftDir, resolveModelDir } from './models.ts';

const INSPECT_HELP = `Usage: kvscope inspect [options]

Prints the model's manifest summary (architecture, parameters, files, provenance) and measures
phenomena on held-out text: attention sinks per layer and the late perplexity of a window with and
without them (with the full cache's held-out perplexity), passkey retrieval accuracy by depth,
retrieval heads (Wu et al. 2024), needle retrieval in held-out wordings and filler (--family),
induction heads on repeated random tokens, and draft acceptance under greedy verification.
Progress goes to stderr. The full report takes a few minutes on the default model.

Options:
  --model DIR          model directory or id (default: the index's default model)
  --draft DIR          draft model for the acceptance measurement (default: the manifest's
                       "draft", looked up next to the model directory)
  --trials N           passkey trials, a positive integer (default 50, --quick 10)
  --seed S             seed for windows, prompts and keys (default 0)
  --heldout FILE       held-out documents {documents:[{text}]} (default static/data/heldout.json)
  --family FILE        held-out needle family {about, version, wordings, filler} (default
                       static/data/needle-family.json; that default absent ⇒ the section is skipped)
  --quick              fewer, shorter measurements (smoke tests)
  --kv-similarity      measure only what merge methods assume of the KV cache, on a full cache:
                       per layer the cosine of adjacent tokens' keys (as cached and with RoPE
                       removed) and values (Chelsea, KVMerger); per adjacent layer pair the
                       per-token cosine of keys and values and MiniCache's angle Ω
  --windows N          held-out windows for --kv-similarity (default 4, --quick 2)
  --tokens N           tokens per window for --kv-similarity (default 512, --quick 256; at most
                       the model's context)
  --json               print the report as JSON
  -h, --help           this help
`;

export async function inspect(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse('inspect', args, {
    model: { type: 'string' },
    draft: { type: 'string' },
    trials: { type: 'string' },
    seed: { type: 'string' },
    heldout: { type: 'string' },
    family: { type: 'string' },
    quick: { type: 'boolean' },
    'kv-similarity': { type: 'boolean' },
    windows: { type: 'string' },
    tokens: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout(INSPECT_HELP);
    return 0;
  }
  noExtraPositionals('inspect', positionals, 0, '--trials 20');
  const quick = values.quick ?? false;
  if (values['kv-similarity']) return inspectKvSimilarity(values, quick, io);
  for (const name of ['windows', 'tokens'] as const) {
    if (values[name] !== undefined) throw new UsageError(`--${name} applies to --kv-similarity only`);
  }
  const trials = integerOption('trials', values.trials, quick ? 10 : 50, 1);
  const seed = seedOption(values.seed, 0);
  if (values.draft !== undefined && values.draft.trim() === '') throw new UsageError('--draft needs a directory or a model id');
  const heldout = heldoutPath(values.heldout);
  requireFileName('family', values.family);
  const { family, familyFile, familyNote } = await readFamily(values.family);

  const modelDir = resolveModelDir(values.model);
  const progress = makeProgress(io);
  const model = await loadModelFromDirectory(modelDir);
  let draft: LoadedModel | null = null;
  try {
    const draftDir = values.draft !== undefined ? resolveModelDir(values.draft) : resolveDraftDir(modelDir, model.manifest);
    if (draftDir) {
      draft = await loadModelFromDirectory(draftDir);
    }
    const documents = await readHeldout(heldout);
    const report = await runPhenomena(model, draft, documents, { quick, trials, seed, family, familyNote, onProgress: progress });
    if (!draft && model.manifest.draft) report.acceptanceNote = `draft model "${model.manifest.draft}" not found next to ${displayPath(modelDir)} (pass --draft DIR)`;
    progress(null);
    const summary = summarizeModel(modelDir, model.manifest);
    if (values.json) {
      const out = { model: summary, draft: draft ? { id: draft.manifest.id, directory: draftDir } : null, heldout, family: family ? familyFile : null, phenomena: report };
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

const DEFAULT_FAMILY = join(PACKAGE_ROOT, 'static', 'data', 'needle-family.json');

/**
 * --family FILE, checked before any model time is spent. The default file may be absent (the
 * section is skipped with a note); a file named on the command line must exist.
 */
async function readFamily(given: string | undefined): Promise<{ family: NeedleFamily | null; familyFile: string; familyNote?: string }> {
  const familyFile = given !== undefined ? resolve(given) : DEFAULT_FAMILY;
  if (given === undefined && !existsSync(familyFile)) {
    return { family: null, familyFile, familyNote: `no needle-family file (${displayPath(familyFile)} is absent; pass --family FILE)` };
  }
  let json: unknown;
  try {
    json = JSON.parse(await readFile(familyFile, 'utf8'));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new KvscopeError(`cannot read the needle family ${displayPath(familyFile)}: ${code === 'ENOENT' ? 'no such file' : (error as Error).message}`);
  }
  return { family: parseNeedleFamily(json, displayPath(familyFile)), familyFile };
}

async function inspectKvSimilarity(
  values: { model?: string; draft?: string; trials?: string; seed?: string; heldout?: string; family?: string; windows?: string; tokens?: string; json?: boolean },
  quick: boolean,
  io: CliIO,
): Promise<number> {
  for (const name of ['draft', 'trials', 'family'] as const) {
    if (values[name] !== undefined) throw new UsageError(`--${name} does not apply to --kv-similarity`);
  }
  const windows = integerOption('windows', values.windows, quick ? 2 : 4, 1, 1000);
  const seed = seedOption(values.seed, 0);
  const heldout = heldoutPath(values.heldout);
  const modelDir = resolveModelDir(values.model);
  const progress = makeProgress(io);
  const model = await loadModelFromDirectory(modelDir);
  try {
    const context = model.manifest.architecture.context_length;
    const tokens = integerOption('tokens', values.tokens, Math.min(quick ? 256 : 512, context), 2, context, `an integer in 2..${context} (the model's context)`);
    const documents = await readHeldout(heldout);
    const report = await runKvSimilarity(model, documents, { windows, tokens, seed, onProgress: (done, total) => progress(`kv similarity: window ${done}/${total}`) });
    progress(null);
    if (values.json) {
      const out = { model: summarizeModel(modelDir, model.manifest), heldout, kvSimilarity: report };
      io.stdout(`${JSON.stringify(out, null, 2)}\n`);
    } else {
      io.stdout(`${formatKvSimilarity(report, model.manifest.id)}\n`);
    }
    return 0;
  } finally {
    progress(null);
    await model.release();
  }
}
