/**
 * Engine benchmark (npm run bench): decode and prefill speed of the real default model through
 * the engine, against a minimal loop that feeds the same graph directly.
 *
 *   npm run bench -- [--model DIR] [--contexts 128,512,1024] [--steps 32] [--repeats 3] [--out FILE]
 *
 * Decode at context C: prefill C − steps held-out tokens, then decode `steps` greedy tokens, so the
 * last token sits at position C − 1. Three loops, interleaved, best of `repeats`:
 *   minimal      onnxruntime directly: concatenate key_l/value_l onto the cache, feed, argmax
 *                (fetches logits and the new K/V only; no policy, no trace, no sampler)
 *   engine+trace Session.step() with the default trace options (attention rows for recent steps,
 *                top-k summaries, top tokens): what the explorer records
 *   engine       Session.step() with attention tracing off ({attention: false, fullSteps: 0})
 * Wall time per token = every step's fastest time over the repeats, averaged (robust to other
 * processes on a small machine); CPU time of the process per token is reported beside it.
 * Every loop must produce the same greedy tokens. Prefill: Session.prefill of a full-context prompt
 * at chunk 128 and 256. Memory: peak RSS of the process and the largest heap seen.
 * Prints a table and writes JSON to bench-results/engine.json.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-web';
import { heldoutWindows } from '../engine/metrics/heldout.ts';
import { loadModelFromDirectory } from '../engine/model/load-node.ts';
import type { LoadedModel } from '../engine/model/load.ts';
import { argmax } from '../engine/sampling.ts';
import { Session } from '../engine/session.ts';
import { DEFAULT_TRACE_OPTIONS } from '../engine/trace/schema.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    contexts: { type: 'string', default: '128,512,1024' },
    steps: { type: 'string', default: '32' },
    repeats: { type: 'string', default: '5' },
    out: { type: 'string', default: join(ROOT, 'bench-results', 'engine.json') },
  },
  strict: true,
});

async function defaultModelDir(): Promise<string> {
  const index = JSON.parse(await readFile(join(ROOT, 'static/models/index.json'), 'utf8')) as { default: string; models: { id: string; path: string }[] };
  const entry = index.models.find((m) => m.id === index.default);
  if (!entry) throw new Error(`static/models/index.json: default ${index.default} is not listed`);
  return join(ROOT, 'static/models', entry.path);
}

const modelDir = args.model ? resolve(args.model) : await defaultModelDir();
const steps = Number(args.steps);
const repeats = Number(args.repeats);

// ---- memory sampling ------------------------------------------------------------------------

let peakHeap = 0;
let peakRss = 0;
function sampleMemory(): void {
  const m = process.memoryUsage();
  peakHeap = Math.max(peakHeap, m.heapUsed);
  peakRss = Math.max(peakRss, m.rss);
}

// ---- the minimal loop -------------------------------------------------------------------------

interface LoopResult {
  /** decode ms per token, wall clock */
  msPerToken: number;
  /** wall ms of each decode step */
  stepMs: number[];
  /** decode ms per token of process CPU time (user + system): robust to other processes on the machine */
  cpuMsPerToken: number;
  tokens: number[];
}

function cpuMs(since: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000;
}

