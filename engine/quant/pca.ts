/**
 * PCA bases (the codec behind `pca` and `headmerge`, docs/calibration.md "projections"): the mean
 * and covariance of a set of rows, a symmetric eigendecomposition (quant/eigen.ts's cyclic Jacobi,
 * deterministic: d ≤ 64 here, so O(d³) per sweep is nothing), components sorted by eigenvalue,
 * and the codec
 *
 *   c = (x − μ) U_r        (project: r coefficients)
 *   x̂ = μ + U_r c          (reconstruct)
 *
 * where U_r holds the first r components as columns. At full rank x̂ = x up to float rounding
 * (U is orthonormal); below it x̂ is the best rank-r affine approximation in the mean-squared
 * sense over the rows the basis was fit to (MatryoshkaKV's training-free PCA initialisation,
 * Lin et al., 2024; Yu et al., 2024's SVD-a on calibration caches).
 *
 * Storage here is float64: `components` is dim × dim row-major, row j = component j (a unit
 * vector), so U[:, j] = components[j·dim … j·dim + dim). Sign convention (for determinism across
 * runs and platforms): a component's entry of largest magnitude is positive.
 */
import { symmetricEigen } from './eigen.ts';

export interface PcaBasis {
  dim: number;
  mean: Float64Array;
  /** descending, ≥ 0 (variance along each component) */
  eigenvalues: Float64Array;
  /** dim × dim row-major, row j = component j */
  components: Float64Array;
}

/** Accumulates the mean and the (population) covariance of rows of `dim` values, in float64. */
export class MomentAccumulator {
  count = 0;
  private readonly sum: Float64Array;
  /** Σ (x − s)(x − s)ᵀ with s = the first row (shifted sums avoid cancellation) */
  private readonly outer: Float64Array;
  private readonly shift: Float64Array;
  private readonly scratch: Float64Array;

  constructor(readonly dim: number) {
    this.sum = new Float64Array(dim);
    this.outer = new Float64Array(dim * dim);
    this.shift = new Float64Array(dim);
    this.scratch = new Float64Array(dim);
  }

  /** Adds the row `row[offset … offset + dim)`. */
  add(row: ArrayLike<number>, offset = 0): void {
    const d = this.dim;
    if (this.count === 0) for (let i = 0; i < d; i++) this.shift[i] = row[offset + i];
    const x = this.scratch;
    for (let i = 0; i < d; i++) x[i] = row[offset + i] - this.shift[i];
    for (let i = 0; i < d; i++) {
      const xi = x[i];
      this.sum[i] += xi;
      if (xi === 0) continue;
      const base = i * d;
      for (let j = i; j < d; j++) this.outer[base + j] += xi * x[j];
    }
    this.count++;
  }

  mean(): Float64Array {
    const n = Math.max(1, this.count);
    return Float64Array.from(this.sum, (s, i) => s / n + this.shift[i]);
  }

  /** dim × dim population covariance (÷ n); zeros without rows. */
  covariance(): Float64Array {
    const d = this.dim;
    const n = this.count;
    const c = new Float64Array(d * d);
    if (n === 0) return c;
    for (let i = 0; i < d; i++) {
      for (let j = i; j < d; j++) {
        const v = this.outer[i * d + j] / n - (this.sum[i] / n) * (this.sum[j] / n);
        c[i * d + j] = v;
        c[j * d + i] = v;
      }
    }
    return c;
  }
}

/**
 * Principal axes of the symmetric n × n `matrix` (row-major): eigenvalues descending and
 * eigenvectors as rows in the same order, each signed so that its entry of largest magnitude is
 * positive (the basis convention above). The solver is quant/eigen.ts's cyclic Jacobi, shared
 * with the low-rank codecs; ties keep index order.
 */
export function principalAxes(matrix: ArrayLike<number>, n: number): { values: Float64Array; vectors: Float64Array } {
  const { values, vectors: columns } = symmetricEigen(matrix, n);
  const vectors = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let big = 0;
    for (let k = 0; k < n; k++) if (Math.abs(columns[k * n + j]) > Math.abs(big)) big = columns[k * n + j];
    const sign = big < 0 ? -1 : 1;
    for (let k = 0; k < n; k++) vectors[j * n + k] = sign * columns[k * n + j];
  }
  return { values, vectors };
}

/** The PCA basis of the rows an accumulator saw (eigenvalues clamped at 0). */
export function pcaOf(moments: MomentAccumulator): PcaBasis {
  const { values, vectors } = principalAxes(moments.covariance(), moments.dim);
  return { dim: moments.dim, mean: moments.mean(), eigenvalues: values.map((x) => Math.max(0, x)), components: vectors };
}

