/**
 * Calibration data (docs/calibration.md): offline per-head and per-layer statistics of one model,
 * computed with the engine itself (compute.ts) and stored next to the model as `calibration.json`.
 * Policies that need it (RazorAttention, CompressKV, pca, headmerge) read it from PolicyContext.calibration.
 *
 * The file names the model it was computed for — manifest id, dimensions and the sha256 of every
 * graph part — so a calibration of another model, or of an older export of the same model, is
 * detected and rejected with a message that says how to recompute it.
 *
 * Everything here is plain JSON (numbers, strings, arrays): `JSON.stringify(calibration)` is the
 * file, `parseCalibration(JSON.parse(text))` reads it back. Browser-safe (no Node imports).
 */
import { KvscopeError } from '../errors.ts';
import { isObject, type JsonObject } from '../json.ts';
import type { Manifest } from '../model/manifest.ts';
import { parseProjections, type ProjectionCalibration } from './projections.ts';

export const CALIBRATION_FORMAT = 'kvscope-calibration';
export const CALIBRATION_FORMAT_VERSION = 1;
export const CALIBRATION_FILE = 'calibration.json';

/** A calibration file is missing, malformed, stale, or lacks what a policy needs. */
export class CalibrationError extends KvscopeError {}

/** The model a calibration belongs to. */
export interface CalibrationModel {
  id: string;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  /** graph parts in manifest order with their sha256 (as listed in manifest.files) */
  graph: { path: string; sha256: string }[];
}

/**
 * RazorAttention's data-free probe: BOS + a seeded random token sequence of `repeatLength` tokens
 * repeated `repeats` times. Per layer × query head, the mean over scored rows (every query in
 * repeats 2..`repeats`) of the attention mass on the same token's earlier occurrences (echo) and
 * on the tokens right after them (induction).
 */
export interface RazorCalibration {
  repeatLength: number;
  repeats: number;
  /** probe sequences averaged (each its own seeded random sequence) */
  sequences: number;
  seed: number;
  /** query rows scored per sequence */
  rows: number;
  /** [layer][queryHead] mean echo mass, in [0, 1] */
  echo: number[][];
  /** [layer][queryHead] mean induction mass, in [0, 1] */
  induction: number[][];
}

/**
 * Retrieval scores on passkey prompts (engine/metrics/needle.ts), greedy decoding, full cache.
 * `wu`: Wu et al. 2024 — 1/|key tokens| per decoded token whose top-1 attended entry is a key
 * token inside the needle and equals the generated token. `semantic`: CompressKV — the head's whole
 * attention mass on the needle span, added at every decoded token that occurs in the needle span,
 * divided by |key tokens|. Both averaged over the successful trials (over all trials when none
 * succeeded and `requireSuccess` was false).
 */
export interface RetrievalCalibration {
  trials: number;
  successes: number;
  /** trials the scores average over */
  averagedOver: number;
  targetTokens: number;
  decodeTokens: number;
  seed: number;
  /** Wu et al.'s retrieval-head threshold (0.1) */
  threshold: number;
  /** [layer][queryHead] */
  wu: number[][];
  /** [layer][queryHead] */
  semantic: number[][];
}

/**
 * CompressKV's per-layer output error: relative L2 error of the layer's attention output (all query
 * heads concatenated, before o_proj) when that layer alone keeps a CompressKV selection of `budget`
 * entries (window `window`, scores from its `topHeads` best semantic heads) instead of the full
 * cache, summed over teacher-forced decode steps on held-out text. `normalized` sums to 1.
 */
export interface LayerErrorCalibration {
  budget: number;
  window: number;
  topHeads: number;
  kernel: number;
  prompts: number;
  promptTokens: number;
  decodeTokens: number;
  seed: number;
  /** [layer] summed relative errors */
  raw: number[];
  /** [layer] raw / Σ raw (uniform when every raw error is 0) */
  normalized: number[];
}

