/**
 * The `projections` calibration section (docs/calibration.md): PCA bases of the cache's keys and
 * values on held-out text, for the low-rank methods `pca` (MatryoshkaKV's training-free PCA:
 * per layer × KV head) and `headmerge` (Yu et al., 2024: per layer, all KV heads concatenated).
 * Types, validation of untrusted JSON, and the bases as float64 PcaBasis for the codec
 * (engine/quant/pca.ts). Browser-safe, no imports of the engine's runtime.
 *
 * A basis is stored as `{mean, eigenvalues, components}`: `components[j]` is the j-th principal
 * direction (unit vector, descending eigenvalue). Files round numbers to 6 significant digits, so
 * on load a basis must be orthonormal within ORTHONORMAL_TOLERANCE, and `basisOf` re-orthonormalizes
 * it (Gram–Schmidt in component order) so that full rank reconstructs exactly to float rounding.
 */
import { isObject, type JsonObject } from '../json.ts';
import { orthonormalityError, orthonormalize, type PcaBasis } from '../quant/pca.ts';

/** Largest |U Uᵀ − I| a stored basis may show (6 significant digits leave ≈ 2e−6 in the shipped file). */
export const ORTHONORMAL_TOLERANCE = 1e-3;

export interface PcaBasisJson {
  mean: number[];
  /** descending, ≥ 0 */
  eigenvalues: number[];
  /** [component][channel], unit and orthogonal */
  components: number[][];
}

export interface ProjectionCalibration {
  /** held-out windows prefilled with the full cache, tokens in each, their seed */
  prompts: number;
  tokens: number;
  seed: number;
  /** vectors each basis was fitted to (per KV head; per layer for the joint bases) */
  rows: number;
  headDim: number;
  /** [layer][kvHead] post-RoPE keys as cached (MatryoshkaKV) */
  keys: PcaBasisJson[][];
  /** [layer][kvHead] values */
  values: PcaBasisJson[][];
  /**
   * [layer] the layer's KV heads concatenated (kv 0 channels first), nKvHeads·headDim wide:
   * `keys` of pre-RoPE keys (each entry un-rotated from its position), `keysPost` of the cached
   * post-RoPE keys, `values`. Absent when the joint width exceeded the compute's limit.
   */
  joint?: { keys: PcaBasisJson[]; keysPost: PcaBasisJson[]; values: PcaBasisJson[] };
}

export function basisToJson(basis: PcaBasis): PcaBasisJson {
  const d = basis.dim;
  return {
    mean: Array.from(basis.mean),
    eigenvalues: Array.from(basis.eigenvalues),
    components: Array.from({ length: d }, (_, j) => Array.from(basis.components.subarray(j * d, (j + 1) * d))),
  };
}

const bases = new WeakMap<PcaBasisJson, PcaBasis>();

/** The float64 basis of a stored one, re-orthonormalized; cached per object (policies rebuild often). */
export function basisOf(json: PcaBasisJson): PcaBasis {
  const cached = bases.get(json);
  if (cached) return cached;
  const dim = json.mean.length;
  const components = new Float64Array(dim * dim);
  json.components.forEach((row, j) => components.set(row, j * dim));
  orthonormalize(components, dim);
  const basis: PcaBasis = { dim, mean: Float64Array.from(json.mean), eigenvalues: Float64Array.from(json.eigenvalues), components };
  bases.set(json, basis);
  return basis;
}

/** sqrt of the eigenvalues: the spectrum views show as singular values (per √row). */
export function singularValues(json: PcaBasisJson): number[] {
  return json.eigenvalues.map((x) => Math.sqrt(Math.max(0, x)));
}

// ---------------------------------------------------------------------------------------------
// Validation (untrusted JSON → ProjectionCalibration)

type Fail = (path: string, problem: string) => never;

function integerAt(obj: JsonObject, key: string, path: string, fail: Fail): number {
  const value = obj[key];
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) fail(path, value === undefined ? 'is missing' : 'must be a non-negative integer');
  return value;
}