/** Keeps K/V per layer as [Hkv, T, D], grows them by concatenation, feeds the graph, takes argmax. */
async function minimalLoop(model: LoadedModel, prompt: readonly number[], n: number, chunk = 128): Promise<LoopResult & { prefillMs: number }> {
  const { nLayers, nHeads, nKvHeads, headDim, vocabSize } = model.forward.dims;
  let keys: Float32Array[] = Array.from({ length: nLayers }, () => new Float32Array(0));
  let values: Float32Array[] = Array.from({ length: nLayers }, () => new Float32Array(0));
  let t = 0;
  const concat = (past: Float32Array, next: Float32Array, q: number): Float32Array => {
    const out = new Float32Array(nKvHeads * (t + q) * headDim);
    for (let h = 0; h < nKvHeads; h++) {
      out.set(past.subarray(h * t * headDim, (h + 1) * t * headDim), h * (t + q) * headDim);
      out.set(next.subarray(h * q * headDim, (h + 1) * q * headDim), (h * (t + q) + t) * headDim);
    }
    return out;
  };
  const fetches = ['logits'];
  for (let l = 0; l < nLayers; l++) fetches.push(`key_${l}`, `value_${l}`);
  const forward = async (ids: readonly number[]): Promise<Float32Array> => {
    const q = ids.length;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, (id) => BigInt(id)), [1, q]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(ids, (_, i) => BigInt(t + i)), [1, q]),
    };
    // causal mask among the new tokens; the cache is fully visible
    const bias = new Float32Array(nHeads * q * (t + q));
    if (q > 1) for (let h = 0; h < nHeads; h++) for (let i = 0; i < q; i++) bias.fill(-1e9, (h * q + i) * (t + q) + t + i + 1, (h * q + i + 1) * (t + q));
    for (let l = 0; l < nLayers; l++) {
      feeds[`past_key_${l}`] = new ort.Tensor('float32', keys[l], [1, nKvHeads, t, headDim]);
      feeds[`past_value_${l}`] = new ort.Tensor('float32', values[l], [1, nKvHeads, t, headDim]);
      feeds[`attn_bias_${l}`] = new ort.Tensor('float32', bias, [1, nHeads, q, t + q]);
    }
    const out = await model.session.run(feeds, fetches);
    keys = keys.map((k, l) => concat(k, out[`key_${l}`].data as Float32Array, q));
    values = values.map((v, l) => concat(v, out[`value_${l}`].data as Float32Array, q));
    t += q;
    const logits = out.logits.data as Float32Array;
    return logits.subarray((q - 1) * vocabSize, q * vocabSize);
  };
  const p0 = performance.now();
  let logits: Float32Array = new Float32Array(0);
  for (let start = 0; start < prompt.length; start += chunk) logits = await forward(prompt.slice(start, start + chunk));
  const prefillMs = performance.now() - p0;
  const tokens: number[] = [];
  const stepMs: number[] = [];
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const token = argmax(logits);
    tokens.push(token);
    logits = await forward([token]);
    stepMs.push(performance.now() - t0);
  }
  const ms = performance.now() - start;
  const cpu = cpuMs(cpu0);
  sampleMemory();
  return { msPerToken: ms / n, stepMs, cpuMsPerToken: cpu / n, tokens, prefillMs };
}

// ---- the engine -------------------------------------------------------------------------------

async function engineLoop(model: LoadedModel, prompt: readonly number[], n: number, trace: boolean): Promise<LoopResult> {
  const session = new Session(model, { policy: 'full', trace: trace ? DEFAULT_TRACE_OPTIONS : { attention: false, fullSteps: 0 } });
  await session.prefill(prompt);
  const tokens: number[] = [];
  const stepMs: number[] = [];
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    tokens.push((await session.step()).token.id);
    stepMs.push(performance.now() - t0);
  }
  const ms = performance.now() - start;
  const cpu = cpuMs(cpu0);
  sampleMemory();
  return { msPerToken: ms / n, stepMs, cpuMsPerToken: cpu / n, tokens };
}

async function enginePrefill(model: LoadedModel, prompt: readonly number[], chunk: number): Promise<number> {
  const session = new Session(model, { policy: 'full', prefillChunk: chunk, trace: { attention: false, fullSteps: 0 } });
  const start = performance.now();
  await session.prefill(prompt);
  const ms = performance.now() - start;
  sampleMemory();
  return ms;
}

// ---- run --------------------------------------------------------------------------------------

const model = await loadModelFromDirectory(modelDir);
const { context_length: contextLength } = model.manifest.architecture;
const documents = (JSON.parse(await readFile(join(ROOT, 'static/data/heldout.json'), 'utf8')) as { documents: { text: string }[] }).documents.map((d) => d.text);
const [longText] = heldoutWindows(model.tokenizer, documents, { windows: 1, tokens: contextLength, seed: 1 });
const contexts = args.contexts.split(',').map(Number).filter((c) => c > steps && c <= contextLength);

