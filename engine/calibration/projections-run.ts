/**
 * Computing the `projections` section (projections.ts) with the engine itself: `prompts` seeded
 * held-out windows of `tokens` tokens (engine/metrics/heldout.ts, as the layer-error section)
 * are prefilled with the full cache through a normal Session (the recorder policy, recorder.ts);
 * after each prefill every cache entry of every layer × KV head is one row:
 *
 *  - `keys[l][h]`: the cached key, post-RoPE at its position (MatryoshkaKV's PCA of the keys the
 *    attention uses; the policy card: "PCA of calibration keys (post-RoPE)");
 *  - `values[l][h]`: the value;
 *  - `joint` (Yu et al., 2024, SVD-a on the caches of a group of KV heads — here all KV heads of
 *    a layer): the heads' vectors of one token concatenated (kv 0 first): `keys` pre-RoPE (each
 *    key rotated back from its position with the model's Rope, so the basis sees the projection
 *    W_k x the paper's fused transformation acts on), `keysPost` as cached, `values`.
 *
 * Positions run 0 … tokens − 1 in every window, so post-RoPE statistics cover the rotations a
 * full context produces. Only the mean and covariance are accumulated (float64); the bases come
 * from a Jacobi eigendecomposition (engine/quant/pca.ts). Deterministic for a seed.
 */
import { heldoutWindows } from '../metrics/heldout.ts';
import { Rope } from '../model/rope.ts';
import { MomentAccumulator, pcaOf } from '../quant/pca.ts';
import { Session, type EngineModel } from '../session.ts';
import { basisToJson, type ProjectionCalibration } from './projections.ts';
import { RECORDER_ID, recorderPolicy } from './recorder.ts';

export interface ProjectionOptions {
  /** held-out windows (default 2) */
  prompts?: number;
  /** tokens per window (default the model's context) */
  tokens?: number;
  seed?: number;
  /** joint bases are computed when nKvHeads · headDim ≤ this (default 256; Jacobi is O(width³)) */
  jointMaxWidth?: number;
  onProgress?: (done: number, total: number) => void;
}

export async function runProjections(model: EngineModel, documents: readonly string[], options: ProjectionOptions = {}): Promise<ProjectionCalibration> {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new RangeError('projection calibration needs a model with a tokenizer');
  const { nLayers, nKvHeads, headDim, contextLength } = model.forward.dims;
  const prompts = options.prompts ?? 2;
  const tokens = Math.min(options.tokens ?? contextLength, contextLength);
  const seed = options.seed ?? 1;
  const width = nKvHeads * headDim;
  const joint = width <= (options.jointMaxWidth ?? 256);
  const rope = new Rope(model.manifest.rope, headDim);
  const grid = () => Array.from({ length: nLayers }, () => Array.from({ length: nKvHeads }, () => new MomentAccumulator(headDim)));
  const keys = grid();
  const values = grid();
  const layers = () => Array.from({ length: nLayers }, () => new MomentAccumulator(width));
  const jointKeys = layers();
  const jointKeysPost = layers();
  const jointValues = layers();
  let rows = 0;

  const definition = recorderPolicy(
    { attention: false, queries: false, calibration: false },
    {
      afterPrefill(cache) {
        const pre = new Float32Array(width);
        const post = new Float32Array(width);
        const value = new Float32Array(width);
        for (let l = 0; l < nLayers; l++) {
          const n = cache.length(l, 0);
          for (let h = 0; h < nKvHeads; h++) {
            const k = cache.keys(l, h);
            const v = cache.values(l, h);
            for (let i = 0; i < n; i++) {
              keys[l][h].add(k, i * headDim);
              values[l][h].add(v, i * headDim);
            }
          }
          if (!joint) continue;
          // full cache: every head holds the same tokens in the same order, at the same positions
          const heads = Array.from({ length: nKvHeads }, (_, h) => ({ k: cache.keys(l, h), v: cache.values(l, h), pos: cache.positions(l, h) }));
          for (let i = 0; i < n; i++) {
            heads.forEach(({ k, v, pos }, h) => {
              const at = i * headDim;
              post.set(k.subarray(at, at + headDim), h * headDim);
              value.set(v.subarray(at, at + headDim), h * headDim);
              pre.set(k.subarray(at, at + headDim), h * headDim);
              rope.rotate(pre, -pos[i], h * headDim);
            });
            jointKeys[l].add(pre);
            jointKeysPost[l].add(post);
            jointValues[l].add(value);
          }
        }
        rows += cache.length(0, 0);
      },
    },
  );

  const windows = heldoutWindows(tokenizer, documents, { windows: prompts, tokens, seed });
  let done = 0;
  for (const ids of windows) {
    const session = new Session(model, { policy: RECORDER_ID, registry: [definition], trace: { attention: false, fullSteps: 0 } });
    await session.prefill(ids);
    options.onProgress?.(++done, windows.length);
  }
  const fit = (m: MomentAccumulator) => basisToJson(pcaOf(m));
  const section: ProjectionCalibration = {
    prompts,
    tokens,
    seed,
    rows,
    headDim,
    keys: keys.map((row) => row.map(fit)),
    values: values.map((row) => row.map(fit)),
  };
  if (joint) section.joint = { keys: jointKeys.map(fit), keysPost: jointKeysPost.map(fit), values: jointValues.map(fit) };
  return section;
}
