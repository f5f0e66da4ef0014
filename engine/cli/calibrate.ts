/** `kvscope calibrate`: a thin wrapper over engine/calibration/node.ts (calibrateDirectory). */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { calibrateDirectory } from '../calibration/node.ts';
import { formatCalibration } from '../calibration/report.ts';
import { ModelError } from '../errors.ts';
import { integerOption, noExtraPositionals, parse, requireFileName, seedOption, UsageError } from './args.ts';
import { makeProgress, type CliIO } from './io.ts';
import { displayPath, resolveModelDir } from './models.ts';

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

export async function calibrate(args: string[], io: CliIO): Promise<number> {
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
  const seed = seedOption(values.seed, 1);
  const trials = values.trials === undefined ? undefined : integerOption('trials', values.trials, 10, 1);
  requireFileName('out', values.out);
  const modelDir = resolveModelDir(positionals[0] ?? values.model);
  if (!existsSync(join(modelDir, 'manifest.json'))) throw new ModelError(`model directory not found: ${modelDir}`);
  const progress = makeProgress(io);
  try {
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
