/**
 * Links and notebooks benchmark (fourth part of `npm run bench`; alone: `npm run bench:links`):
 * what sharing an experiment and keeping it in a notebook cost, on the real default model.
 *
 *   tsx bench/links.ts [--model DIR] [--steps 64,256] [--out FILE]
 *
 * - Links: the payload of an experiment link (characters in the address, ≤ 8 KB) and the time to
 *   encode and to read it, for prompts of held-out text of 100 – 6,000 characters and timelines of
 *   1 – 200 actions (median of 200).
 * - Replay: opening a link replays its steps, so it costs what decoding costs: ms per step of the
 *   engine with the explorer's trace options (the worker adds its views on top).
 * - Traces: the JSON size of an exported trace after `steps` steps (what an experiment cell keeps).
 * - Bundles: zip size and encode / decode time of a notebook bundle holding 1 – 10 experiment cells,
 *   each with a real trace and a figure snapshot.
 * Prints a table and writes JSON to bench-results/links.json.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { resolveModelDir } from '../engine/cli/models.ts';
import { loadModelFromDirectory } from '../engine/model/load-node.ts';
import { modelSha256 } from '../engine/model/manifest.ts';
import { Session } from '../engine/session.ts';
import { exportTraceJson } from '../engine/trace/schema.ts';
import { encodePayload, readExperimentQuery } from '../src/lib/links/codec.ts';
import type { Experiment, ExperimentAction } from '../src/lib/links/experiment.ts';
import { decodeBundle, encodeBundle } from '../src/lib/notebooks/bundle.ts';
import type { Notebook } from '../src/lib/notebooks/types.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    steps: { type: 'string', default: '64,256' },
    out: { type: 'string', default: join(ROOT, 'bench-results', 'links.json') },
  },
  strict: true,
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function timeMs(fn: () => void, reps: number): number {
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  return median(times);
}

const modelDir = args.model ? resolve(args.model) : resolveModelDir(undefined);
const model = await loadModelFromDirectory(modelDir);
const sha256 = await modelSha256(model.manifest);
const heldout = JSON.parse(await readFile(join(ROOT, 'static/data/heldout.json'), 'utf8')) as { documents: { text: string }[] };
const text = heldout.documents.map((d) => d.text).join('\n\n');

// ---- links ----
const links: { promptChars: number; actions: number; payloadChars: number; encodeMs: number; readMs: number }[] = [];
for (const promptChars of [100, 1000, 3000, 6000]) {
  for (const actionCount of [1, 20, 200]) {
    const actions: ExperimentAction[] = [];
    for (let i = 0; actions.length < actionCount; i++) {
      actions.push({ kind: 'decode', steps: 3 + (i % 5) });
      if (actions.length < actionCount) actions.push({ kind: 'policy', spec: i % 2 ? `window:size=${32 + i}` : `h2o:heavy=${8 + i},recent=8` });
    }
    const steps = actions.reduce((n, a) => n + (a.kind === 'decode' ? a.steps : 0), 0);
    const experiment: Experiment = {
      model: { id: model.manifest.id, sha256 },
      prompt: text.slice(0, promptChars),
      sampler: { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 },
      policy: 'full',
      actions,
      steps,
      view: { step: null, layer: 3, head: 2, scale: 'linear', excludeSink: false, forgotten: 'all', live: true },
    };
    const payload = encodePayload(experiment);
    const encodeMs = timeMs(() => encodePayload(experiment), 200);
    const readMs = timeMs(() => readExperimentQuery(`v=1&x=${payload}`), 200);
    links.push({ promptChars, actions: actionCount, payloadChars: payload.length, encodeMs, readMs });
  }
}

// ---- replay cost and traces ----
const stepCounts = args.steps.split(',').map(Number);
const prompt = text.slice(0, 400);
const traces: { steps: number; traceBytes: number; msPerStep: number }[] = [];
const traceJson = new Map<number, string>();
for (const steps of stepCounts) {
  const session = new Session(model, {
    policy: 'full',
    sampler: { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 },
    trace: { fullSteps: 64, topTokens: 10, attentionTop: 8, attention: true },
    keepQueries: true,
  });
  await session.prefill(model.tokenizer.encode(prompt));
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await session.step();
  const msPerStep = (performance.now() - t0) / steps;
  const json = exportTraceJson(session.trace, undefined, { prompt, reference: null, next: [], protects: null });
  traceJson.set(steps, json);
  traces.push({ steps, traceBytes: json.length, msPerStep });
}

// ---- bundles ----
const figureSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="900" height="300">${Array.from({ length: 2000 }, (_, i) => `<rect x="${i % 900}" y="${i % 300}" width="2" height="2" fill="#0072b2"/>`).join('')}</svg>`;
const bundles: { cells: number; traceSteps: number; zipBytes: number; encodeMs: number; decodeMs: number }[] = [];
const biggest = Math.min(...stepCounts);
for (const cells of [1, 5, 10]) {
  const notebook: Notebook = {
    id: 'bench',
    title: 'Bench notebook',
    created: 0,
    updated: 0,
    cells: Array.from({ length: cells }, (_, i) => ({
      kind: 'experiment' as const,
      id: `cell-${i}`,
      link: `/?v=1&x=${links[0] ? encodePayload({ model: { id: model.manifest.id, sha256 }, prompt, sampler: { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 }, policy: 'full', actions: [{ kind: 'decode', steps: biggest }], steps: biggest, view: { step: null, layer: 0, head: 0, scale: 'linear', excludeSink: false, forgotten: 'all', live: true } }) : ''}`,
      trace: traceJson.get(biggest) ?? null,
      summary: `${model.manifest.id} · full · ${biggest} steps`,
      text: prompt,
      figure: { name: 'cache-map', title: 'Cache map', caption: 'bench', svg: figureSvg },
    })),
  };
  let zip: Uint8Array = new Uint8Array();
  const encodeMs = timeMs(() => (zip = encodeBundle([notebook])), 5);
  const decodeMs = timeMs(() => decodeBundle(zip), 5);
  bundles.push({ cells, traceSteps: biggest, zipBytes: zip.length, encodeMs, decodeMs });
}

const kb = (n: number) => `${(n / 1024).toFixed(1)} KB`;
console.log(`links and notebooks · ${model.manifest.id} · ${cpus().length} cores, load ${loadavg()[0].toFixed(1)}\n`);
console.log('link payload (address ≤ 8 KB)      prompt  actions   payload   encode    read');
for (const l of links) console.log(`${' '.repeat(34)}${String(l.promptChars).padStart(6)}  ${String(l.actions).padStart(7)}  ${String(l.payloadChars).padStart(8)}  ${l.encodeMs.toFixed(3).padStart(6)} ms ${l.readMs.toFixed(3).padStart(6)} ms`);
console.log('\nreplay and traces                   steps   ms/step (engine + trace)   trace JSON');
for (const t of traces) console.log(`${' '.repeat(34)}${String(t.steps).padStart(6)}   ${t.msPerStep.toFixed(1).padStart(8)}                  ${kb(t.traceBytes).padStart(10)}`);
console.log('\nbundle (experiment cells + traces)  cells   zip        encode    decode');
for (const b of bundles) console.log(`${' '.repeat(34)}${String(b.cells).padStart(6)}   ${kb(b.zipBytes).padStart(9)}  ${b.encodeMs.toFixed(0).padStart(5)} ms  ${b.decodeMs.toFixed(0).padStart(5)} ms`);

await mkdir(dirname(args.out), { recursive: true });
await writeFile(args.out, JSON.stringify({ model: model.manifest.id, cores: cpus().length, load: loadavg()[0], links, traces, bundles }, null, 2));
console.log(`\nwrote ${args.out}`);
