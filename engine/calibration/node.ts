/**
 * Node-only: calibrate a model directory and write `calibration.json` next to its manifest.
 * The `kvscope calibrate` subcommand is a thin wrapper over `calibrateDirectory`; until it exists,
 * run this file directly:
 *
 *   npx tsx engine/calibration/node.ts static/models/kvscope-llama-8l [--heldout FILE] [--seed N] [--trials N] [--out FILE]
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { loadModelFromDirectory } from '../model/load-node.ts';
import { computeCalibration, type CalibrationOptions } from './compute.ts';
import { CALIBRATION_FILE, CalibrationError, serializeCalibration, type Calibration } from './format.ts';
import { formatCalibration } from './report.ts';

/** Texts of a held-out file `{"documents": [{"text": …}]}` (static/data/heldout.json). */
export async function readHeldoutTexts(path: string): Promise<string[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    throw new CalibrationError(`cannot read held-out text ${path}: ${(error as Error).message}`);
  }
  const docs = (json as { documents?: unknown })?.documents;
  if (!Array.isArray(docs)) throw new CalibrationError(`${path}: expected {"documents": [{"text": …}]}`);
  const texts = docs.map((d) => (d as { text?: unknown })?.text).filter((t): t is string => typeof t === 'string' && t.length > 0);
  if (texts.length === 0) throw new CalibrationError(`${path}: no documents with text`);
  return texts;
}

export interface CalibrateDirectoryOptions extends Omit<CalibrationOptions, 'documents'> {
  /** held-out documents file (default static/data/heldout.json of this package) */
  heldout?: string;
  /** where to write (default <dir>/calibration.json); null = do not write */
  out?: string | null;
}

/** Loads the model (ignoring any existing calibration.json), computes, writes, returns the calibration. */
export async function calibrateDirectory(directory: string, options: CalibrateDirectoryOptions = {}): Promise<{ calibration: Calibration; path: string | null }> {
  const heldout = options.heldout ?? fileURLToPath(new URL('../../static/data/heldout.json', import.meta.url));
  const documents = await readHeldoutTexts(heldout);
  const model = await loadModelFromDirectory(directory, { calibration: false });
  try {
    const calibration = await computeCalibration(model, { ...options, documents });
    const path = options.out === null ? null : resolve(options.out ?? join(directory, CALIBRATION_FILE));
    if (path) await writeFile(path, serializeCalibration(calibration));
    return { calibration, path };
  } finally {
    await model.release();
  }
}

async function cli(argv: string[]): Promise<void> {
  const directory = argv.find((a, i) => !a.startsWith('--') && !argv[i - 1]?.startsWith('--'));
  if (!directory) throw new CalibrationError('usage: node.ts MODEL_DIR [--heldout FILE] [--seed N] [--trials N] [--out FILE]');
  const flag = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const seed = flag('seed') !== undefined ? Number(flag('seed')) : undefined;
  const trials = flag('trials') !== undefined ? Number(flag('trials')) : undefined;
  let last = '';
  const { calibration, path } = await calibrateDirectory(directory, {
    heldout: flag('heldout'),
    out: flag('out'),
    seed,
    retrieval: trials !== undefined ? { trials } : undefined,
    onProgress: ({ section, done, total }) => {
      const line = `${section} ${done}/${total}`;
      if (line !== last) process.stderr.write(`\r${(last = line).padEnd(30)}`);
    },
  });
  process.stderr.write('\n');
  process.stdout.write(`${formatCalibration(calibration)}\nwrote ${path}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  cli(process.argv.slice(2)).catch((error) => {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(1);
  });
}
