/**
 * manifest.json, format_version 1 (docs/model-format.md is the contract; this file mirrors it).
 *
 * `validateManifest` turns untrusted JSON into a typed Manifest or throws a ModelError whose
 * message names the exact field, e.g. `manifest.json: architecture.n_kv_heads is missing`.
 */
import { ModelError } from '../errors.ts';
import { isObject, type JsonObject } from '../json.ts';
import {
  ARCHITECTURE_LIMITS,
  MAX_FILES,
  MAX_GRAPH_BYTES,
  MAX_KV_CACHE_BYTES,
  MAX_MODEL_FILES_BYTES,
  MAX_NAME_LENGTH,
  MAX_PROVENANCE_DEPTH,
  MAX_TOKENIZER_BYTES,
  OPSET_LIMITS,
  RMS_NORM_EPS_MAX,
  ROPE_THETA_MAX,
  formatBytes,
  kvCacheBytes,
} from './bounds.ts';
import { checkModelId, checkModelPath, quote } from './paths.ts';
import { sha256Hex } from './sha256.ts';

export const MANIFEST_FORMAT = 'kvscope-explorer-graph';
export const MANIFEST_FORMAT_VERSION = 1;

export interface Architecture {
  family: string;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  head_dim: number;
  hidden_size: number;
  intermediate_size: number;
  vocab_size: number;
  context_length: number;
  rms_norm_eps: number;
  tie_word_embeddings: boolean;
  parameters?: number;
  /** multiply-accumulates per token, as the exporter measured them (informational) */
  macs_per_token?: number;
}

export interface RopeConfig {
  theta: number;
  /** number of rotated channels (≤ head_dim); channel i pairs with i + dim/2 */
  dim: number;
  style: 'half';
  scaling: null;
}

export interface TokenizerConfig {
  file: string;
  bos_id: number;
  eos_id: number;
  pad_id: number | null;
  add_bos: boolean;
}

export interface GraphConfig {
  parts: string[];
  opset: number;
  inputs: string[];
  outputs: string[];
}

export interface ManifestFile {
  path: string;
  sha256: string;
  bytes: number;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  format_version: typeof MANIFEST_FORMAT_VERSION;
  id: string;
  name: string;
  role: 'target' | 'draft';
  architecture: Architecture;
  rope: RopeConfig;
  tokenizer: TokenizerConfig;
  graph: GraphConfig;
  files: ManifestFile[];
  draft?: string;
  /** reference logits file (test fixtures), listed in files */
  reference?: string;
  provenance?: Record<string, unknown>;
}

/** The sha256 the manifest lists for its tokenizer.json (what token indexes and draft models are matched by). */
export function tokenizerSha256(manifest: Pick<Manifest, 'tokenizer' | 'files'>): string | undefined {
  return manifest.files.find((f) => f.path === manifest.tokenizer.file)?.sha256;
}

/**
 * The model's own sha256, naming it in experiment links and notebooks (src/lib/links/): of its
 * file list as `sha256sum` writes it (one "<sha256>  <path>" line per listed file, sorted by path)
 * followed by the manifest as parsed (JSON), so it changes when any file or any manifest field
 * (context length, special tokens, the draft it names) does.
 */
export async function modelSha256(manifest: Manifest): Promise<string> {
  const lines = [...manifest.files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)).map((f) => `${f.sha256}  ${f.path}\n`);
  return sha256Hex(new TextEncoder().encode(`${lines.join('')}${JSON.stringify(manifest)}\n`));
}

/** Graph inputs in manifest order: ids, positions, then per layer past_key, past_value, attn_bias. */
export function expectedGraphInputs(nLayers: number): string[] {
  const names = ['input_ids', 'position_ids'];
  for (let l = 0; l < nLayers; l++) names.push(`past_key_${l}`, `past_value_${l}`, `attn_bias_${l}`);
  return names;
}

/** Graph outputs in manifest order: logits, then per layer key, value, attn, query. */
export function expectedGraphOutputs(nLayers: number): string[] {
  const names = ['logits'];
  for (let l = 0; l < nLayers; l++) names.push(`key_${l}`, `value_${l}`, `attn_${l}`, `query_${l}`);
  return names;
}

// ---------------------------------------------------------------------------------------------
// Validation helpers: each reads one field at a dotted path and throws with that path.

function fail(path: string, problem: string): never {
  throw new ModelError(`manifest.json: ${path} ${problem}`);
}

/** A value as a message shows it; long strings are cut (an uploaded manifest may hold megabytes). */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return quote(value);
  if (typeof value === 'object') return 'an object';
  return String(value);
}

function field(obj: JsonObject, key: string, path: string): unknown {
  if (!Object.hasOwn(obj, key) || obj[key] === undefined) fail(path, 'is missing');
  return obj[key];
}

