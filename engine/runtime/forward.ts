/**
 * One forward step through the explorer graph (docs/model-format.md): typed arrays in, typed
 * arrays out. The runner knows nothing about policies; it checks shapes, builds ort tensors
 * (zero-copy views of the caller's arrays), runs the session and hands back the output data.
 *
 * Runs are serialised per runner: forked sessions share one InferenceSession, and onnxruntime-web
 * does not allow overlapping runs on a session.
 */
import * as ort from 'onnxruntime-web';
import type { Manifest } from '../model/manifest.ts';

export interface ModelDims {
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  /** query heads per KV head; query head h reads KV head floor(h / groupSize) */
  groupSize: number;
  vocabSize: number;
  contextLength: number;
}

export function modelDims(manifest: Manifest): ModelDims {
  const a = manifest.architecture;
  return {
    nLayers: a.n_layers,
    nHeads: a.n_heads,
    nKvHeads: a.n_kv_heads,
    headDim: a.head_dim,
    groupSize: a.n_heads / a.n_kv_heads,
    vocabSize: a.vocab_size,
    contextLength: a.context_length,
  };
}

/** What the graph sees of one layer's cache: T slots per KV head plus the additive bias. */
export interface LayerFeed {
  /** number of cache slots T_l fed for this layer (may be 0) */
  length: number;
  /** [Hkv, T_l, D] post-RoPE keys */
  keys: Float32Array;
  /** [Hkv, T_l, D] */
  values: Float32Array;
  /** [H, q, T_l + q] additive attention bias */
  bias: Float32Array;
}

export interface ForwardRequest {
  inputIds: ArrayLike<number>;
  positionIds: ArrayLike<number>;
  layers: readonly LayerFeed[];
  /** fetch attn_l (default true) */
  attention?: boolean;
  /** fetch query_l (default true) */
  queries?: boolean;
}

export interface ForwardResult {
  /** number of new tokens */
  q: number;
  /** T_l per layer, as fed */
  pastLengths: number[];
  /** [q, V] */
  logits: Float32Array;
  /** per layer [Hkv, q, D], post-RoPE */
  keys: Float32Array[];
  /** per layer [Hkv, q, D] */
  values: Float32Array[];
  /** per layer [H, q, T_l + q], or null when not fetched */
  attention: Float32Array[] | null;
  /** per layer [H, q, D], post-RoPE, or null when not fetched */
  queries: Float32Array[] | null;
}

function floatData(value: ort.OnnxValue | undefined, name: string, expectedLength: number): Float32Array {
  if (!value || !(value instanceof ort.Tensor) || value.type !== 'float32') {
    throw new Error(`graph output ${name} is missing or not float32`);
  }
  const data = value.data as Float32Array;
  if (data.length !== expectedLength) {
    throw new Error(`graph output ${name} has ${data.length} values, expected ${expectedLength} (dims ${value.dims.join('×')})`);
  }
  return data;
}

/** Anything that can run the explorer graph's forward (the ort runner, or a test double). */
export interface Forward {
  readonly dims: ModelDims;
  run(request: ForwardRequest): Promise<ForwardResult>;
}

export class ForwardRunner implements Forward {
  readonly dims: ModelDims;
  private readonly session: ort.InferenceSession;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(session: ort.InferenceSession, manifest: Manifest) {
    this.session = session;
    this.dims = modelDims(manifest);
  }

  /** Runs one forward; calls are queued so that they never overlap on the shared session. */
  run(request: ForwardRequest): Promise<ForwardResult> {
    const result = this.queue.then(() => this.runNow(request));
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async runNow(request: ForwardRequest): Promise<ForwardResult> {
    const { nLayers, nHeads, nKvHeads, headDim, vocabSize } = this.dims;
    const q = request.inputIds.length;
    if (q < 1 || request.positionIds.length !== q) {
      throw new Error(`forward needs q ≥ 1 input ids and as many position ids (got ${q} and ${request.positionIds.length})`);
    }
    if (request.layers.length !== nLayers) throw new Error(`forward needs ${nLayers} layer feeds, got ${request.layers.length}`);

    const ids = new BigInt64Array(q);
    const positions = new BigInt64Array(q);
    for (let i = 0; i < q; i++) {
      ids[i] = BigInt(request.inputIds[i]);
      positions[i] = BigInt(request.positionIds[i]);
    }
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', ids, [1, q]),
      position_ids: new ort.Tensor('int64', positions, [1, q]),
    };
    const pastLengths: number[] = [];
    for (let l = 0; l < nLayers; l++) {
      const layer = request.layers[l];
      const t = layer.length;
      const kvLength = nKvHeads * t * headDim;
      const biasLength = nHeads * q * (t + q);
      if (layer.keys.length !== kvLength || layer.values.length !== kvLength || layer.bias.length !== biasLength) {
        throw new Error(
          `layer ${l} feed has wrong sizes (keys ${layer.keys.length}, values ${layer.values.length}, bias ${layer.bias.length}; ` +
            `expected ${kvLength}, ${kvLength}, ${biasLength} for T=${t}, q=${q})`,
        );
      }
      feeds[`past_key_${l}`] = new ort.Tensor('float32', layer.keys, [1, nKvHeads, t, headDim]);
      feeds[`past_value_${l}`] = new ort.Tensor('float32', layer.values, [1, nKvHeads, t, headDim]);
      feeds[`attn_bias_${l}`] = new ort.Tensor('float32', layer.bias, [1, nHeads, q, t + q]);
      pastLengths.push(t);
    }

    const wantAttention = request.attention ?? true;
    const wantQueries = request.queries ?? true;
    const fetches = ['logits'];
    for (let l = 0; l < nLayers; l++) {
      fetches.push(`key_${l}`, `value_${l}`);
      if (wantAttention) fetches.push(`attn_${l}`);
      if (wantQueries) fetches.push(`query_${l}`);
    }

    let outputs: ort.InferenceSession.ReturnType;
    try {
      outputs = await this.session.run(feeds, fetches);
    } finally {
      for (const tensor of Object.values(feeds)) tensor.dispose();
    }

    // Output data are plain CPU typed arrays (wasm backend): keep them, drop the tensor wrappers.
    const result: ForwardResult = {
      q,
      pastLengths,
      logits: floatData(outputs.logits, 'logits', q * vocabSize),
      keys: [],
      values: [],
      attention: wantAttention ? [] : null,
      queries: wantQueries ? [] : null,
    };
    for (let l = 0; l < nLayers; l++) {
      result.keys.push(floatData(outputs[`key_${l}`], `key_${l}`, nKvHeads * q * headDim));
      result.values.push(floatData(outputs[`value_${l}`], `value_${l}`, nKvHeads * q * headDim));
      result.attention?.push(floatData(outputs[`attn_${l}`], `attn_${l}`, nHeads * q * (pastLengths[l] + q)));
      result.queries?.push(floatData(outputs[`query_${l}`], `query_${l}`, nHeads * q * headDim));
    }
    for (const value of Object.values(outputs)) value.dispose();
    return result;
  }
}