console.log(`kvscope engine benchmark — ${model.manifest.id} (${modelDir})`);
console.log(
  `node ${process.version}, onnxruntime-web wasm, ${ort.env.wasm.numThreads ?? 1} thread(s), ${cpus().length} cores, load average ${loadavg()
    .map((x) => x.toFixed(1))
    .join(' ')}; best of ${repeats}; decode ${steps} tokens after a prefill to C − ${steps}`,
);

// warm-up: let V8 tier up onnxruntime's WebAssembly (TurboFan, in the background) before timing
for (const length of [256, contextLength - 64]) {
  await minimalLoop(model, longText.slice(0, length), 32);
  await engineLoop(model, longText.slice(0, length), 32, true);
  await engineLoop(model, longText.slice(0, length), 32, false);
}

interface Timing {
  minimal: number;
  engineTrace: number;
  engine: number;
}
interface DecodeRow {
  context: number;
  promptTokens: number;
  /**
   * wall ms/token of each loop: every decode step's fastest time over the repeats, averaged over
   * the steps (a step preempted by another process in one repeat is timed in another)
   */
  wall: Timing;
  /** best mean wall ms/token over the repeats (whole loops) */
  wallLoop: Timing;
  /** best CPU ms/token of each loop */
  cpu: Timing;
  identicalTokens: boolean;
}
const decode: DecodeRow[] = [];
for (const context of contexts) {
  const prompt = longText.slice(0, context - steps);
  const wallLoop: Timing = { minimal: Infinity, engineTrace: Infinity, engine: Infinity };
  const cpu: Timing = { minimal: Infinity, engineTrace: Infinity, engine: Infinity };
  const bestStep = { minimal: new Array<number>(steps).fill(Infinity), engineTrace: new Array<number>(steps).fill(Infinity), engine: new Array<number>(steps).fill(Infinity) };
  let identical = true;
  for (let r = 0; r < repeats; r++) {
    const runs: Record<keyof Timing, LoopResult> = {
      minimal: await minimalLoop(model, prompt, steps),
      engineTrace: await engineLoop(model, prompt, steps, true),
      engine: await engineLoop(model, prompt, steps, false),
    };
    identical &&= runs.engineTrace.tokens.join() === runs.minimal.tokens.join() && runs.engine.tokens.join() === runs.minimal.tokens.join();
    for (const key of ['minimal', 'engineTrace', 'engine'] as const) {
      wallLoop[key] = Math.min(wallLoop[key], runs[key].msPerToken);
      cpu[key] = Math.min(cpu[key], runs[key].cpuMsPerToken);
      runs[key].stepMs.forEach((ms, i) => (bestStep[key][i] = Math.min(bestStep[key][i], ms)));
    }
  }
  if (!identical) throw new Error(`context ${context}: the engine and the minimal loop produced different greedy tokens`);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const wall: Timing = { minimal: mean(bestStep.minimal), engineTrace: mean(bestStep.engineTrace), engine: mean(bestStep.engine) };
  decode.push({ context, promptTokens: prompt.length, wall, wallLoop, cpu, identicalTokens: identical });
}

const prefillPrompt = longText.slice(0, contextLength);
const prefill: { chunk: number; tokens: number; engineMs: number; minimalMs: number }[] = [];
for (const chunk of [128, 256]) {
  let engineMs = Infinity;
  let minimalMs = Infinity;
  for (let r = 0; r < repeats; r++) {
    engineMs = Math.min(engineMs, await enginePrefill(model, prefillPrompt, chunk));
    minimalMs = Math.min(minimalMs, (await minimalLoop(model, prefillPrompt.slice(0, contextLength - 1), 1, chunk)).prefillMs);
  }
  prefill.push({ chunk, tokens: prefillPrompt.length, engineMs, minimalMs });
}
sampleMemory();
const maxRssBytes = process.resourceUsage().maxRSS * 1024;

