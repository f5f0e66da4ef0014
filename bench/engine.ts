/**
 * Engine decode overhead: Session.step() vs a minimal loop that only concatenates the present K/V
 * and feeds the graph (no policy, no trace, no sampling beyond argmax). Goal: engine ≤ 1.15×.
 *
 *   npm run bench -- [model-dir] [--prompt N] [--steps N] [--repeats N]
 *
 * Default model: static/models/kvscope-llama-8l if present, else the tiny test fixture (whose
 * forward is so cheap that the ratio is a worst case).
 */
import { existsSync } from 'node:fs';
import * as ort from 'onnxruntime-web';
import { loadModelFromDirectory } from '../engine/model/load-node.ts';
import type { LoadedModel } from '../engine/model/load.ts';
import { argmax } from '../engine/sampling.ts';
import { Session } from '../engine/session.ts';

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const positional = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !all[i - 1]?.startsWith('--'));
const modelDir = positional[0] ?? (existsSync('static/models/kvscope-llama-8l/manifest.json') ? 'static/models/kvscope-llama-8l' : 'tests/fixtures/tiny-model');
const promptLength = option('prompt', 64);
const steps = option('steps', 128);
const repeats = option('repeats', 3);

/** The baseline: keep K/V per layer as [Hkv, T, D], grow by concatenation, feed, argmax. */
async function minimalLoop(model: LoadedModel, prompt: number[], n: number): Promise<{ ms: number; tokens: number[] }> {
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
  const forward = async (ids: number[]): Promise<Float32Array> => {
    const q = ids.length;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, q]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(t + i))), [1, q]),
    };
    const fetches = ['logits'];
    for (let l = 0; l < nLayers; l++) {
      const bias = new Float32Array(nHeads * q * (t + q));
      for (let h = 0; h < nHeads; h++) for (let i = 0; i < q; i++) bias.fill(-1e9, (h * q + i) * (t + q) + t + i + 1, (h * q + i + 1) * (t + q));
      feeds[`past_key_${l}`] = new ort.Tensor('float32', keys[l], [1, nKvHeads, t, headDim]);
      feeds[`past_value_${l}`] = new ort.Tensor('float32', values[l], [1, nKvHeads, t, headDim]);
      feeds[`attn_bias_${l}`] = new ort.Tensor('float32', bias, [1, nHeads, q, t + q]);
      fetches.push(`key_${l}`, `value_${l}`);
    }
    const out = await model.session.run(feeds, fetches);
    keys = keys.map((k, l) => concat(k, out[`key_${l}`].data as Float32Array, q));
    values = values.map((v, l) => concat(v, out[`value_${l}`].data as Float32Array, q));
    t += q;
    const logits = out.logits.data as Float32Array;
    return logits.subarray((q - 1) * vocabSize, q * vocabSize);
  };
  let logits = await forward(prompt);
  const tokens: number[] = [];
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const token = argmax(logits);
    tokens.push(token);
    logits = await forward([token]);
  }
  return { ms: performance.now() - start, tokens };
}

async function engineLoop(model: LoadedModel, prompt: number[], n: number, trace: boolean): Promise<{ ms: number; tokens: number[] }> {
  const session = new Session(model, { policy: 'full', trace: trace ? {} : { attention: false, fullSteps: 0 } });
  await session.prefill(prompt);
  const start = performance.now();
  const result = await session.run(n, { stopAtEos: false });
  return { ms: performance.now() - start, tokens: result.steps.map((s) => s.token.id) };
}

const model = await loadModelFromDirectory(modelDir);
const vocab = model.manifest.architecture.vocab_size;
const maxSteps = Math.min(steps, model.manifest.architecture.context_length - promptLength);
const prompt = [model.manifest.tokenizer.bos_id, ...Array.from({ length: promptLength - 1 }, (_, i) => 3 + ((i * 7919) % (vocab - 3)))];
console.log(`model ${model.manifest.id} (${modelDir}), prompt ${promptLength}, ${maxSteps} decode steps, best of ${repeats}`);

await minimalLoop(model, prompt, 8); // warm-up
const best = { baseline: Infinity, engine: Infinity, engineNoTrace: Infinity };
for (let r = 0; r < repeats; r++) {
  const base = await minimalLoop(model, prompt, maxSteps);
  const withTrace = await engineLoop(model, prompt, maxSteps, true);
  const noTrace = await engineLoop(model, prompt, maxSteps, false);
  if (withTrace.tokens.join() !== base.tokens.join() || noTrace.tokens.join() !== base.tokens.join()) {
    throw new Error('engine and minimal loop produced different greedy tokens');
  }
  best.baseline = Math.min(best.baseline, base.ms);
  best.engine = Math.min(best.engine, withTrace.ms);
  best.engineNoTrace = Math.min(best.engineNoTrace, noTrace.ms);
}
const perToken = (ms: number) => `${((ms / maxSteps) * 1000).toFixed(0)} µs/token`;
console.log(`minimal loop        ${perToken(best.baseline)}`);
console.log(`engine, trace on    ${perToken(best.engine)}  (${(best.engine / best.baseline).toFixed(3)}×)`);
console.log(`engine, trace off   ${perToken(best.engineNoTrace)}  (${(best.engineNoTrace / best.baseline).toFixed(3)}×)`);
await model.release();
