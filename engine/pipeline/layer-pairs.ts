/**
 * Cross-layer pairing for MiniCache (policies/minicache.ts): which layers pair, which entries of
 * two layers stand for the same token, the per-token norms / cosines / angular distances of the
 * two layers' states, and which of them stay unmerged (retention). Pure functions of the cache.
 */
import type { PolicyCache } from '../cache/view.ts';
import { topK } from '../policies/common.ts';
import { rowNorm } from './similarity.ts';
import { angularDistance, crossRowCosine } from './slerp.ts';

export type RetainRule = 'share' | 'range';

/** The first merged layer: `start` < 1 is a fraction of the depth (⌊start·L⌋), ≥ 1 a layer index. */
export function startLayerOf(start: number, nLayers: number): number {
  return start < 1 ? Math.floor(start * nLayers) : Math.floor(start);
}

/** Adjacent layer pairs (l, l+1) from `startLayer` up: (s, s+1), (s+2, s+3), … */
export function minicachePairs(nLayers: number, startLayer: number): [number, number][] {
  const pairs: [number, number][] = [];
  for (let l = Math.max(0, startLayer); l + 1 < nLayers; l += 2) pairs.push([l, l + 1]);
  return pairs;
}

/**
 * Which of m states stay unmerged (1 = retained), from their angular distances: `share` the
 * round(γ·m) largest (ties → lower index), `range` those ≥ d_max − γ·(d_max − d_min) (γ = 0: none).
 */
export function retainedSet(distances: ArrayLike<number>, retain: number, rule: RetainRule): Uint8Array {
  const m = distances.length;
  const out = new Uint8Array(m);
  if (m === 0 || !(retain > 0)) return out;
  if (rule === 'share') {
    const k = Math.min(m, Math.round(retain * m));
    if (k === 0) return out;
    for (const i of topK(distances, k, 'older')) out[i] = 1;
    return out;
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < m; i++) {
    lo = Math.min(lo, distances[i]);
    hi = Math.max(hi, distances[i]);
  }
  const threshold = hi - retain * (hi - lo);
  for (let i = 0; i < m; i++) if (distances[i] >= threshold) out[i] = 1;
  return out;
}

/** Entries of two layers' heads standing for the same single token in [lo, hi): index pairs, ascending in layer `a`. */
export interface TokenMatch {
  a: Int32Array;
  b: Int32Array;
  token: Int32Array;
}

/** A plain single-token entry (fp32, count 1, one origin token): the only kind MiniCache pairs. */
function plainEntry(cache: PolicyCache, layer: number, kvHead: number, i: number, counts: ArrayLike<number>): boolean {
  return counts[i] === 1 && cache.codec(layer, kvHead, i) === null && cache.origin(layer, kvHead, i).length === 1;
}

/** The tokens in [lo, hi) both layers `a` and `b` of one KV head hold as plain single-token entries. */
export function matchTokens(cache: PolicyCache, a: number, b: number, kvHead: number, lo: number, hi: number): TokenMatch {
  const span = Math.max(0, hi - lo);
  const where = new Int32Array(span).fill(-1);
  const tokensB = cache.tokens(b, kvHead);
  const countsB = cache.counts(b, kvHead);
  for (let j = 0; j < tokensB.length; j++) {
    const tok = tokensB[j];
    if (tok >= lo && tok < hi && plainEntry(cache, b, kvHead, j, countsB)) where[tok - lo] = j;
  }
  const tokensA = cache.tokens(a, kvHead);
  const countsA = cache.counts(a, kvHead);
  const ia: number[] = [];
  const ib: number[] = [];
  const tk: number[] = [];
  for (let i = 0; i < tokensA.length; i++) {
    const tok = tokensA[i];
    if (tok < lo || tok >= hi) continue;
    const j = where[tok - lo];
    if (j < 0 || !plainEntry(cache, a, kvHead, i, countsA)) continue;
    where[tok - lo] = -1; // a token is matched once
    ia.push(i);
    ib.push(j);
    tk.push(tok);
  }
  return { a: Int32Array.from(ia), b: Int32Array.from(ib), token: Int32Array.from(tk) };
}

/** The SLERP pieces of one pair × KV head's matched states, either K or V. */
export interface Side {
  normA: Float64Array;
  normB: Float64Array;
  cos: Float64Array;
  distance: Float64Array;
}

export function side(rowsA: ArrayLike<number>, rowsB: ArrayLike<number>, match: TokenMatch, d: number): Side {
  const m = match.a.length;
  const out: Side = { normA: new Float64Array(m), normB: new Float64Array(m), cos: new Float64Array(m), distance: new Float64Array(m) };
  for (let k = 0; k < m; k++) {
    const na = rowNorm(rowsA, match.a[k], d);
    const nb = rowNorm(rowsB, match.b[k], d);
    const cos = crossRowCosine(rowsA, match.a[k], na, rowsB, match.b[k], nb, d);
    out.normA[k] = na;
    out.normB[k] = nb;
    out.cos[k] = cos;
    out.distance[k] = angularDistance(cos);
  }
  return out;
}

/** Mean key cosine of two layers over the matched tokens (NaN when none). */
export function meanCosine(keys: Side): number {
  const m = keys.cos.length;
  if (m === 0) return NaN;
  let s = 0;
  for (let k = 0; k < m; k++) s += keys.cos[k];
  return s / m;
}

