/** Seeded power-iteration low rank (engine/quant/low-rank.ts) and its eigen solvers (eigen.ts): exact recovery, determinism, spectra. */
import { describe, expect, it } from 'vitest';
import {
  derivedSeed,
  gram,
  orthonormalizeColumns,
  powerIterationLowRank,
  reconstructLowRank,
  rightSingularBasis,
  singularValues,
} from '../../engine/quant/low-rank.ts';
import { symmetricEigen, symmetricEigenvalues } from '../../engine/quant/eigen.ts';
import { Xoshiro128 } from '../../engine/sampling.ts';

function randomMatrix(rows: number, cols: number, seed: number): Float64Array {
  const rng = new Xoshiro128(seed);
  return Float64Array.from({ length: rows * cols }, () => rng.nextFloat() * 2 - 1);
}

/** U·diag(σ)·Vᵀ from orthonormal columns made of seeded random matrices. */
function rankR(rows: number, cols: number, sigma: number[], seed: number): Float64Array {
  const r = sigma.length;
  const u = randomMatrix(rows, r, seed);
  const v = randomMatrix(cols, r, seed + 1);
  orthonormalizeColumns(u, rows, r);
  orthonormalizeColumns(v, cols, r);
  const x = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let c = 0; c < cols; c++) for (let j = 0; j < r; j++) x[i * cols + c] += u[i * r + j] * sigma[j] * v[c * r + j];
  return x;
}

const frobenius = (x: ArrayLike<number>) => Math.sqrt(Array.from(x).reduce((s, v) => s + v * v, 0));
function relativeError(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += (x[i] - y[i]) ** 2;
  return Math.sqrt(s) / frobenius(x);
}

describe('orthonormalizeColumns', () => {
  it('makes columns orthonormal and completes a dependent or zero column with a standard basis vector', () => {
    // columns (1, 0, 0), (2, 0, 0), (0, 0, 0)
    const m = Float64Array.from([1, 2, 0, 0, 0, 0, 0, 0, 0]);
    orthonormalizeColumns(m, 3, 3);
    expect(Array.from(m)).toEqual([1, 0, 0, 0, 1, 0, 0, 0, 1]);
    const q = randomMatrix(10, 4, 3);
    orthonormalizeColumns(q, 10, 4);
    for (let a = 0; a < 4; a++) {
      for (let b = 0; b < 4; b++) {
        let dot = 0;
        for (let i = 0; i < 10; i++) dot += q[i * 4 + a] * q[i * 4 + b];
        expect(dot).toBeCloseTo(a === b ? 1 : 0, 12);
      }
    }
  });
});

describe('symmetric eigenvalues', () => {
  it('Jacobi and tridiagonal QL agree on a hand-made matrix with known eigenvalues', () => {
    // [[2, 1, 0], [1, 2, 0], [0, 0, 5]]: eigenvalues 5, 3, 1
    const m = [2, 1, 0, 1, 2, 0, 0, 0, 5];
    const jacobi = symmetricEigen(m, 3);
    expect(Array.from(jacobi.values).map((v) => +v.toFixed(12))).toEqual([5, 3, 1]);
    expect(Array.from(symmetricEigenvalues(m, 3)).map((v) => +v.toFixed(12))).toEqual([5, 3, 1]);
    // eigenvector of 3: (1, 1, 0)/√2 up to sign
    const v3 = [jacobi.vectors[1], jacobi.vectors[4], jacobi.vectors[7]].map(Math.abs);
    expect(v3[0]).toBeCloseTo(Math.SQRT1_2, 12);
    expect(v3[1]).toBeCloseTo(Math.SQRT1_2, 12);
    expect(v3[2]).toBeCloseTo(0, 12);
  });

  it('QL matches Jacobi on a random 32 × 32 Gram matrix', () => {
    const g = gram(randomMatrix(64, 32, 9), 64, 32);
    const a = symmetricEigen(g, 32).values;
    const b = symmetricEigenvalues(g, 32);
    for (let i = 0; i < 32; i++) expect(Math.abs(a[i] - b[i]) / a[0]).toBeLessThan(1e-12);
  });

  it('singularValues of a diagonal-like matrix, wide or tall', () => {
    // 3 × 2: rows (3, 0), (0, −4), (0, 0) → 4, 3
    expect(Array.from(singularValues([3, 0, 0, -4, 0, 0], 3, 2)).map((v) => +v.toFixed(12))).toEqual([4, 3]);
    // its transpose, 2 × 3
    expect(Array.from(singularValues([3, 0, 0, 0, -4, 0], 2, 3)).map((v) => +v.toFixed(12))).toEqual([4, 3]);
  });
});