/** The PCA basis of `rows` rows of `dim` values, row-major in `data`. */
export function fitPca(data: ArrayLike<number>, rows: number, dim: number): PcaBasis {
  const moments = new MomentAccumulator(dim);
  for (let r = 0; r < rows; r++) moments.add(data, r * dim);
  return pcaOf(moments);
}

/** Cumulative explained-variance fractions: [r − 1] = Σ_{j<r} λ_j / Σ λ (all 1 when Σ λ = 0). */
export function explainedVariance(eigenvalues: ArrayLike<number>): Float64Array {
  let total = 0;
  for (let i = 0; i < eigenvalues.length; i++) total += eigenvalues[i];
  const out = new Float64Array(eigenvalues.length);
  let run = 0;
  for (let i = 0; i < eigenvalues.length; i++) {
    run += eigenvalues[i];
    out[i] = total > 0 ? run / total : 1;
  }
  return out;
}

/** The smallest rank (≥ 1) whose components explain at least `target` of the variance. */
export function rankForVariance(eigenvalues: ArrayLike<number>, target: number): number {
  const explained = explainedVariance(eigenvalues);
  for (let r = 1; r <= explained.length; r++) if (explained[r - 1] >= target - 1e-12) return r;
  return explained.length;
}

/** Scratch for project / reconstruct (single-threaded; grown to the widest basis seen). */
let work = new Float64Array(64);
function scratch(dim: number): Float64Array {
  if (work.length < dim) work = new Float64Array(dim);
  return work;
}

/** c_j = Σ_i (x_i − μ_i) U[i][j] for j < rank: x = `x[offset …]`, c written to `out[outOffset …]`. */
export function project(basis: PcaBasis, x: ArrayLike<number>, offset: number, rank: number, out: Float64Array | Float32Array, outOffset = 0): void {
  const { dim, mean, components } = basis;
  const centred = scratch(dim);
  for (let i = 0; i < dim; i++) centred[i] = x[offset + i] - mean[i];
  const tail = dim - (dim % 4);
  for (let j = 0; j < rank; j++) {
    const base = j * dim;
    // four partial sums: independent multiply-adds (the inner loop of every encoded entry)
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    for (let i = 0; i < tail; i += 4) {
      s0 += centred[i] * components[base + i];
      s1 += centred[i + 1] * components[base + i + 1];
      s2 += centred[i + 2] * components[base + i + 2];
      s3 += centred[i + 3] * components[base + i + 3];
    }
    for (let i = tail; i < dim; i++) s0 += centred[i] * components[base + i];
    out[outOffset + j] = s0 + s1 + (s2 + s3);
  }
}

/** x̂_i = μ_i + Σ_{j<rank} U[i][j] c_j: c = `coefficients[offset …]`, x̂ written to `out[outOffset …]`. */
export function reconstruct(basis: PcaBasis, coefficients: ArrayLike<number>, offset: number, rank: number, out: Float64Array | Float32Array, outOffset = 0): void {
  const { dim, mean, components } = basis;
  const acc = scratch(dim);
  for (let i = 0; i < dim; i++) acc[i] = mean[i];
  for (let j = 0; j < rank; j++) {
    const c = coefficients[offset + j];
    if (c === 0) continue;
    const base = j * dim;
    for (let i = 0; i < dim; i++) acc[i] += c * components[base + i];
  }
  for (let i = 0; i < dim; i++) out[outOffset + i] = acc[i];
}

/** max |U Uᵀ − I| over the first `count` components (0 for an orthonormal set). */
export function orthonormalityError(components: ArrayLike<number>, dim: number, count = dim): number {
  let worst = 0;
  for (let a = 0; a < count; a++) {
    for (let b = a; b < count; b++) {
      let s = 0;
      for (let i = 0; i < dim; i++) s += components[a * dim + i] * components[b * dim + i];
      worst = Math.max(worst, Math.abs(s - (a === b ? 1 : 0)));
    }
  }
  return worst;
}

/**
 * Re-orthonormalizes components in place (modified Gram–Schmidt in component order): rounding in
 * a stored basis (6 significant digits) would otherwise keep full rank from being exact. A
 * component that vanishes against the earlier ones (not expected for a valid basis) is left 0.
 */
export function orthonormalize(components: Float64Array, dim: number, count = dim): void {
  for (let a = 0; a < count; a++) {
    const row = a * dim;
    for (let b = 0; b < a; b++) {
      let s = 0;
      for (let i = 0; i < dim; i++) s += components[row + i] * components[b * dim + i];
      for (let i = 0; i < dim; i++) components[row + i] -= s * components[b * dim + i];
    }
    let norm = 0;
    for (let i = 0; i < dim; i++) norm += components[row + i] ** 2;
    norm = Math.sqrt(norm);
    for (let i = 0; i < dim; i++) components[row + i] = norm > 1e-12 ? components[row + i] / norm : 0;
  }
}
