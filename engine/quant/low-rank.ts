/**
 * Low-rank approximation by seeded power (subspace) iteration, shared by GEAR's residual factors
 * and CSKV's channel bases. Reference read: HaoKang-Timmy/GEAR
 * `GEARLM/Simulated/compress_function.py` (fake_poweriteration_group) and
 * `cuda_supported_gear/quant/new_pack.py` (headwise_lrap): P ← rand(cols × r); `loop` times
 * { Q = X·P; P = Xᵀ·Q }, QR-orthonormalising P and Q in the last loop; X ≈ Q·Pᵀ.
 *
 * Readings:
 * - P and Q are orthonormalised in every loop, not only the last: the same subspace in exact
 *   arithmetic, but without it the columns of P collapse onto the top singular vector in finite
 *   precision (the reference's 3 loops in fp32 are short enough not to notice).
 * - Orthonormalisation is modified Gram–Schmidt, run twice ("twice is enough"); a column that
 *   vanishes (X of rank < r, a zero residual) is replaced by the standard basis vector that keeps
 *   most of its norm against the others, so Q stays orthonormal and its factor in P is ~0.
 * - After the loops the r × r problem is diagonalised (Rayleigh–Ritz: PᵀP = W·Λ·Wᵀ), so the
 *   factors come ordered, A = Q·W has orthonormal columns, the rows of B = (P·W)ᵀ are orthogonal
 *   and σᵢ = √λᵢ estimates the i-th singular value (exact once the subspace has converged).
 * - The random start is uniform [0, 1) like torch.rand, from Xoshiro128** (engine/sampling.ts)
 *   seeded by the caller (`derivedSeed` mixes layer, head, block…), so results never depend on
 *   history.
 * Everything is computed in float64; callers round what they store (GEAR: fp16 factors).
 */
import { Xoshiro128 } from '../sampling.ts';
import { symmetricEigen, symmetricEigenvalues } from './eigen.ts';

export interface LowRankFactors {
  rows: number;
  cols: number;
  /** min(requested rank, rows, cols) */
  rank: number;
  /** rows × rank, row-major, orthonormal columns (what each row — token — stores) */
  a: Float64Array;
  /** rank × cols, row-major, orthogonal rows of norm σᵢ (shared by the rows) */
  b: Float64Array;
  /** estimated singular values, descending */
  singularValues: Float64Array;
}

export interface PowerIterationOptions {
  /** multiplications by X and Xᵀ (GEAR: 3) */
  loops: number;
  seed: number;
}

/** A 32-bit seed from integer parts (layer, head, block, side…): splitmix-style mixing. */
export function derivedSeed(...parts: readonly number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    h = Math.imul(h ^ (p | 0), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  return h;
}

/**
 * Orthonormalises the `k` columns of an n × k row-major matrix in place (modified Gram–Schmidt,
 * twice); vanished columns are completed with standard basis vectors (k ≤ n).
 */
export function orthonormalizeColumns(m: Float64Array, n: number, k: number): void {
  const column = new Float64Array(n);
  const best = new Float64Array(n);
  for (let j = 0; j < k; j++) {
    let before = 0;
    for (let i = 0; i < n; i++) {
      column[i] = m[i * k + j];
      before += column[i] * column[i];
    }
    let norm = orthogonalize(m, n, k, j, column);
    if (!(norm > 1e-10 * Math.sqrt(before))) {
      // in the span of the previous columns (or zero): complete the basis with the standard basis
      // vector that keeps the most of itself (one keeps ≥ 1/√n of its norm, since j < n)
      norm = 0;
      for (let e = 0; e < n; e++) {
        column.fill(0);
        column[e] = 1;
        const left = orthogonalize(m, n, k, j, column);
        if (left > norm + 1e-12) {
          norm = left;
          best.set(column);
        }
      }
      column.set(best);
    }
    for (let i = 0; i < n; i++) m[i * k + j] = column[i] / norm;
  }
}

/** Removes from `column` its components along columns 0..j−1 of m (twice); returns its norm. */
function orthogonalize(m: Float64Array, n: number, k: number, j: number, column: Float64Array): number {
  for (let pass = 0; pass < 2; pass++) {
    for (let p = 0; p < j; p++) {
      let dot = 0;
      for (let i = 0; i < n; i++) dot += m[i * k + p] * column[i];
      for (let i = 0; i < n; i++) column[i] -= dot * m[i * k + p];
    }
  }
  let s = 0;
  for (let i = 0; i < n; i++) s += column[i] * column[i];
  return Math.sqrt(s);
}

/** Xᵀ·X (cols × cols) of a rows × cols row-major matrix. */
export function gram(x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const g = new Float64Array(cols * cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let i = 0; i < cols; i++) {
      const xi = x[base + i];
      if (xi === 0) continue;
      for (let j = i; j < cols; j++) g[i * cols + j] += xi * x[base + j];
    }
  }
  for (let i = 0; i < cols; i++) for (let j = 0; j < i; j++) g[i * cols + j] = g[j * cols + i];
  return g;
}

/**
 * The whole singular-value spectrum of a small matrix, descending (min(rows, cols) values), from
 * the eigenvalues of its smaller Gram matrix — for views: values below ~1e-8·σ₁ are noise.
 */
export function singularValues(x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const transpose = rows < cols;
  const n = transpose ? rows : cols;
  let g: Float64Array;
  if (!transpose) g = gram(x, rows, cols);
  else {
    const xt = new Float64Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) xt[c * rows + r] = x[r * cols + c];
    g = gram(xt, cols, rows);
  }
  return symmetricEigenvalues(g, n).map((l) => Math.sqrt(Math.max(0, l)));
}