export interface Calibration {
  format: typeof CALIBRATION_FORMAT;
  formatVersion: typeof CALIBRATION_FORMAT_VERSION;
  model: CalibrationModel;
  /** what produced it, e.g. "kvscope computeCalibration" */
  createdBy: string;
  /** seconds the computation took (informational) */
  seconds?: number;
  razor?: RazorCalibration;
  retrieval?: RetrievalCalibration;
  layerError?: LayerErrorCalibration;
  /** PCA bases of keys and values (projections.ts): pca, headmerge */
  projections?: ProjectionCalibration;
}

export type CalibrationSection = 'razor' | 'retrieval' | 'layerError' | 'projections';

// ---------------------------------------------------------------------------------------------
// Model identity

/** The graph parts of a manifest with their sha256, as recorded in a calibration. */
export function graphFingerprint(manifest: Manifest): { path: string; sha256: string }[] {
  return manifest.graph.parts.map((path) => {
    const file = manifest.files.find((f) => f.path === path);
    if (!file) throw new CalibrationError(`manifest.json: graph part ${path} is not listed in files (no sha256 to record)`);
    return { path, sha256: file.sha256 };
  });
}

/** The CalibrationModel block for a manifest. */
export function calibrationModel(manifest: Manifest): CalibrationModel {
  const a = manifest.architecture;
  return { id: manifest.id, nLayers: a.n_layers, nHeads: a.n_heads, nKvHeads: a.n_kv_heads, graph: graphFingerprint(manifest) };
}

function shortHash(hash: string): string {
  return hash.slice(0, 12);
}

/**
 * Throws CalibrationError unless `calibration` was computed for exactly this model (id, dimensions
 * and graph sha256). The message says what differs and how to recompute.
 */
export function checkCalibration(calibration: Calibration, manifest: Manifest, where = CALIBRATION_FILE): void {
  const expected = calibrationModel(manifest);
  const got = calibration.model;
  const redo = `recompute it: kvscope calibrate <model directory>`;
  if (got.id !== expected.id) {
    throw new CalibrationError(`${where} is for model "${got.id}", not "${expected.id}" — ${redo}`);
  }
  const dims = (m: CalibrationModel) => `${m.nLayers} layers × ${m.nHeads} heads (${m.nKvHeads} KV)`;
  if (got.nLayers !== expected.nLayers || got.nHeads !== expected.nHeads || got.nKvHeads !== expected.nKvHeads) {
    throw new CalibrationError(`${where} was computed for ${dims(got)}, this model has ${dims(expected)} — ${redo}`);
  }
  const gotHashes = got.graph.map((g) => g.sha256).join('+');
  const expectedHashes = expected.graph.map((g) => g.sha256).join('+');
  if (gotHashes !== expectedHashes) {
    const show = (m: CalibrationModel) => m.graph.map((g) => `${g.path} ${shortHash(g.sha256)}…`).join(', ');
    throw new CalibrationError(
      `${where} is stale: it was computed for the graph ${show(got)}, but model "${expected.id}" now has ${show(expected)} — ${redo}`,
    );
  }
}

/** Throws CalibrationError naming the policy and the missing section(s) unless `calibration` has them. */
export function requireCalibration(
  calibration: Calibration | null | undefined,
  policyId: string,
  sections: readonly CalibrationSection[],
  problem?: string,
): Calibration {
  const how = 'compute one with `kvscope calibrate <model directory>` (writes calibration.json next to the model)';
  if (!calibration) {
    throw new CalibrationError(`${policyId} needs calibration data (${sections.join(', ')}): ${problem ?? 'none was loaded for this model'} — ${how}`);
  }
  const missing = sections.filter((s) => !calibration[s]);
  if (missing.length > 0) {
    throw new CalibrationError(`${policyId} needs the calibration section(s) ${missing.join(', ')}, which this calibration lacks — ${how}`);
  }
  return calibration;
}

