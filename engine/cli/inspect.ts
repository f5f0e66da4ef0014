/**
 * `kvscope inspect`: the model's manifest summary and its measured phenomena on held-out text
 * (engine/metrics/phenomena.ts); the text layout is inspect-report.ts.
 */
import type { LoadedModel } from '../model/load.ts';
import { loadModelFromDirectory } from '../model/load-node.ts';
import { runPhenomena } from '../metrics/phenomena.ts';
import { integerOption, noExtraPositionals, parse, seedOption, UsageError } from './args.ts';
import { formatModel, formatPhenomena, summarizeModel } from './inspect-report.ts';
import { makeProgress, type CliIO } from './io.ts';
import { displayPath, heldoutPath, readHeldout, resolveDraftDir, resolveModelDir } from './models.ts';

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

export async function inspect(args: string[], io: CliIO): Promise<number> {
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
  const seed = seedOption(values.seed, 0);
  if (values.draft !== undefined && values.draft.trim() === '') throw new UsageError('--draft needs a directory or a model id');
  const heldout = heldoutPath(values.heldout);

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
    const report = await runPhenomena(model, draft, documents, { quick, trials, seed, onProgress: progress });
    if (!draft && model.manifest.draft) report.acceptanceNote = `draft model "${model.manifest.draft}" not found next to ${displayPath(modelDir)} (pass --draft DIR)`;
    progress(null);
    const summary = summarizeModel(modelDir, model.manifest);
    if (values.json) {
      const out = { model: summary, draft: draft ? { id: draft.manifest.id, directory: draftDir } : null, heldout, phenomena: report };
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