function vectorOf(value: unknown, length: number, path: string, fail: Fail): number[] {
  if (!Array.isArray(value)) fail(path, value === undefined ? 'is missing' : 'must be an array');
  if (value.length !== length) fail(path, `must have ${length} values, has ${value.length}`);
  for (let i = 0; i < value.length; i++) if (typeof value[i] !== 'number' || !Number.isFinite(value[i])) fail(`${path}[${i}]`, 'must be a finite number');
  return value as number[];
}

function listOf(value: unknown, length: number, path: string, fail: Fail, what: string): unknown[] {
  if (!Array.isArray(value)) fail(path, value === undefined ? 'is missing' : 'must be an array');
  if (value.length !== length) fail(path, `must have ${length} ${what}, has ${value.length}`);
  return value;
}

function basisAt(value: unknown, dim: number, path: string, fail: Fail): PcaBasisJson {
  if (!isObject(value)) fail(path, value === undefined ? 'is missing' : 'must be an object');
  const mean = vectorOf(value.mean, dim, `${path}.mean`, fail);
  const eigenvalues = vectorOf(value.eigenvalues, dim, `${path}.eigenvalues`, fail);
  const scale = Math.max(1e-30, eigenvalues[0] ?? 0);
  eigenvalues.forEach((x, i) => {
    if (x < 0) fail(`${path}.eigenvalues[${i}]`, 'must be ≥ 0');
    if (i > 0 && x > eigenvalues[i - 1] + 1e-5 * scale) fail(`${path}.eigenvalues`, 'must be in descending order');
  });
  const rows = listOf(value.components, dim, `${path}.components`, fail, 'components');
  const components = rows.map((row, j) => vectorOf(row, dim, `${path}.components[${j}]`, fail));
  const flat = new Float64Array(dim * dim);
  components.forEach((row, j) => flat.set(row, j * dim));
  const error = orthonormalityError(flat, dim);
  if (error > ORTHONORMAL_TOLERANCE) fail(`${path}.components`, `must be orthonormal (max |UUᵀ − I| = ${error.toPrecision(3)} > ${ORTHONORMAL_TOLERANCE})`);
  return { mean, eigenvalues, components };
}

/** Validates the `projections` section of a calibration for a model of `nLayers` × `nKvHeads`. */
export function parseProjections(value: unknown, nLayers: number, nKvHeads: number, fail: Fail): ProjectionCalibration {
  if (!isObject(value)) fail('projections', 'must be an object');
  const headDim = integerAt(value, 'headDim', 'projections.headDim', fail);
  if (headDim < 1) fail('projections.headDim', 'must be ≥ 1');
  const perHead = (key: 'keys' | 'values') =>
    listOf(value[key], nLayers, `projections.${key}`, fail, 'layers').map((row, l) =>
      listOf(row, nKvHeads, `projections.${key}[${l}]`, fail, 'KV heads').map((b, h) => basisAt(b, headDim, `projections.${key}[${l}][${h}]`, fail)),
    );
  const section: ProjectionCalibration = {
    prompts: integerAt(value, 'prompts', 'projections.prompts', fail),
    tokens: integerAt(value, 'tokens', 'projections.tokens', fail),
    seed: integerAt(value, 'seed', 'projections.seed', fail),
    rows: integerAt(value, 'rows', 'projections.rows', fail),
    headDim,
    keys: perHead('keys'),
    values: perHead('values'),
  };
  if (value.joint !== undefined) {
    const joint = value.joint;
    if (!isObject(joint)) fail('projections.joint', 'must be an object');
    const width = nKvHeads * headDim;
    const perLayer = (key: 'keys' | 'keysPost' | 'values') =>
      listOf(joint[key], nLayers, `projections.joint.${key}`, fail, 'layers').map((b, l) => basisAt(b, width, `projections.joint.${key}[${l}]`, fail));
    section.joint = { keys: perLayer('keys'), keysPost: perLayer('keysPost'), values: perLayer('values') };
  }
  return section;
}
