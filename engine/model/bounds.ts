/**
 * What kvscope accepts from a model folder, before it allocates anything a manifest asks for.
 *
 * An uploaded folder is untrusted input: `n_layers: 1e9` once made the loader build 3·10⁹ graph
 * input names, `n_heads: 1e6` a bias of 10⁶ rows per token. Each number here is far above what a
 * model that runs in a browser tab needs and far below what would exhaust one
 * (docs/model-format.md "Untrusted folders" lists them).
 */

/** Inclusive integer ranges of the architecture fields. */
export const ARCHITECTURE_LIMITS = {
  n_layers: { min: 1, max: 256 },
  n_heads: { min: 1, max: 256 },
  n_kv_heads: { min: 1, max: 256 },
  head_dim: { min: 1, max: 1024 },
  hidden_size: { min: 1, max: 65_536 },
  intermediate_size: { min: 1, max: 262_144 },
  vocab_size: { min: 1, max: 1_048_576 },
  // the explorer's per-step attention rows and a prefill's bias [H, q, T + q] grow with the
  // context; 32k covers the small models that run in onnxruntime-web's wasm heap
  context_length: { min: 1, max: 32_768 },
  parameters: { min: 0, max: 1e12 },
  macs_per_token: { min: 0, max: 1e13 },
} as const;

/** rms_norm_eps lies in (0, RMS_NORM_EPS_MAX). */
export const RMS_NORM_EPS_MAX = 1;
/** rope.theta lies in (0, ROPE_THETA_MAX] (Llama 3 uses 5·10⁵, long-context models 10⁶–10⁷). */
export const ROPE_THETA_MAX = 1e9;
export const OPSET_LIMITS = { min: 1, max: 1000 } as const;

/**
 * The KV cache a full context needs (n_layers · 2 · n_kv_heads · head_dim · context · 4 bytes,
 * float32) may not pass this: the engine keeps it in JS typed arrays next to a wasm heap of at most
 * 4 GiB, and a tab that asks for more is killed rather than told.
 */
export const MAX_KV_CACHE_BYTES = 1024 ** 3;

export const MAX_MANIFEST_BYTES = 1024 ** 2;
export const MAX_TOKENIZER_BYTES = 64 * 1024 ** 2;
/** onnxruntime reads one protobuf, which cannot exceed 2 GiB: the graph parts together stay under it. */
export const MAX_GRAPH_BYTES = 2 * 1024 ** 3 - 1;
/** Every listed file together (graph, tokenizer, reference logits, …). */
export const MAX_MODEL_FILES_BYTES = 4 * 1024 ** 3;
export const MAX_FILES = 1024;
/** Manifest strings shown in the UI (name, family, provenance is free-form but bounded in depth). */
export const MAX_NAME_LENGTH = 256;
export const MAX_PROVENANCE_DEPTH = 32;
/** A calibration.json next to the manifest (not listed in it) is read up to this size. */
export const MAX_CALIBRATION_BYTES = 256 * 1024 ** 2;

/** Bytes of float32 KV cache for every position of the context. */
export function kvCacheBytes(a: { n_layers: number; n_kv_heads: number; head_dim: number; context_length: number }): number {
  return a.n_layers * 2 * a.n_kv_heads * a.head_dim * a.context_length * 4;
}

/** 1536 → "1.5 KiB", for messages. */
export function formatBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} bytes` : `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}
