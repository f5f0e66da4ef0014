/**
 * The manifest's dimensions against the graph, before any session of this model decodes a token.
 *
 * A manifest that says n_kv_heads 4 for a graph with 2 KV heads used to load fine and then fail at
 * the first step with onnxruntime's "internal error … OrtRun". Two checks name the field instead:
 * 1. the shapes onnxruntime-web reports for every graph input and output
 *    (`session.inputMetadata` / `outputMetadata`; exporters write concrete head counts and sizes,
 *    symbolic names for q, past and batch), against docs/model-format.md's table;
 * 2. one forward of one token over an empty cache with the manifest's shapes, whose outputs'
 *    dimensions are compared again (this catches graphs whose metadata leaves the heads symbolic).
 */
import * as ort from 'onnxruntime-web';
import { ModelError } from '../errors.ts';
import type { Architecture, Manifest } from './manifest.ts';

/** The parts of an InferenceSession the checks read (a test can wrap a session to hide its metadata). */
export type GraphSession = Pick<ort.InferenceSession, 'inputMetadata' | 'outputMetadata' | 'run'>;

type DimField = 'n_heads' | 'n_kv_heads' | 'head_dim' | 'vocab_size';
/** One dimension of the contract: the batch (1), a manifest field, or free (q, past, total). */
type Dim = 'batch' | DimField | 'free';

interface Expected {
  type: 'int64' | 'float32';
  dims: readonly Dim[];
  /** how the contract writes the shape, for messages */
  shape: string;
}

const IDS: Expected = { type: 'int64', dims: ['batch', 'free'], shape: '[1, q]' };
const KV: Expected = { type: 'float32', dims: ['batch', 'n_kv_heads', 'free', 'head_dim'], shape: '[1, n_kv_heads, T, head_dim]' };
const BIAS: Expected = { type: 'float32', dims: ['batch', 'n_heads', 'free', 'free'], shape: '[1, n_heads, q, T + q]' };
const LOGITS: Expected = { type: 'float32', dims: ['batch', 'free', 'vocab_size'], shape: '[1, q, vocab_size]' };
const QUERY: Expected = { type: 'float32', dims: ['batch', 'n_heads', 'free', 'head_dim'], shape: '[1, n_heads, q, head_dim]' };

/** What the contract says of a graph input or output name (manifest.ts lists the names). */
function expectedFor(name: string): Expected | null {
  if (name === 'input_ids' || name === 'position_ids') return IDS;
  if (name === 'logits') return LOGITS;
  if (/^(past_key|past_value|key|value)_\d+$/.test(name)) return KV;
  if (/^(attn_bias|attn)_\d+$/.test(name)) return BIAS;
  if (/^query_\d+$/.test(name)) return QUERY;
  return null;
}

/** How a message says a dimension's size: "2 heads", "8 values per head", "4096 values per token". */
function sizeWords(field: DimField, size: number): string {
  if (field === 'head_dim') return `${size} values per head`;
  if (field === 'vocab_size') return `${size} values per token`;
  return `${size} heads`;
}

export function graphFileName(manifest: Manifest): string {
  return manifest.graph.parts.length === 1 ? manifest.graph.parts[0] : 'model.onnx';
}

/** Throws ModelError at the first dimension of `dims` that contradicts the contract or the manifest. */
function checkDims(manifest: Manifest, name: string, kind: string, dims: readonly (number | string)[], expected: Expected, seenBy: string): void {
  const graphFile = graphFileName(manifest);
  const arch: Architecture = manifest.architecture;
  if (dims.length !== expected.dims.length) {
    throw new ModelError(`${graphFile}: graph ${kind} ${name} has ${dims.length} dimensions ([${dims.join(', ')}]); the format wants ${expected.dims.length} (${expected.shape})`);
  }
  expected.dims.forEach((dim, i) => {
    const size = dims[i];
    if (typeof size !== 'number' || size < 0 || dim === 'free') return; // symbolic or unknown: decided at run time
    if (dim === 'batch') {
      if (size !== 1) throw new ModelError(`${graphFile}: graph ${kind} ${name} has batch size ${size}; kvscope runs batch 1 (${expected.shape})`);
      return;
    }
    if (size !== arch[dim]) {
      throw new ModelError(`manifest.json: architecture.${dim} (${arch[dim]}) does not match the graph (${seenBy}${name} has ${sizeWords(dim, size)})`);
    }
  });
}

