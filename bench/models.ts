/**
 * Model-folder checks benchmark (fifth part of `npm run bench`; alone: `npm run bench:models`):
 * what checking a model folder costs, as /models does before it stores an upload and as every
 * load does. The folder's files are read into memory first, so the times are the checks alone
 * (in the browser, reading the picked files and writing them to storage come on top).
 *
 *   tsx bench/models.ts [--reps 3] [--out FILE]
 *
 * Per shipped model: bytes, sha256 of every file, onnxruntime session creation, the graph checks
 * (metadata against the manifest and the one-token probe forward), the tokenizer, and the whole
 * loadModel; and how fast a hostile manifest (n_layers = 1e9) is refused.
 * Prints a table and writes JSON to bench-results/models.json.
 */
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ModelError } from '../engine/errors.ts';
import { checkGraphDims } from '../engine/model/graph-check.ts';
import { loadModel, type ModelSource } from '../engine/model/load.ts';
import { sha256Hex } from '../engine/model/sha256.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '3' },
    out: { type: 'string', default: join(ROOT, 'bench-results', 'models.json') },
  },
  strict: true,
});
const reps = Math.max(1, Number(args.reps) || 3);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function folder(dir: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const name of await readdir(dir)) files.set(name, new Uint8Array(await readFile(join(dir, name))));
  return files;
}

function memorySource(files: Map<string, Uint8Array>, location: string): ModelSource {
  return {
    location,
    async read(path) {
      const bytes = files.get(path);
      if (!bytes) throw new ModelError(`${path}: file is missing (${location})`);
      return bytes;
    },
  };
}

interface ModelRow {
  id: string;
  bytes: number;
  sha256Ms: number;
  loadMs: number;
  sessionMs: number;
  graphChecksMs: number;
}

const index = JSON.parse(await readFile(join(ROOT, 'static/models/index.json'), 'utf8')) as { models: { id: string; path: string }[] };
const rows: ModelRow[] = [];
for (const entry of index.models) {
  const files = await folder(join(ROOT, 'static/models', entry.path));
  const bytes = [...files.values()].reduce((n, b) => n + b.length, 0);
  const sha: number[] = [];
  const load: number[] = [];
  const session: number[] = [];
  const checks: number[] = [];
  for (let r = 0; r < reps; r++) {
    let t0 = performance.now();
    for (const b of files.values()) await sha256Hex(b);
    sha.push(performance.now() - t0);
    let sessionStart = 0;
    let sessionEnd = 0;
    t0 = performance.now();
    const model = await loadModel(memorySource(files, entry.path), {
      numThreads: 1,
      onProgress: (p) => {
        if (p.phase === 'session' && p.loaded === 0) sessionStart = performance.now();
        if (p.phase === 'session' && p.loaded === 1) sessionEnd = performance.now();
      },
    });
    load.push(performance.now() - t0);
    session.push(sessionEnd - sessionStart);
    t0 = performance.now();
    await checkGraphDims(model.manifest, model.session);
    checks.push(performance.now() - t0);
    await model.release();
  }
  rows.push({ id: entry.id, bytes, sha256Ms: median(sha), loadMs: median(load), sessionMs: median(session), graphChecksMs: median(checks) });
}

// A hostile manifest is refused before anything else is read.
const draft = await folder(join(ROOT, 'static/models', index.models[0].path));
const hostile = JSON.parse(new TextDecoder().decode(draft.get('manifest.json'))) as { architecture: { n_layers: number } };
hostile.architecture.n_layers = 1e9;
const bad = new Map(draft);
bad.set('manifest.json', new TextEncoder().encode(JSON.stringify(hostile)));
const refusals: number[] = [];
let refusal = '';
for (let r = 0; r < 50; r++) {
  const t0 = performance.now();
  try {
    await loadModel(memorySource(bad, 'hostile'));
  } catch (error) {
    refusal = (error as Error).message;
  }
  refusals.push(performance.now() - t0);
}

const mib = (n: number) => (n / 2 ** 20).toFixed(1);
console.log(`model folder checks (${cpus().length} cores, load ${loadavg()[0].toFixed(1)}; median of ${reps})`);
console.log('model                 MiB    sha256 ms   session+checks ms   of which graph checks ms   whole load ms');
for (const r of rows) {
  console.log(`${r.id.padEnd(20)} ${mib(r.bytes).padStart(5)} ${r.sha256Ms.toFixed(0).padStart(11)} ${r.sessionMs.toFixed(0).padStart(19)} ${r.graphChecksMs.toFixed(1).padStart(26)} ${r.loadMs.toFixed(0).padStart(15)}`);
}
console.log(`hostile manifest (n_layers = 1e9) refused in ${median(refusals).toFixed(2)} ms: ${refusal}`);

await mkdir(dirname(args.out), { recursive: true });
await writeFile(args.out, `${JSON.stringify({ cores: cpus().length, load: loadavg()[0], reps, models: rows, hostileRefusalMs: median(refusals), hostileRefusal: refusal }, null, 2)}\n`);
console.log(`wrote ${args.out}`);