// ---------------------------------------------------------------------------------------------
// Parsing (untrusted JSON → Calibration)


function fail(where: string, path: string, problem: string): never {
  throw new CalibrationError(`${where}: ${path} ${problem}`);
}

function objectAt(obj: JsonObject, key: string, where: string, path: string): JsonObject {
  const value = obj[key];
  if (!isObject(value)) fail(where, path, value === undefined ? 'is missing' : 'must be an object');
  return value;
}

function numberAt(obj: JsonObject, key: string, where: string, path: string, integer = false): number {
  const value = obj[key];
  if (typeof value !== 'number' || !Number.isFinite(value)) fail(where, path, value === undefined ? 'is missing' : 'must be a finite number');
  if (integer && !Number.isInteger(value)) fail(where, path, 'must be an integer');
  return value;
}

function stringAt(obj: JsonObject, key: string, where: string, path: string): string {
  const value = obj[key];
  if (typeof value !== 'string') fail(where, path, value === undefined ? 'is missing' : 'must be a string');
  return value;
}

function vectorAt(obj: JsonObject, key: string, length: number, where: string, path: string): number[] {
  const value = obj[key];
  if (!Array.isArray(value)) fail(where, path, value === undefined ? 'is missing' : 'must be an array');
  if (value.length !== length) fail(where, path, `must have ${length} values, has ${value.length}`);
  value.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(where, `${path}[${i}]`, 'must be a finite number');
  });
  return value as number[];
}

function matrixAt(obj: JsonObject, key: string, rows: number, cols: number, where: string, path: string): number[][] {
  const value = obj[key];
  if (!Array.isArray(value)) fail(where, path, value === undefined ? 'is missing' : 'must be an array');
  if (value.length !== rows) fail(where, path, `must have ${rows} rows (layers), has ${value.length}`);
  return value.map((row, i) => vectorAt({ row }, 'row', cols, where, `${path}[${i}]`));
}

