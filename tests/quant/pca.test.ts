/** The PCA codec (engine/quant/pca.ts): moments, Jacobi eigendecomposition, bases, project / reconstruct. */
import { describe, expect, it } from 'vitest';
import {
  explainedVariance,
  fitPca,
  MomentAccumulator,
  orthonormalityError,
  orthonormalize,
  pcaOf,
  project,
  rankForVariance,
  reconstruct,
  principalAxes,
} from '../../engine/quant/pca.ts';
import { rotationBasis } from '../policies/helpers/calibration.ts';

/** Seeded uniform values in [−0.5, 0.5). */
function noise(n: number, seed: number): number[] {
  let state = seed >>> 0;
  return Array.from({ length: n }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  });
}

/**
 * rows × dim data on two axes: mean + 3·z_0·axis_0 + z_1·axis_1 with (z_0, z_1) cycling through
 * (±1, ±1): zero mean, uncorrelated, unit variance — so the sample's axes are exactly these.
 */
function dataOn(axes: number[][], mean: number[], rows: number): Float64Array {
  const dim = mean.length;
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const z = [r % 2 === 0 ? 3 : -3, r % 4 < 2 ? 1 : -1];
    for (let i = 0; i < dim; i++) out[r * dim + i] = mean[i] + z[0] * axes[0][i] + z[1] * axes[1][i];
  }
  return out;
}

describe('quant/pca: moments and eigendecomposition', () => {
  it('mean and population covariance match the direct computation', () => {
    const rows = [
      [1, 2, 3],
      [2, 0, 1],
      [4, 4, -1],
      [1, -2, 5],
    ];
    const m = new MomentAccumulator(3);
    for (const r of rows) m.add(r);
    const mean = [0, 1, 2].map((i) => rows.reduce((s, r) => s + r[i], 0) / rows.length);
    expect(Array.from(m.mean())).toEqual(mean.map((x) => expect.closeTo(x, 12)));
    const cov = m.covariance();
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) {
        const direct = rows.reduce((s, r) => s + (r[i] - mean[i]) * (r[j] - mean[j]), 0) / rows.length;
        expect(cov[i * 3 + j]).toBeCloseTo(direct, 12);
      }
    }
  });

  it('Jacobi: A v = λ v, descending, orthonormal, deterministic; a rotated diagonal gives its axes back', () => {
    const axes = rotationBasis(6, 3);
    const lambda = [9, 5, 4, 2, 1, 0.5];
    // A = Σ λ_j u_j u_jᵀ
    const a = new Float64Array(36);
    axes.forEach((u, j) => {
      for (let p = 0; p < 6; p++) for (let q = 0; q < 6; q++) a[p * 6 + q] += lambda[j] * u[p] * u[q];
    });
    const { values, vectors } = principalAxes(a, 6);
    expect(Array.from(values)).toEqual(lambda.map((x) => expect.closeTo(x, 10)));
    expect(orthonormalityError(vectors, 6)).toBeLessThan(1e-12);
    for (let j = 0; j < 6; j++) {
      // same axis up to sign; the sign convention makes the largest-magnitude entry positive
      const dot = axes[j].reduce((s, x, i) => s + x * vectors[j * 6 + i], 0);
      expect(Math.abs(dot)).toBeCloseTo(1, 10);
      let big = 0;
      for (let i = 0; i < 6; i++) if (Math.abs(vectors[j * 6 + i]) > Math.abs(big)) big = vectors[j * 6 + i];
      expect(big).toBeGreaterThan(0);
      for (let p = 0; p < 6; p++) {
        let av = 0;
        for (let q = 0; q < 6; q++) av += a[p * 6 + q] * vectors[j * 6 + q];
        expect(av).toBeCloseTo(values[j] * vectors[j * 6 + p], 10);
      }
    }
    expect(principalAxes(a, 6)).toEqual({ values, vectors });
  });

  it('a 64 × 64 covariance converges to an orthonormal basis (the joint bases’ size)', () => {
    const data = Float64Array.from(noise(300 * 64, 9));
    const basis = fitPca(data, 300, 64);
    expect(orthonormalityError(basis.components, 64)).toBeLessThan(1e-10);
    for (let j = 1; j < 64; j++) expect(basis.eigenvalues[j]).toBeLessThanOrEqual(basis.eigenvalues[j - 1]);
  });
});

