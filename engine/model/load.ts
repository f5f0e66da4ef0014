/**
 * Loading a model directory (docs/model-format.md): manifest (every field bounded) → every listed
 * file (size + sha256 checked) → tokenizer (checked against the manifest, a probe text
 * round-tripped) → graph parts concatenated in order → onnxruntime-web session whose I/O names,
 * shapes and one-token forward must match the manifest. A folder is untrusted input: each failure
 * is one ModelError naming the file and field, raised before anything the manifest sizes is allocated.
 *
 * This module runs in browsers (Web Worker) and Node: files come through a ModelSource. The
 * browser source (`fetchSource`) is here; the Node directory source lives in load-node.ts so that
 * no Node-only import reaches the browser bundle.
 */
import * as ort from 'onnxruntime-web';
import { CALIBRATION_FILE, readCalibration, type Calibration } from '../calibration/format.ts';
import { ModelError } from '../errors.ts';
import { MAX_CALIBRATION_BYTES, MAX_MANIFEST_BYTES } from './bounds.ts';
import { checkGraphDims } from './graph-check.ts';
import { validateManifest, type Manifest } from './manifest.ts';
import { checkModelPath } from './paths.ts';
import { sha256Hex } from './sha256.ts';
import { KvTokenizer } from './tokenizer.ts';
import { checkTokenizerJson, probeTokenizer } from './tokenizer-check.ts';
import { ForwardRunner } from '../runtime/forward.ts';

export type LoadPhase = 'download' | 'verify' | 'session';

export interface LoadProgress {
  phase: LoadPhase;
  /** bytes (download, verify) or 0/1 (session) done so far */
  loaded: number;
  /** total bytes of the file (download, verify; 0 when the server does not say) or 1 (session) */
  total: number;
  file: string;
}

/**
 * Where model files come from. `read` throws ModelError `<path>: file is missing (...)` when absent.
 * Paths are relative to the model folder (the loader passes only paths paths.ts accepts); a
 * source must not resolve one outside it. `maxBytes`: the most the loader will accept of this file;
 * a source may refuse a larger one before reading it (the loader checks the length either way).
 */
export interface ModelSource {
  /** directory or URL, for messages */
  readonly location: string;
  read(path: string, onBytes?: (loaded: number, total: number) => void, maxBytes?: number): Promise<Uint8Array>;
}

/** The error a source throws for a file past the loader's `maxBytes`. */
export function fileTooLarge(path: string, bytes: number | string, maxBytes: number): ModelError {
  return new ModelError(`${path}: file is too large (${bytes} bytes; at most ${maxBytes} expected)`);
}

export interface LoadOptions {
  onProgress?: (progress: LoadProgress) => void;
  /** wasm threads for onnxruntime-web; set before the first session is created (Node default: 1) */
  numThreads?: number;
  sessionOptions?: ort.InferenceSession.SessionOptions;
  /**
   * also read the optional calibration.json next to the manifest (docs/calibration.md); default
   * false here, true in loadModelFromDirectory (Node)
   */
  calibration?: boolean;
}

export interface LoadedModel {
  manifest: Manifest;
  session: ort.InferenceSession;
  tokenizer: KvTokenizer;
  /** runs the graph; shared by every Session (and fork) of this model */
  forward: ForwardRunner;
  /** bytes of the ONNX graph after concatenating the parts */
  graphBytes: number;
  release(): Promise<void>;
  /** calibration.json of this model (docs/calibration.md); null when absent or not usable */
  calibration?: Calibration | null;
  /** why a calibration.json that exists was not used (malformed, stale: computed for another graph) */
  calibrationError?: string;
}

/** Browser (and Node) source over HTTP: `${baseUrl}/${path}`, streaming so progress is reported. */
export function fetchSource(baseUrl: string, fetchImpl: typeof fetch = globalThis.fetch.bind(globalThis)): ModelSource {
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  return {
    location: base,
    async read(path, onBytes, maxBytes) {
      // base + path is resolved by the URL parser: "%2e%2e/" or "?" would leave the folder
      checkModelPath(path);
      const url = base + path;
      let response: Response;
      try {
        response = await fetchImpl(url);
      } catch (error) {
        throw new ModelError(`${path}: cannot fetch ${url} (${(error as Error).message})`);
      }
      if (response.status === 404) throw new ModelError(`${path}: file is missing (${url} answered 404)`);
      if (!response.ok) throw new ModelError(`${path}: cannot fetch ${url} (HTTP ${response.status})`);
      const total = Number(response.headers.get('content-length') ?? 0) || 0;
      if (maxBytes !== undefined && total > maxBytes) {
        await response.body?.cancel().catch(() => undefined);
        throw fileTooLarge(path, total, maxBytes);
      }
      if (!response.body) {
        const bytes = new Uint8Array(await response.arrayBuffer());
        onBytes?.(bytes.length, total || bytes.length);
        return bytes;
      }
      return readStream(path, response.body, total, onBytes, maxBytes);
    },
  };
}