describe('powerIterationLowRank', () => {
  it('recovers a hand-made rank-r matrix exactly, with its singular values', () => {
    const sigma = [9, 4, 1.5];
    const x = rankR(20, 8, sigma, 11);
    const f = powerIterationLowRank(x, 20, 8, 3, { loops: 3, seed: 1 });
    expect(f.rank).toBe(3);
    expect(relativeError(x, reconstructLowRank(f))).toBeLessThan(1e-12);
    sigma.forEach((s, i) => expect(f.singularValues[i]).toBeCloseTo(s, 10));
    // A has orthonormal columns; B's rows are orthogonal with norms σ
    for (let j = 0; j < 3; j++) {
      let aa = 0;
      let bb = 0;
      for (let i = 0; i < 20; i++) aa += f.a[i * 3 + j] ** 2;
      for (let c = 0; c < 8; c++) bb += f.b[j * 8 + c] ** 2;
      expect(aa).toBeCloseTo(1, 12);
      expect(Math.sqrt(bb)).toBeCloseTo(sigma[j], 10);
    }
  });

  it('asking for more rank than the matrix has: exact, with zero singular values for the rest', () => {
    const x = rankR(12, 6, [5, 2], 4);
    const f = powerIterationLowRank(x, 12, 6, 4, { loops: 3, seed: 2 });
    expect(relativeError(x, reconstructLowRank(f))).toBeLessThan(1e-12);
    expect(f.singularValues[2]).toBeLessThan(1e-10);
    expect(f.singularValues[3]).toBeLessThan(1e-10);
    const zero = powerIterationLowRank(new Float64Array(12), 4, 3, 2, { loops: 3, seed: 0 });
    expect(Array.from(zero.b).every((v) => v === 0)).toBe(true);
    expect(Array.from(zero.singularValues)).toEqual([0, 0]);
  });

  it('is deterministic for a seed; the rank is capped at min(rows, cols); rank 0 is empty', () => {
    const x = randomMatrix(16, 8, 5);
    const a = powerIterationLowRank(x, 16, 8, 3, { loops: 3, seed: 42 });
    const b = powerIterationLowRank(x, 16, 8, 3, { loops: 3, seed: 42 });
    expect(Array.from(a.a)).toEqual(Array.from(b.a));
    expect(Array.from(a.b)).toEqual(Array.from(b.b));
    const c = powerIterationLowRank(x, 16, 8, 3, { loops: 3, seed: 43 });
    expect(Array.from(c.b)).not.toEqual(Array.from(a.b));
    expect(powerIterationLowRank(x, 16, 8, 20, { loops: 1, seed: 0 }).rank).toBe(8);
    expect(powerIterationLowRank(x, 16, 8, 0, { loops: 1, seed: 0 }).a.length).toBe(0);
    expect(derivedSeed(1, 2, 3)).not.toBe(derivedSeed(1, 3, 2));
    expect(derivedSeed(1, 2, 3)).toBe(derivedSeed(1, 2, 3));
  });

  it('the error falls as the rank grows, to 0 at full rank; it tracks the optimum (Eckart–Young)', () => {
    const x = randomMatrix(40, 10, 8);
    const sv = singularValues(x, 40, 10);
    const total = Array.from(sv).reduce((s, v) => s + v * v, 0);
    let previous = Infinity;
    for (let r = 0; r <= 10; r++) {
      const error = r === 0 ? 1 : relativeError(x, reconstructLowRank(powerIterationLowRank(x, 40, 10, r, { loops: 8, seed: 3 })));
      expect(error).toBeLessThan(previous + 1e-12);
      const optimum = Math.sqrt(Array.from(sv.subarray(r)).reduce((s, v) => s + v * v, 0) / total);
      expect(error).toBeGreaterThanOrEqual(optimum - 1e-9);
      expect(error).toBeLessThan(optimum + 0.05);
      previous = error;
    }
    expect(previous).toBeLessThan(1e-12);
  });
});

describe('rightSingularBasis', () => {
  it('finds the row space of a rank-2 matrix; a full-rank basis is the identity projection', () => {
    const x = rankR(30, 6, [7, 3], 21);
    const { basis, rank, singularValues: s, spectrum } = rightSingularBasis(x, 30, 6, 2, { loops: 10, seed: 1 });
    expect(rank).toBe(2);
    expect(s[0]).toBeCloseTo(7, 8);
    expect(s[1]).toBeCloseTo(3, 8);
    expect(spectrum.length).toBe(6);
    expect(spectrum[0]).toBeCloseTo(7, 8);
    // projecting every row onto the basis loses nothing
    const projected = new Float64Array(x.length);
    for (let i = 0; i < 30; i++) {
      for (let j = 0; j < 2; j++) {
        let c = 0;
        for (let k = 0; k < 6; k++) c += basis[j * 6 + k] * x[i * 6 + k];
        for (let k = 0; k < 6; k++) projected[i * 6 + k] += c * basis[j * 6 + k];
      }
    }
    expect(relativeError(x, projected)).toBeLessThan(1e-10);
    // rank 6 of a rank-2 matrix: completed to an orthonormal basis of R^6
    const full = rightSingularBasis(x, 30, 6, 6, { loops: 3, seed: 1 }).basis;
    for (let a = 0; a < 6; a++) {
      for (let b = 0; b < 6; b++) {
        let dot = 0;
        for (let k = 0; k < 6; k++) dot += full[a * 6 + k] * full[b * 6 + k];
        expect(dot).toBeCloseTo(a === b ? 1 : 0, 10);
      }
    }
  });

  it('one row: its direction first', () => {
    const { basis } = rightSingularBasis([3, 4], 1, 2, 1, { loops: 3, seed: 0 });
    expect(Math.abs(basis[0])).toBeCloseTo(0.6, 12);
    expect(Math.abs(basis[1])).toBeCloseTo(0.8, 12);
  });
});