/** An optional field's value, or undefined when absent or null. */
function optional(obj: JsonObject, key: string): unknown {
  return Object.hasOwn(obj, key) && obj[key] !== null ? obj[key] : undefined;
}

function objectAt(obj: JsonObject, key: string, path: string): JsonObject {
  const value = field(obj, key, path);
  if (!isObject(value)) fail(path, `must be an object, got ${describeValue(value)}`);
  return value;
}

function stringAt(obj: JsonObject, key: string, path: string, maxLength = MAX_NAME_LENGTH): string {
  const value = field(obj, key, path);
  if (typeof value !== 'string' || value.length === 0 || value.length > maxLength) {
    fail(path, `must be a non-empty string of at most ${maxLength} characters, got ${describeValue(value)}`);
  }
  return value;
}

function intAt(obj: JsonObject, key: string, path: string, range: { min: number; max: number }): number {
  const value = field(obj, key, path);
  if (typeof value !== 'number' || !Number.isInteger(value) || value < range.min || value > range.max) {
    fail(path, `must be an integer from ${range.min} to ${range.max}, got ${describeValue(value)}`);
  }
  return value;
}

/** A finite number in (0, max) or (0, max] (`inclusive`). */
function positiveNumberAt(obj: JsonObject, key: string, path: string, max: number, inclusive: boolean): number {
  const value = field(obj, key, path);
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > max || (!inclusive && value === max)) {
    fail(path, `must be a number above 0 and ${inclusive ? 'at most' : 'below'} ${max}, got ${describeValue(value)}`);
  }
  return value;
}

function boolAt(obj: JsonObject, key: string, path: string): boolean {
  const value = field(obj, key, path);
  if (typeof value !== 'boolean') fail(path, `must be true or false, got ${describeValue(value)}`);
  return value;
}

function stringListAt(obj: JsonObject, key: string, path: string, maxItems: number): string[] {
  const value = field(obj, key, path);
  if (!Array.isArray(value) || value.length === 0 || value.length > maxItems) {
    fail(path, `must be a non-empty array of at most ${maxItems} strings, got ${Array.isArray(value) ? `${value.length} items` : describeValue(value)}`);
  }
  value.forEach((item, i) => {
    if (typeof item !== 'string' || item.length === 0 || item.length > MAX_NAME_LENGTH) {
      fail(`${path}[${i}]`, `must be a non-empty string of at most ${MAX_NAME_LENGTH} characters, got ${describeValue(item)}`);
    }
  });
  return value as string[];
}

/**
 * File paths are relative to the model directory and must stay inside it (paths.ts says what
 * that takes): a manifest from an uploaded model must not make the Node loader read /etc/passwd
 * or the browser fetch elsewhere.
 */
function checkRelativePath(path: string, where: string): void {
  checkModelPath(path, `manifest.json: ${where}`);
}

/** Depth of nested objects/arrays, counted only up to limit + 1 (so a hostile nesting costs nothing). */
function depthExceeds(value: unknown, limit: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (limit === 0) return true;
  const children = Array.isArray(value) ? value : Object.values(value);
  return children.some((child) => depthExceeds(child, limit - 1));
}

/** Compares a listed I/O name list with the one the contract requires, naming the first problem. */
function checkNameList(actual: string[], expected: string[], path: string): void {
  const actualSet = new Set(actual);
  const expectedSet = new Set(expected);
  const missing = expected.filter((name) => !actualSet.has(name));
  if (missing.length > 0) fail(path, `must list ${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ` (and ${missing.length - 4} more)` : ''}`);
  const extra = actual.filter((name) => !expectedSet.has(name));
  if (extra.length > 0) fail(path, `lists unexpected name(s) ${extra.slice(0, 4).join(', ')}`);
  if (actual.length !== expected.length) fail(path, 'lists a name twice');
  const firstOutOfOrder = expected.findIndex((name, i) => actual[i] !== name);
  if (firstOutOfOrder >= 0) {
    fail(path, `must be in contract order: position ${firstOutOfOrder} is ${actual[firstOutOfOrder]}, expected ${expected[firstOutOfOrder]}`);
  }
}

// ---------------------------------------------------------------------------------------------

