/**
 * CompressKV's offline per-layer output error e_l (Lin et al., 2025; TUDa-HWAI/CompressKV
 * `modeling_llama_new.py` layer_error_fnorm + `pred_get_importance_score.py`, read to understand).
 * The reference, during decoding with the full cache, computes every layer's attention output
 * twice — over the full cache and over that layer's CompressKV selection — and accumulates
 * ‖O_compressed − O_full‖_F / ‖O_full‖_F (after o_proj); summed over steps and samples, then
 * normalized over layers to sum 1.
 *
 * Our reading, with the engine's outputs:
 *  - the model runs with the full cache (teacher-forced on held-out text: prompt of P tokens, then
 *    G decode steps feeding the text's next tokens), so each layer's error is measured as if that
 *    layer alone were compressed;
 *  - the selection is CompressKV's (policies/compresskv.ts): the prompt's last W queries scored by
 *    the layer's top-k semantic heads, pooled, top (budget − W) + window; decode tokens are kept;
 *  - the compressed output needs no second forward: restricting a softmax to a subset renormalizes
 *    it, so O_c[h] = Σ_{j∈kept} a_hj v_j / Σ_{j∈kept} a_hj from the full attention row a_h;
 *  - the error is taken before o_proj (the graph does not expose o_proj's weights), over all query
 *    heads of the layer concatenated: ‖O_c − O_f‖₂ / (‖O_f‖₂ + 1e−5).
 */
import { heldoutWindows } from '../metrics/heldout.ts';
import { topHeads, snapKeep, windowScores } from '../policies/compresskv.ts';
import type { PoolMode } from '../policies/common.ts';
import { Session, type EngineModel } from '../session.ts';
import type { LayerErrorCalibration } from './format.ts';
import { RECORDER_ID, recorderPolicy } from './recorder.ts';

/**
 * Relative L2 error of one layer's attention output when only `kept` entries remain.
 * `attention[qh]` is the full row over the layer's entries (entry order of `values[kvHead]`,
 * `[entries, headDim]`), `kept[j]` = 1 for kept entries. Heads are concatenated.
 */
export function layerOutputError(
  attention: readonly ArrayLike<number>[],
  values: readonly ArrayLike<number>[],
  kept: ArrayLike<number>,
  headDim: number,
): number {
  const nHeads = attention.length;
  const group = nHeads / values.length;
  let diff2 = 0;
  let full2 = 0;
  const full = new Float64Array(headDim);
  const comp = new Float64Array(headDim);
  for (let qh = 0; qh < nHeads; qh++) {
    const a = attention[qh];
    const v = values[Math.floor(qh / group)];
    full.fill(0);
    comp.fill(0);
    let keptMass = 0;
    for (let j = 0; j < a.length; j++) {
      const w = a[j];
      if (w === 0) continue;
      const base = j * headDim;
      for (let c = 0; c < headDim; c++) full[c] += w * v[base + c];
      if (kept[j]) {
        keptMass += w;
        for (let c = 0; c < headDim; c++) comp[c] += w * v[base + c];
      }
    }
    for (let c = 0; c < headDim; c++) {
      const o = keptMass > 0 ? comp[c] / keptMass : 0;
      diff2 += (o - full[c]) ** 2;
      full2 += full[c] ** 2;
    }
  }
  return Math.sqrt(diff2) / (Math.sqrt(full2) + 1e-5);
}

export interface LayerErrorOptions {
  /** entries each layer keeps when its error is measured (default 64, at most half the prompt) */
  budget?: number;
  window?: number;
  /** semantic heads per layer that score (default 4) */
  topHeads?: number;
  kernel?: number;
  pooling?: PoolMode;
  /** held-out windows (default 2) */
  prompts?: number;
  /** prompt tokens P (default min(512, context / 2)) */
  promptTokens?: number;
  /** teacher-forced decode steps G (default min(32, context − P − 1)) */
  decodeTokens?: number;
  seed?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Per-layer output errors under CompressKV selection, from `semantic` head scores ([layer][queryHead]). */
export async function runLayerError(
  model: EngineModel,
  documents: readonly string[],
  semantic: readonly (readonly number[])[],
  options: LayerErrorOptions = {},
): Promise<LayerErrorCalibration> {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new RangeError('layer-error calibration needs a model with a tokenizer');
  const { nLayers, nKvHeads, headDim, contextLength } = model.forward.dims;
  const promptTokens = options.promptTokens ?? Math.min(512, Math.floor(contextLength / 2));
  const decodeTokens = options.decodeTokens ?? Math.max(1, Math.min(32, contextLength - promptTokens - 1));
  const budget = options.budget ?? Math.min(64, Math.floor(promptTokens / 2));
  const window = options.window ?? 8;
  const k = options.topHeads ?? 4;
  const kernel = options.kernel ?? 5;
  const pooling = options.pooling ?? 'avg';
  const prompts = options.prompts ?? 2;
  const seed = options.seed ?? 1;
  if (budget <= window) throw new RangeError(`layer-error budget ${budget} must exceed the window ${window}`);
  const heads = semantic.map((row) => topHeads([...row], k));
  const raw = new Float64Array(nLayers);
  /** [layer] 1 = prompt entry kept by the layer's selection */
  let masks: Uint8Array[] = [];

  const definition = recorderPolicy(
    { attention: true, queries: false, calibration: false, prefillWindow: window },
    {
      afterPrefill(cache, obs) {
        masks = [];
        for (let l = 0; l < nLayers; l++) {
          const n = cache.length(l, 0);
          const rows = obs.windowRows;
          const pooled = windowScores(obs.windowAttention![l], heads[l], rows, n - rows, kernel, pooling);
          const mask = new Uint8Array(n);
          for (const j of snapKeep(pooled, n, budget, rows)) mask[j] = 1;
          masks.push(mask);
        }
      },
      afterStep(cache, obs) {
        for (let l = 0; l < nLayers; l++) {
          const n = cache.length(l, 0);
          const kept = new Uint8Array(n).fill(1);
          kept.set(masks[l]);
          const values = Array.from({ length: nKvHeads }, (_, h) => cache.values(l, h));
          raw[l] += layerOutputError(obs.attention![l], values, kept, headDim);
        }
      },
    },
  );

  const windows = heldoutWindows(tokenizer, documents, { windows: prompts, tokens: promptTokens + decodeTokens, seed });
  let done = 0;
  for (const ids of windows) {
    const session = new Session(model, { policy: RECORDER_ID, registry: [definition], trace: { attention: false, fullSteps: 0 } });
    await session.prefill(ids.slice(0, promptTokens));
    for (let t = 0; t < decodeTokens; t++) await session.step({ token: ids[promptTokens + t] });
    options.onProgress?.(++done, windows.length);
  }
  const sum = raw.reduce((a, b) => a + b, 0);
  const normalized = Array.from(raw, (e) => (sum > 0 ? e / sum : 1 / nLayers));
  return { budget, window, topHeads: k, kernel, prompts, promptTokens, decodeTokens, seed, raw: Array.from(raw), normalized };
}