/**
 * A file's bytes from a stream (a fetch body, a Blob's stream), reporting progress against `total`
 * and stopping with fileTooLarge as soon as more than `maxBytes` arrived.
 */
export async function readStream(
  path: string,
  stream: ReadableStream<Uint8Array>,
  total: number,
  onBytes?: (loaded: number, total: number) => void,
  maxBytes?: number,
): Promise<Uint8Array> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    if (maxBytes !== undefined && loaded > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw fileTooLarge(path, `more than ${maxBytes}`, maxBytes);
    }
    onBytes?.(loaded, total);
  }
  return concatBytes(chunks);
}

export function concatBytes(chunks: readonly Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  let size = 0;
  for (const c of chunks) size += c.length;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

/** Names present in `expected` but not `actual` and vice versa, as one readable clause or null. */
function nameDifference(actual: readonly string[], expected: readonly string[]): string | null {
  const actualSet = new Set(actual);
  const expectedSet = new Set(expected);
  const missing = expected.filter((n) => !actualSet.has(n));
  const extra = actual.filter((n) => !expectedSet.has(n));
  if (missing.length === 0 && extra.length === 0) return null;
  const parts: string[] = [];
  if (missing.length > 0) parts.push(`missing ${missing.join(', ')}`);
  if (extra.length > 0) parts.push(`extra ${extra.join(', ')}`);
  return parts.join('; ');
}

/** Fails unless the session's input/output names are exactly the manifest's lists (order free: feeds are by name). */
export function checkSessionIO(manifest: Manifest, inputNames: readonly string[], outputNames: readonly string[]): void {
  const graphFile = manifest.graph.parts.length === 1 ? manifest.graph.parts[0] : 'model.onnx';
  const inputs = nameDifference(inputNames, manifest.graph.inputs);
  if (inputs) throw new ModelError(`${graphFile}: graph inputs do not match manifest.json graph.inputs (${inputs})`);
  const outputs = nameDifference(outputNames, manifest.graph.outputs);
  if (outputs) throw new ModelError(`${graphFile}: graph outputs do not match manifest.json graph.outputs (${outputs})`);
}

/** manifest.json of `source`, bounded (MAX_MANIFEST_BYTES), parsed and validated. */
export async function readManifest(source: ModelSource): Promise<Manifest> {
  const bytes = await source.read('manifest.json', undefined, MAX_MANIFEST_BYTES);
  if (bytes.length > MAX_MANIFEST_BYTES) throw fileTooLarge('manifest.json', bytes.length, MAX_MANIFEST_BYTES);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new ModelError(`manifest.json: not valid JSON (${(error as Error).message})`);
  }
  return validateManifest(json);
}

/** Checks a listed file's byte size and sha256 (`sized` runs between the two: progress). */
async function verifyFile(entry: Manifest['files'][number], bytes: Uint8Array, sized?: () => void): Promise<void> {
  if (bytes.length !== entry.bytes) {
    throw new ModelError(`${entry.path}: size mismatch (expected ${entry.bytes} bytes, got ${bytes.length})`);
  }
  sized?.();
  const digest = await sha256Hex(bytes);
  if (digest !== entry.sha256) {
    throw new ModelError(`${entry.path}: sha256 mismatch (expected ${entry.sha256}, got ${digest})`);
  }
}

/** The tokenizer from its tokenizer.json bytes, checked against the manifest (tokenizer-check.ts). */
function parseTokenizer(manifest: Manifest, bytes: Uint8Array): KvTokenizer {
  let tokenizerJson: unknown;
  try {
    tokenizerJson = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new ModelError(`${manifest.tokenizer.file}: not valid JSON (${(error as Error).message})`);
  }
  checkTokenizerJson(tokenizerJson, manifest);
  const tokenizer = new KvTokenizer(tokenizerJson, manifest.tokenizer);
  probeTokenizer(tokenizer, manifest);
  return tokenizer;
}

/**
 * A model's manifest and tokenizer without its graph (token indexes need only these), the
 * tokenizer checked against the manifest like loadModel checks it; `sha256` as listed.
 */