/** Check 1: every input's and output's reported type and shape against the manifest. */
export function checkGraphMetadata(manifest: Manifest, session: Pick<GraphSession, 'inputMetadata' | 'outputMetadata'>): void {
  const graphFile = graphFileName(manifest);
  const lists: [string, readonly ort.InferenceSession.ValueMetadata[]][] = [
    ['input', session.inputMetadata ?? []],
    ['output', session.outputMetadata ?? []],
  ];
  for (const [kind, metadata] of lists) {
    for (const value of metadata) {
      const expected = expectedFor(value.name);
      if (!expected) continue; // names were matched against the manifest already (checkSessionIO)
      if (!value.isTensor) throw new ModelError(`${graphFile}: graph ${kind} ${value.name} is not a tensor; the format wants ${expected.type} ${expected.shape}`);
      if (value.type !== expected.type) throw new ModelError(`${graphFile}: graph ${kind} ${value.name} is ${value.type}; the format wants ${expected.type} ${expected.shape}`);
      // an empty shape is onnxruntime's "not defined": the probe forward checks that value
      if (value.shape.length > 0) checkDims(manifest, value.name, kind, value.shape, expected, '');
    }
  }
}

/** onnxruntime's message on one line, at most 300 characters. */
function cut(message: string): string {
  const line = message.replace(/\s+/g, ' ').trim();
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

/**
 * Check 2: one token (bos_id at position 0) over an empty cache, every output fetched; the outputs'
 * dimensions must be those the manifest implies. A failing run is reported against the manifest's
 * dimensions, since a graph that loaded and matched the names fails a forward when they are wrong.
 */
export async function probeForward(manifest: Manifest, session: GraphSession): Promise<void> {
  const a = manifest.architecture;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(manifest.tokenizer.bos_id)]), [1, 1]),
    position_ids: new ort.Tensor('int64', new BigInt64Array(1), [1, 1]),
  };
  for (let l = 0; l < a.n_layers; l++) {
    feeds[`past_key_${l}`] = new ort.Tensor('float32', new Float32Array(0), [1, a.n_kv_heads, 0, a.head_dim]);
    feeds[`past_value_${l}`] = new ort.Tensor('float32', new Float32Array(0), [1, a.n_kv_heads, 0, a.head_dim]);
    feeds[`attn_bias_${l}`] = new ort.Tensor('float32', new Float32Array(a.n_heads), [1, a.n_heads, 1, 1]);
  }
  let outputs: ort.InferenceSession.ReturnType;
  try {
    outputs = await session.run(feeds, manifest.graph.outputs);
  } catch (error) {
    throw new ModelError(
      `manifest.json: architecture.n_heads (${a.n_heads}), n_kv_heads (${a.n_kv_heads}), head_dim (${a.head_dim}) or vocab_size (${a.vocab_size}) ` +
        `does not match the graph: a one-token forward with these shapes failed (${cut((error as Error).message)})`,
    );
  } finally {
    for (const tensor of Object.values(feeds)) tensor.dispose();
  }
  try {
    for (const name of manifest.graph.outputs) {
      const value = outputs[name];
      const expected = expectedFor(name);
      if (!expected) continue;
      if (!(value instanceof ort.Tensor) || value.type !== expected.type) {
        throw new ModelError(`${graphFileName(manifest)}: a one-token forward gave no ${expected.type} ${name}`);
      }
      checkDims(manifest, name, 'output', value.dims, expected, 'a one-token forward: ');
    }
    const logits = outputs.logits.data as Float32Array;
    if (!logits.every(Number.isFinite)) {
      throw new ModelError(`${graphFileName(manifest)}: a one-token forward gave non-finite logits (NaN or ±Infinity): the weights are broken`);
    }
  } finally {
    for (const value of Object.values(outputs)) value.dispose();
  }
}

/** Both checks, metadata first (it names the input, not only the output, that disagrees). */
export async function checkGraphDims(manifest: Manifest, session: GraphSession): Promise<void> {
  checkGraphMetadata(manifest, session);
  await probeForward(manifest, session);
}