/** Validates untrusted JSON as a Calibration (shapes and numbers); does not check the model (see checkCalibration). */
export function parseCalibration(json: unknown, where = CALIBRATION_FILE): Calibration {
  if (!isObject(json)) fail(where, 'the file', 'must be a JSON object');
  if (json.format !== CALIBRATION_FORMAT) fail(where, 'format', `must be "${CALIBRATION_FORMAT}", got ${JSON.stringify(json.format)}`);
  if (json.formatVersion !== CALIBRATION_FORMAT_VERSION) {
    fail(where, 'formatVersion', `must be ${CALIBRATION_FORMAT_VERSION}, got ${JSON.stringify(json.formatVersion)} (recompute with this kvscope)`);
  }
  const m = objectAt(json, 'model', where, 'model');
  const nLayers = numberAt(m, 'nLayers', where, 'model.nLayers', true);
  const nHeads = numberAt(m, 'nHeads', where, 'model.nHeads', true);
  const nKvHeads = numberAt(m, 'nKvHeads', where, 'model.nKvHeads', true);
  if (!Array.isArray(m.graph) || m.graph.length === 0) fail(where, 'model.graph', 'must be a non-empty array');
  const graph = m.graph.map((g, i) => {
    if (!isObject(g)) fail(where, `model.graph[${i}]`, 'must be an object');
    return { path: stringAt(g, 'path', where, `model.graph[${i}].path`), sha256: stringAt(g, 'sha256', where, `model.graph[${i}].sha256`) };
  });
  const calibration: Calibration = {
    format: CALIBRATION_FORMAT,
    formatVersion: CALIBRATION_FORMAT_VERSION,
    model: { id: stringAt(m, 'id', where, 'model.id'), nLayers, nHeads, nKvHeads, graph },
    createdBy: typeof json.createdBy === 'string' ? json.createdBy : 'unknown',
  };
  if (typeof json.seconds === 'number') calibration.seconds = json.seconds;
  if (json.razor !== undefined) {
    const r = objectAt(json, 'razor', where, 'razor');
    calibration.razor = {
      repeatLength: numberAt(r, 'repeatLength', where, 'razor.repeatLength', true),
      repeats: numberAt(r, 'repeats', where, 'razor.repeats', true),
      sequences: numberAt(r, 'sequences', where, 'razor.sequences', true),
      seed: numberAt(r, 'seed', where, 'razor.seed', true),
      rows: numberAt(r, 'rows', where, 'razor.rows', true),
      echo: matrixAt(r, 'echo', nLayers, nHeads, where, 'razor.echo'),
      induction: matrixAt(r, 'induction', nLayers, nHeads, where, 'razor.induction'),
    };
  }
  if (json.retrieval !== undefined) {
    const r = objectAt(json, 'retrieval', where, 'retrieval');
    calibration.retrieval = {
      trials: numberAt(r, 'trials', where, 'retrieval.trials', true),
      successes: numberAt(r, 'successes', where, 'retrieval.successes', true),
      averagedOver: numberAt(r, 'averagedOver', where, 'retrieval.averagedOver', true),
      targetTokens: numberAt(r, 'targetTokens', where, 'retrieval.targetTokens', true),
      decodeTokens: numberAt(r, 'decodeTokens', where, 'retrieval.decodeTokens', true),
      seed: numberAt(r, 'seed', where, 'retrieval.seed', true),
      threshold: numberAt(r, 'threshold', where, 'retrieval.threshold'),
      wu: matrixAt(r, 'wu', nLayers, nHeads, where, 'retrieval.wu'),
      semantic: matrixAt(r, 'semantic', nLayers, nHeads, where, 'retrieval.semantic'),
    };
  }
  if (json.layerError !== undefined) {
    const e = objectAt(json, 'layerError', where, 'layerError');
    calibration.layerError = {
      budget: numberAt(e, 'budget', where, 'layerError.budget', true),
      window: numberAt(e, 'window', where, 'layerError.window', true),
      topHeads: numberAt(e, 'topHeads', where, 'layerError.topHeads', true),
      kernel: numberAt(e, 'kernel', where, 'layerError.kernel', true),
      prompts: numberAt(e, 'prompts', where, 'layerError.prompts', true),
      promptTokens: numberAt(e, 'promptTokens', where, 'layerError.promptTokens', true),
      decodeTokens: numberAt(e, 'decodeTokens', where, 'layerError.decodeTokens', true),
      seed: numberAt(e, 'seed', where, 'layerError.seed', true),
      raw: vectorAt(e, 'raw', nLayers, where, 'layerError.raw'),
      normalized: vectorAt(e, 'normalized', nLayers, where, 'layerError.normalized'),
    };
  }
  if (json.projections !== undefined) calibration.projections = parseProjections(json.projections, nLayers, nKvHeads, (path, problem) => fail(where, path, problem));
  return calibration;
}

/** Parses the text of a calibration file and checks it belongs to `manifest`. */
export function readCalibration(text: string, manifest: Manifest, where = CALIBRATION_FILE): Calibration {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new CalibrationError(`${where}: not valid JSON (${(error as Error).message})`);
  }
  const calibration = parseCalibration(json, where);
  checkCalibration(calibration, manifest, where);
  return calibration;
}

/**
 * The file text: two-space indentation, numbers rounded to 6 significant digits, every array of
 * numbers (a layer's row of head scores) on one line.
 */
export function serializeCalibration(calibration: Calibration): string {
  const round = (_key: string, value: unknown) => (typeof value === 'number' && !Number.isInteger(value) ? Number(value.toPrecision(6)) : value);
  const text = JSON.stringify(calibration, round, 2).replace(/\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]/g, (_m, body: string) => `[${body.split(/,\s*/).join(', ')}]`);
  return `${text}\n`;
}