export async function loadTokenizer(source: ModelSource): Promise<{ manifest: Manifest; tokenizer: KvTokenizer; sha256: string }> {
  const manifest = await readManifest(source);
  const entry = manifest.files.find((f) => f.path === manifest.tokenizer.file);
  if (!entry) throw new ModelError(`${manifest.tokenizer.file}: file is missing (not listed in manifest.json files)`);
  const bytes = await source.read(entry.path, undefined, entry.bytes);
  await verifyFile(entry, bytes);
  return { manifest, tokenizer: parseTokenizer(manifest, bytes), sha256: entry.sha256 };
}

/** Reads every file the manifest lists, checking byte size and sha256 of each. */
async function readVerifiedFiles(
  source: ModelSource,
  manifest: Manifest,
  onProgress: ((p: LoadProgress) => void) | undefined,
): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const entry of manifest.files) {
    const bytes = await source.read(
      entry.path,
      (loaded, total) => onProgress?.({ phase: 'download', loaded, total: total || entry.bytes, file: entry.path }),
      entry.bytes,
    );
    onProgress?.({ phase: 'download', loaded: bytes.length, total: entry.bytes, file: entry.path });
    await verifyFile(entry, bytes, () => onProgress?.({ phase: 'verify', loaded: 0, total: entry.bytes, file: entry.path }));
    onProgress?.({ phase: 'verify', loaded: entry.bytes, total: entry.bytes, file: entry.path });
    files.set(entry.path, bytes);
  }
  return files;
}

/**
 * Loads and checks a model. Throws ModelError naming the file and the problem: missing file,
 * size or sha256 mismatch, invalid or out-of-bounds manifest, a tokenizer that does not fit it,
 * graph I/O names or dimensions that differ from the manifest.
 */
export async function loadModel(source: ModelSource, options: LoadOptions = {}): Promise<LoadedModel> {
  const { onProgress } = options;
  if (options.numThreads !== undefined) ort.env.wasm.numThreads = options.numThreads;

  const manifest = await readManifest(source);
  const files = await readVerifiedFiles(source, manifest, onProgress);
  const take = (path: string): Uint8Array => {
    const bytes = files.get(path);
    if (!bytes) throw new ModelError(`${path}: file is missing (not listed in manifest.json files)`);
    return bytes;
  };

  const tokenizer = parseTokenizer(manifest, take(manifest.tokenizer.file));

  const graph = concatBytes(manifest.graph.parts.map(take));
  const graphFile = manifest.graph.parts.length === 1 ? manifest.graph.parts[0] : manifest.graph.parts.join(' + ');
  onProgress?.({ phase: 'session', loaded: 0, total: 1, file: graphFile });
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(graph, {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
      ...options.sessionOptions,
    });
  } catch (error) {
    throw new ModelError(`${graphFile}: onnxruntime cannot load the graph (${(error as Error).message})`);
  }
  try {
    checkSessionIO(manifest, session.inputNames, session.outputNames);
    await checkGraphDims(manifest, session);
  } catch (error) {
    await session.release();
    throw error;
  }
  onProgress?.({ phase: 'session', loaded: 1, total: 1, file: graphFile });

  const loaded: LoadedModel = {
    manifest,
    session,
    tokenizer,
    forward: new ForwardRunner(session, manifest),
    graphBytes: graph.length,
    release: () => session.release(),
  };
  if (options.calibration) Object.assign(loaded, await readOptionalCalibration(source, manifest));
  return loaded;
}

/**
 * calibration.json is optional and not listed in the manifest: a missing file is no calibration;
 * a malformed or stale one never fails the load — its problem is kept for the policy that needs it.
 */
async function readOptionalCalibration(source: ModelSource, manifest: Manifest): Promise<{ calibration: Calibration | null; calibrationError?: string }> {
  let bytes: Uint8Array;
  try {
    bytes = await source.read(CALIBRATION_FILE, undefined, MAX_CALIBRATION_BYTES);
    if (bytes.length > MAX_CALIBRATION_BYTES) throw fileTooLarge(CALIBRATION_FILE, bytes.length, MAX_CALIBRATION_BYTES);
  } catch (error) {
    const message = (error as Error).message;
    if (error instanceof ModelError && message.includes('file is missing')) return { calibration: null };
    return { calibration: null, calibrationError: message };
  }
  try {
    return { calibration: readCalibration(new TextDecoder().decode(bytes), manifest) };
  } catch (error) {
    return { calibration: null, calibrationError: (error as Error).message };
  }
}