function validateArchitecture(root: JsonObject): Architecture {
  const a = objectAt(root, 'architecture', 'architecture');
  const p = (key: string) => `architecture.${key}`;
  const int = (key: keyof typeof ARCHITECTURE_LIMITS) => intAt(a, key, p(key), ARCHITECTURE_LIMITS[key]);
  const arch: Architecture = {
    family: stringAt(a, 'family', p('family'), 64),
    n_layers: int('n_layers'),
    n_heads: int('n_heads'),
    n_kv_heads: int('n_kv_heads'),
    head_dim: int('head_dim'),
    hidden_size: int('hidden_size'),
    intermediate_size: int('intermediate_size'),
    vocab_size: int('vocab_size'),
    context_length: int('context_length'),
    rms_norm_eps: positiveNumberAt(a, 'rms_norm_eps', p('rms_norm_eps'), RMS_NORM_EPS_MAX, false),
    tie_word_embeddings: boolAt(a, 'tie_word_embeddings', p('tie_word_embeddings')),
  };
  if (optional(a, 'parameters') !== undefined) arch.parameters = int('parameters');
  if (optional(a, 'macs_per_token') !== undefined) arch.macs_per_token = int('macs_per_token');
  if (arch.n_heads % arch.n_kv_heads !== 0) {
    fail(p('n_kv_heads'), `(${arch.n_kv_heads}) must divide n_heads (${arch.n_heads})`);
  }
  const kv = kvCacheBytes(arch);
  if (kv > MAX_KV_CACHE_BYTES) {
    fail(
      p('context_length'),
      `(${arch.context_length}) needs ${formatBytes(kv)} of KV cache (n_layers ${arch.n_layers} · 2 · n_kv_heads ${arch.n_kv_heads} · ` +
        `head_dim ${arch.head_dim} · ${arch.context_length} positions · 4 bytes), more than the ${formatBytes(MAX_KV_CACHE_BYTES)} kvscope allows`,
    );
  }
  return arch;
}

function validateRope(root: JsonObject, arch: Architecture): RopeConfig {
  const r = objectAt(root, 'rope', 'rope');
  const theta = positiveNumberAt(r, 'theta', 'rope.theta', ROPE_THETA_MAX, true);
  const dim = intAt(r, 'dim', 'rope.dim', { min: 2, max: ARCHITECTURE_LIMITS.head_dim.max });
  if (dim % 2 !== 0) fail('rope.dim', `must be even, got ${dim}`);
  if (dim > arch.head_dim) fail('rope.dim', `(${dim}) must not exceed architecture.head_dim (${arch.head_dim})`);
  const style = field(r, 'style', 'rope.style');
  if (style !== 'half') fail('rope.style', `must be "half" (rotate-half RoPE), got ${describeValue(style)}`);
  if (optional(r, 'scaling') !== undefined) {
    fail('rope.scaling', `must be null (RoPE scaling is not supported yet), got ${describeValue(r.scaling)}`);
  }
  return { theta, dim, style: 'half', scaling: null };
}

function validateTokenizer(root: JsonObject, arch: Architecture): TokenizerConfig {
  const t = objectAt(root, 'tokenizer', 'tokenizer');
  const file = stringAt(t, 'file', 'tokenizer.file');
  checkRelativePath(file, 'tokenizer.file');
  const tokenId = (key: string): number => {
    const id = intAt(t, key, `tokenizer.${key}`, { min: 0, max: ARCHITECTURE_LIMITS.vocab_size.max });
    if (id >= arch.vocab_size) fail(`tokenizer.${key}`, `(${id}) must be < architecture.vocab_size (${arch.vocab_size})`);
    return id;
  };
  const bos_id = tokenId('bos_id');
  const eos_id = tokenId('eos_id');
  const pad_id = optional(t, 'pad_id') !== undefined ? tokenId('pad_id') : null;
  const add_bos = boolAt(t, 'add_bos', 'tokenizer.add_bos');
  return { file, bos_id, eos_id, pad_id, add_bos };
}

function validateGraph(root: JsonObject, arch: Architecture): GraphConfig {
  const g = objectAt(root, 'graph', 'graph');
  const parts = stringListAt(g, 'parts', 'graph.parts', MAX_FILES);
  parts.forEach((part, i) => checkRelativePath(part, `graph.parts[${i}]`));
  if (new Set(parts).size !== parts.length) fail('graph.parts', 'lists a part twice');
  const opset = intAt(g, 'opset', 'graph.opset', OPSET_LIMITS);
  // n_layers is bounded by now, so the expected lists are small whatever the manifest says
  const expectedInputs = expectedGraphInputs(arch.n_layers);
  const inputs = stringListAt(g, 'inputs', 'graph.inputs', expectedInputs.length + 16);
  checkNameList(inputs, expectedInputs, 'graph.inputs');
  const expectedOutputs = expectedGraphOutputs(arch.n_layers);
  const outputs = stringListAt(g, 'outputs', 'graph.outputs', expectedOutputs.length + 16);
  checkNameList(outputs, expectedOutputs, 'graph.outputs');
  return { parts, opset, inputs, outputs };
}