function randomStart(n: number, k: number, seed: number): Float64Array {
  const rng = new Xoshiro128(seed);
  const m = new Float64Array(n * k);
  for (let i = 0; i < m.length; i++) m[i] = rng.nextFloat();
  return m;
}

/** Rank-r approximation X ≈ A·B of a rows × cols row-major matrix by seeded power iteration. */
export function powerIterationLowRank(x: ArrayLike<number>, rows: number, cols: number, rank: number, options: PowerIterationOptions): LowRankFactors {
  if (x.length !== rows * cols) throw new RangeError(`matrix of ${rows} × ${cols} needs ${rows * cols} values, got ${x.length}`);
  if (!Number.isInteger(options.loops) || options.loops < 1) throw new RangeError(`power iteration needs ≥ 1 loop, got ${options.loops}`);
  const r = Math.max(0, Math.min(Math.floor(rank), rows, cols));
  let p = randomStart(cols, r, options.seed); // cols × r
  const q = new Float64Array(rows * r); // rows × r
  for (let loop = 0; loop < options.loops && r > 0; loop++) {
    orthonormalizeColumns(p, cols, r);
    q.fill(0);
    for (let i = 0; i < rows; i++) {
      for (let c = 0; c < cols; c++) {
        const xic = x[i * cols + c];
        if (xic !== 0) for (let j = 0; j < r; j++) q[i * r + j] += xic * p[c * r + j];
      }
    }
    orthonormalizeColumns(q, rows, r);
    p = new Float64Array(cols * r);
    for (let i = 0; i < rows; i++) {
      for (let c = 0; c < cols; c++) {
        const xic = x[i * cols + c];
        if (xic !== 0) for (let j = 0; j < r; j++) p[c * r + j] += xic * q[i * r + j];
      }
    }
  }
  // Rayleigh–Ritz on the r × r Gram of P: order the directions, orthogonal rows in B
  const { values, vectors } = symmetricEigen(gram(p, cols, r), r);
  const w = vectors;
  const a = new Float64Array(rows * r);
  const b = new Float64Array(r * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < r; j++) for (let k = 0; k < r; k++) a[i * r + j] += q[i * r + k] * w[k * r + j];
  for (let c = 0; c < cols; c++) for (let j = 0; j < r; j++) for (let k = 0; k < r; k++) b[j * cols + c] += p[c * r + k] * w[k * r + j];
  return { rows, cols, rank: r, a, b, singularValues: values.map((l) => Math.sqrt(Math.max(0, l))) };
}

/** A·B (rows × cols) of the factors. */
export function reconstructLowRank(f: Pick<LowRankFactors, 'rows' | 'cols' | 'rank' | 'a' | 'b'>): Float64Array {
  const out = new Float64Array(f.rows * f.cols);
  for (let i = 0; i < f.rows; i++) {
    for (let j = 0; j < f.rank; j++) {
      const aij = f.a[i * f.rank + j];
      if (aij !== 0) for (let c = 0; c < f.cols; c++) out[i * f.cols + c] += aij * f.b[j * f.cols + c];
    }
  }
  return out;
}

/**
 * An orthonormal basis (rank × cols rows, ordered by singular value) of the top right singular
 * subspace of a rows × cols matrix, and the full spectrum. The iteration runs on the cols × cols
 * Gram matrix: P ← (XᵀX)·P is exactly the power iteration's P ← Xᵀ(X·P), at cols²·r per loop
 * instead of rows·cols·r, so a long prompt can afford many loops. A basis wider than X's rank is
 * completed with orthonormal directions (so rank = cols is always the identity projection).
 */
export function rightSingularBasis(
  x: ArrayLike<number>,
  rows: number,
  cols: number,
  rank: number,
  options: PowerIterationOptions,
): { basis: Float64Array; rank: number; singularValues: Float64Array; spectrum: Float64Array } {
  const g = gram(x, rows, cols);
  const r = Math.max(0, Math.min(Math.floor(rank), cols));
  let p = randomStart(cols, r, options.seed);
  for (let loop = 0; loop < options.loops && r > 0; loop++) {
    orthonormalizeColumns(p, cols, r);
    const next = new Float64Array(cols * r);
    for (let i = 0; i < cols; i++) for (let c = 0; c < cols; c++) for (let j = 0; j < r; j++) next[i * r + j] += g[i * cols + c] * p[c * r + j];
    p = next;
  }
  orthonormalizeColumns(p, cols, r);
  // Rayleigh–Ritz: PᵀGP = W·Λ·Wᵀ orders the directions; σ = √λ
  const gp = new Float64Array(cols * r);
  for (let i = 0; i < cols; i++) for (let c = 0; c < cols; c++) for (let j = 0; j < r; j++) gp[i * r + j] += g[i * cols + c] * p[c * r + j];
  const small = new Float64Array(r * r);
  for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) for (let c = 0; c < cols; c++) small[i * r + j] += p[c * r + i] * gp[c * r + j];
  const { values, vectors } = symmetricEigen(small, r);
  const basis = new Float64Array(r * cols);
  for (let j = 0; j < r; j++) for (let c = 0; c < cols; c++) for (let k = 0; k < r; k++) basis[j * cols + c] += p[c * r + k] * vectors[k * r + j];
  const spectrum = symmetricEigenvalues(g, cols).map((l) => Math.sqrt(Math.max(0, l)));
  return { basis, rank: r, singularValues: values.map((l) => Math.sqrt(Math.max(0, l))), spectrum };
}