describe('quant/pca: bases, projection, reconstruction', () => {
  it('hand-made data with known principal axes: PCA finds the axes, their variances and the mean', () => {
    const axes = rotationBasis(4, 11).slice(0, 2);
    const mean = [1, -2, 0.5, 3];
    const data = dataOn(axes, mean, 400);
    const basis = fitPca(data, 400, 4);
    expect(Array.from(basis.mean)).toEqual(mean.map((x) => expect.closeTo(x, 12)));
    for (let j = 0; j < 2; j++) {
      const dot = axes[j].reduce((s, x, i) => s + x * basis.components[j * 4 + i], 0);
      expect(Math.abs(dot)).toBeCloseTo(1, 12);
    }
    // variances 3² and 1², nothing off the two axes
    expect(basis.eigenvalues[0]).toBeCloseTo(9, 10);
    expect(basis.eigenvalues[1]).toBeCloseTo(1, 10);
    expect(basis.eigenvalues[2]).toBeLessThan(1e-10);
    expect(rankForVariance(basis.eigenvalues, 0.999999)).toBe(2);
    // data in a rank-2 affine subspace is reconstructed exactly at rank 2
    const c = new Float64Array(2);
    const back = new Float64Array(4);
    for (let r = 0; r < 10; r++) {
      project(basis, data, r * 4, 2, c);
      reconstruct(basis, c, 0, 2, back);
      for (let i = 0; i < 4; i++) expect(back[i]).toBeCloseTo(data[r * 4 + i], 10);
    }
  });

  it('full rank is the identity (to float rounding), in float64 and into float32', () => {
    for (const dim of [8, 32, 64]) {
      const data = Float64Array.from(noise(200 * dim, dim), (x, i) => x * (1 + (i % dim)));
      const basis = fitPca(data, 200, dim);
      const c = new Float64Array(dim);
      const back = new Float64Array(dim);
      const back32 = new Float32Array(dim);
      for (let r = 0; r < 5; r++) {
        project(basis, data, r * dim, dim, c);
        reconstruct(basis, c, 0, dim, back);
        reconstruct(basis, c, 0, dim, back32);
        for (let i = 0; i < dim; i++) {
          expect(Math.abs(back[i] - data[r * dim + i])).toBeLessThan(1e-12 * dim);
          expect(back32[i]).toBe(Math.fround(back[i]));
        }
      }
    }
  });

  it('coefficients of a hand-made basis are the coordinates (x − μ) · u_j', () => {
    const components = rotationBasis(3, 2);
    const basis = { dim: 3, mean: Float64Array.from([1, 2, 3]), eigenvalues: Float64Array.from([3, 2, 1]), components: Float64Array.from(components.flat()) };
    const x = [2, 0, 5];
    const c = new Float64Array(3);
    project(basis, x, 0, 3, c);
    components.forEach((u, j) => expect(c[j]).toBeCloseTo((x[0] - 1) * u[0] + (x[1] - 2) * u[1] + (x[2] - 3) * u[2], 12));
    // rank 1: μ + c_0 u_0
    const one = new Float64Array(3);
    reconstruct(basis, c, 0, 1, one);
    expect(Array.from(one)).toEqual([1, 2, 3].map((m, i) => expect.closeTo(m + c[0] * components[0][i], 12)));
  });

  it('explained variance, ranks for a target, and re-orthonormalizing a rounded basis', () => {
    expect(Array.from(explainedVariance([4, 3, 2, 1]))).toEqual([0.4, 0.7, 0.9, 1].map((x) => expect.closeTo(x, 12)));
    expect(rankForVariance([4, 3, 2, 1], 0.7)).toBe(2);
    expect(rankForVariance([4, 3, 2, 1], 0.71)).toBe(3);
    expect(rankForVariance([4, 3, 2, 1], 1)).toBe(4);
    expect(rankForVariance([0, 0], 0.9)).toBe(1);
    const rounded = Float64Array.from(rotationBasis(16, 4).flat(), (x) => Number(x.toPrecision(6)));
    expect(orthonormalityError(rounded, 16)).toBeGreaterThan(1e-8);
    expect(orthonormalityError(rounded, 16)).toBeLessThan(1e-4);
    orthonormalize(rounded, 16);
    expect(orthonormalityError(rounded, 16)).toBeLessThan(1e-14);
  });

  it('pcaOf an empty accumulator is a zero-variance identity-like basis (no NaN)', () => {
    const basis = pcaOf(new MomentAccumulator(4));
    expect(Array.from(basis.eigenvalues)).toEqual([0, 0, 0, 0]);
    expect(orthonormalityError(basis.components, 4)).toBe(0);
    expect(Array.from(basis.mean)).toEqual([0, 0, 0, 0]);
  });
});