// ---- report -----------------------------------------------------------------------------------

const tps = (ms: number) => 1000 / ms;
const pad = (s: string, n: number) => s.padStart(n);
console.log('\ndecode, greedy, full cache: tokens/s (wall clock, each step its best of the repeats) and engine time ÷ minimal-loop time');
console.log('                                                  ── wall ratio ──     ── CPU ratio ──');
console.log('context  prompt  minimal  engine+trace   engine     +trace  no trace     +trace  no trace   same tokens');
for (const row of decode) {
  const { wall, cpu } = row;
  console.log(
    `${pad(String(row.context), 7)} ${pad(String(row.promptTokens), 7)} ${pad(tps(wall.minimal).toFixed(1), 8)} ${pad(tps(wall.engineTrace).toFixed(1), 13)} ${pad(tps(wall.engine).toFixed(1), 8)}` +
      `   ${pad((wall.engineTrace / wall.minimal).toFixed(3), 7)}× ${pad((wall.engine / wall.minimal).toFixed(3), 8)}×   ${pad((cpu.engineTrace / cpu.minimal).toFixed(3), 7)}× ${pad((cpu.engine / cpu.minimal).toFixed(3), 8)}×   ${row.identicalTokens ? 'yes' : 'NO'}`,
  );
}
console.log('\nprefill (full-context prompt)        tokens/s');
console.log('chunk   tokens    engine   minimal');
for (const row of prefill) {
  console.log(`${pad(String(row.chunk), 5)} ${pad(String(row.tokens), 8)} ${pad(((row.tokens / row.engineMs) * 1000).toFixed(0), 9)} ${pad((((row.tokens - 1) / row.minimalMs) * 1000).toFixed(0), 9)}`);
}
const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
console.log(`load average at the end: ${loadavg().map((x) => x.toFixed(1)).join(' ')} (wall-clock numbers are only as quiet as the machine)`);
console.log(`\npeak memory: RSS ${mib(maxRssBytes)} (process max), JS heap ${mib(peakHeap)} (largest sampled)`);

const result = {
  model: { id: model.manifest.id, directory: modelDir, context: contextLength },
  node: process.version,
  date: new Date().toISOString(),
  settings: { steps, repeats, contexts, trace: DEFAULT_TRACE_OPTIONS },
  decode: decode.map((r) => ({
    context: r.context,
    prompt_tokens: r.promptTokens,
    ms_per_token: { minimal: r.wall.minimal, engine_trace: r.wall.engineTrace, engine: r.wall.engine },
    loop_ms_per_token: { minimal: r.wallLoop.minimal, engine_trace: r.wallLoop.engineTrace, engine: r.wallLoop.engine },
    cpu_ms_per_token: { minimal: r.cpu.minimal, engine_trace: r.cpu.engineTrace, engine: r.cpu.engine },
    tokens_per_s: { minimal: tps(r.wall.minimal), engine_trace: tps(r.wall.engineTrace), engine: tps(r.wall.engine) },
    ratio: { engine_trace: r.wall.engineTrace / r.wall.minimal, engine: r.wall.engine / r.wall.minimal },
    cpu_ratio: { engine_trace: r.cpu.engineTrace / r.cpu.minimal, engine: r.cpu.engine / r.cpu.minimal },
    identical_tokens: r.identicalTokens,
  })),
  load_average: loadavg(),
  prefill: prefill.map((r) => ({
    chunk: r.chunk,
    tokens: r.tokens,
    engine_ms: r.engineMs,
    engine_tokens_per_s: (r.tokens / r.engineMs) * 1000,
    minimal_tokens_per_s: ((r.tokens - 1) / r.minimalMs) * 1000,
  })),
  memory: { max_rss_bytes: maxRssBytes, peak_heap_used_bytes: peakHeap, peak_rss_sampled_bytes: peakRss },
};
await mkdir(dirname(args.out), { recursive: true });
await writeFile(args.out, `${JSON.stringify(result, null, 2)}\n`);
console.log(`\nwrote ${args.out}`);
await model.release();
