/** Chi-square goodness of fit for the speculative-decoding distribution tests (no dependencies). */

/** ln Γ(x), Lanczos approximation (g = 7, n = 9): ~15 significant digits for x > 0. */
function logGamma(x: number): number {
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Regularized upper incomplete gamma Q(a, x) (Numerical Recipes: series below a + 1, continued fraction above). */
function upperGamma(a: number, x: number): number {
  if (x <= 0) return 1;
  const lead = -x + a * Math.log(x) - logGamma(a);
  if (x < a + 1) {
    let sum = 1 / a;
    let term = sum;
    for (let n = 1; n < 1000; n++) {
      term *= x / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * 1e-15) break;
    }
    return 1 - sum * Math.exp(lead);
  }
  let b = x + 1 - a;
  let c = 1 / 1e-300;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < 1e-300) d = 1e-300;
    c = b + an / c;
    if (Math.abs(c) < 1e-300) c = 1e-300;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) break;
  }
  return Math.exp(lead) * h;
}

export interface ChiSquare {
  statistic: number;
  df: number;
  /** P(χ²_df ≥ statistic) */
  pValue: number;
}

/**
 * Pearson's chi-square of observed counts against expected probabilities. Categories with expected
 * count below `minExpected` are pooled into one (so the χ² approximation holds); an observation in
 * a category of probability 0 gives p-value 0.
 */
export function chiSquare(observed: ArrayLike<number>, probabilities: ArrayLike<number>, minExpected = 5): ChiSquare {
  let n = 0;
  for (let i = 0; i < observed.length; i++) n += observed[i];
  let statistic = 0;
  let df = -1;
  let pooledObserved = 0;
  let pooledExpected = 0;
  for (let i = 0; i < probabilities.length; i++) {
    const expected = probabilities[i] * n;
    const seen = observed[i] ?? 0;
    if (expected === 0) {
      if (seen > 0) return { statistic: Infinity, df: Math.max(df, 1), pValue: 0 };
      continue;
    }
    if (expected < minExpected) {
      pooledObserved += seen;
      pooledExpected += expected;
      continue;
    }
    statistic += (seen - expected) ** 2 / expected;
    df++;
  }
  if (pooledExpected > 0) {
    statistic += (pooledObserved - pooledExpected) ** 2 / pooledExpected;
    df++;
  }
  if (df < 1) return { statistic, df: 0, pValue: 1 };
  return { statistic, df, pValue: upperGamma(df / 2, statistic / 2) };
}

/** Counts of each value in [0, size). */
export function histogram(values: readonly number[], size: number): Float64Array {
  const out = new Float64Array(size);
  for (const v of values) out[v]++;
  return out;
}