function validateFiles(root: JsonObject): ManifestFile[] {
  const value = field(root, 'files', 'files');
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_FILES) {
    fail('files', `must be a non-empty array of at most ${MAX_FILES} entries, got ${Array.isArray(value) ? `${value.length} entries` : describeValue(value)}`);
  }
  const seen = new Set<string>();
  return value.map((item, i): ManifestFile => {
    const where = `files[${i}]`;
    if (!isObject(item)) fail(where, `must be an object, got ${describeValue(item)}`);
    const path = stringAt(item, 'path', `${where}.path`, 1024);
    checkRelativePath(path, `${where}.path`);
    if (seen.has(path)) fail(`${where}.path`, `lists ${path} a second time`);
    seen.add(path);
    const sha256 = stringAt(item, 'sha256', `${where}.sha256`, 64).toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(sha256)) fail(`${where}.sha256`, `must be 64 hex digits, got ${describeValue(item.sha256)}`);
    const bytes = intAt(item, 'bytes', `${where}.bytes`, { min: 0, max: MAX_MODEL_FILES_BYTES });
    return { path, sha256, bytes };
  });
}

/** The listed files must hold the graph parts and the tokenizer, within the size caps. */
function checkFileSizes(files: ManifestFile[], graph: GraphConfig, tokenizer: TokenizerConfig): void {
  const bytesOf = new Map(files.map((f) => [f.path, f.bytes]));
  for (const needed of [...graph.parts, tokenizer.file]) {
    if (!bytesOf.has(needed)) fail('files', `must list ${needed} (with its sha256 and bytes)`);
  }
  const graphBytes = graph.parts.reduce((sum, part) => sum + (bytesOf.get(part) ?? 0), 0);
  if (graphBytes > MAX_GRAPH_BYTES) {
    fail('graph.parts', `add up to ${formatBytes(graphBytes)}; onnxruntime reads at most ${formatBytes(MAX_GRAPH_BYTES + 1)} of graph`);
  }
  const tokenizerBytes = bytesOf.get(tokenizer.file) ?? 0;
  if (tokenizerBytes > MAX_TOKENIZER_BYTES) {
    fail('tokenizer.file', `(${tokenizer.file}) is listed with ${formatBytes(tokenizerBytes)}; at most ${formatBytes(MAX_TOKENIZER_BYTES)} is read`);
  }
  const total = files.reduce((sum, f) => sum + f.bytes, 0);
  if (total > MAX_MODEL_FILES_BYTES) fail('files', `add up to ${formatBytes(total)}; a model may hold at most ${formatBytes(MAX_MODEL_FILES_BYTES)}`);
}

/** Parses and checks a manifest.json value; throws ModelError naming the first problem found. */
export function validateManifest(json: unknown): Manifest {
  if (!isObject(json)) throw new ModelError(`manifest.json: must be a JSON object, got ${describeValue(json)}`);
  const format = field(json, 'format', 'format');
  if (format !== MANIFEST_FORMAT) fail('format', `must be "${MANIFEST_FORMAT}", got ${describeValue(format)}`);
  const version = field(json, 'format_version', 'format_version');
  if (version !== MANIFEST_FORMAT_VERSION) {
    fail('format_version', `must be ${MANIFEST_FORMAT_VERSION} (the version this kvscope reads), got ${describeValue(version)}`);
  }
  const id = checkModelId(stringAt(json, 'id', 'id'), 'manifest.json: id');
  const name = stringAt(json, 'name', 'name');
  const role = field(json, 'role', 'role');
  if (role !== 'target' && role !== 'draft') fail('role', `must be "target" or "draft", got ${describeValue(role)}`);

  const architecture = validateArchitecture(json);
  const rope = validateRope(json, architecture);
  const tokenizer = validateTokenizer(json, architecture);
  const graph = validateGraph(json, architecture);
  const files = validateFiles(json);
  checkFileSizes(files, graph, tokenizer);

  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    format_version: MANIFEST_FORMAT_VERSION,
    id,
    name,
    role,
    architecture,
    rope,
    tokenizer,
    graph,
    files,
  };
  // the draft is looked up by id in the models index (or as a sibling folder): never a path
  if (optional(json, 'draft') !== undefined) manifest.draft = checkModelId(stringAt(json, 'draft', 'draft'), 'manifest.json: draft');
  if (optional(json, 'reference') !== undefined) {
    manifest.reference = stringAt(json, 'reference', 'reference', 1024);
    checkRelativePath(manifest.reference, 'reference');
  }
  if (optional(json, 'provenance') !== undefined) {
    const provenance = objectAt(json, 'provenance', 'provenance');
    if (depthExceeds(provenance, MAX_PROVENANCE_DEPTH)) fail('provenance', `must not nest deeper than ${MAX_PROVENANCE_DEPTH} levels`);
    manifest.provenance = provenance;
  }
  return manifest;
}
