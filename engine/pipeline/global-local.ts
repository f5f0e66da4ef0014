/**
 * Global-Local score (stages.ts Scorer) — EMS (Li et al., 2024, "EMS: Adaptive Evict-then-Merge
 * Strategy for Head-wise KV Cache Compression Based on Global-Local Importance",
 * https://arxiv.org/abs/2412.08521; policies/ems.ts has the method and the reading).
 *
 * Two views of how much an entry matters, each biased on its own: accumulated attention from
 * *all* queries (global) favours early entries, which more queries could see (the causal mask);
 * attention from the *recent* queries only (local) favours nearby entries (RoPE's decay). Per KV
 * head, with a_rj the attention of query row r on entry j reduced over the head's query heads with
 * `gqa` as each row arrives, and R the rows observed so far:
 *
 *   G_j(R) = Σ_{r ≤ R} a_rj                  column `global` (merges: sum)
 *   L_j    = G_j(R) − G_j(B)                 the attention from the rows after B, the local window
 *
 * The local window is resolved in blocks of `stride` s rows: after every s-th row the cache keeps
 * a copy of G (columns `snap.0` … `snap.{m−1}`, a ring of m = ⌈W/s⌉ + 1, merges: sum, new entries
 * 0), and B = s·⌊(R − W)/s⌋ is the latest snapshot at least W rows back, so L is exactly the
 * attention from the last R − B ∈ [W, W + s − 1] queries (exactly W with s = 1; all R rows while
 * R ≤ W). Snapshots of a prefill are computed back from its sums and its last W + s − 1 rows
 * (PrefillObservation.windowAttention, needs.prefillWindow); rows it lacks count as zero.
 *
 * Both are taken per query, so they share one scale and the causal-mask bias of the sum is taken
 * out: with s_j = min(tokens fed − token_j, R) the rows that could see entry j (its oldest token's,
 * for a merged entry), Ḡ_j = G_j / s_j and L̄_j = L_j / min(s_j, R − B) (0 where the divisor is 0).
 * Fusion (`fusion`):
 *   max  GL_j = max(Ḡ_j, L̄_j)            — an entry important to either view is important (default)
 *   mix  GL_j = λ·Ḡ_j + (1 − λ)·L̄_j       — a convex mix with λ = `mix`
 *
 * Prefill sums (PrefillObservation.attentionSums) are per query head: they are reduced with `gqa`
 * as sums (for `max`, the largest query head's sum, not a per-row max). State beyond columns: R,
 * as JSON.
 */
import type { ReadonlyFloat64Array } from '../cache/view.ts';
import type { JsonValue } from '../types.ts';
import type { GqaReduce } from './gqa.ts';
import type { Scorer, StageEnv } from './stages.ts';

export type Fusion = 'max' | 'mix';

export interface GlobalLocalOptions {
  /** W: queries in the local window (≥ 1) */
  window: number;
  /** s: rows between snapshots of the accumulated attention (≥ 1) */
  stride: number;
  gqa: GqaReduce;
  fusion: Fusion;
  /** λ of `mix`: GL = λ·global + (1 − λ)·local */
  mix: number;
}

/** One head's per-query global and local attention (Ḡ, L̄). */
export interface GlobalLocalParts {
  global: Float64Array;
  local: Float64Array;
}

export interface GlobalLocalScorer extends Scorer {
  /** Ḡ and L̄ of one head (what the fusion combines) */
  parts(env: StageEnv, layer: number, kvHead: number): GlobalLocalParts;
  /** G: the attention one head's entries have received from every query so far (raw sums) */
  accumulated(env: StageEnv, layer: number, kvHead: number): ReadonlyFloat64Array;
  /** R: query rows observed since the scorer started */
  readonly rows: number;
  /** B: the row after which the local window starts, for R rows */
  windowStart(rows: number): number;
}

/**
 * GL from per-query global and local attention, for the first global.length entries (`local` may
 * be longer). Written into `out` (default a new array; `global` itself may be passed).
 */
export function fuseGlobalLocal(global: ArrayLike<number>, local: ArrayLike<number>, fusion: Fusion, mix: number, out = new Float64Array(global.length)): Float64Array {
  const n = global.length;
  if (fusion === 'max') for (let j = 0; j < n; j++) out[j] = Math.max(global[j], local[j]);
  else for (let j = 0; j < n; j++) out[j] = mix * global[j] + (1 - mix) * local[j];
  return out;
}

/** target[j] += sign × the group's rows at j reduced with `gqa` (rows are entry-aligned, ≥ n long). */
function addReduced(target: Float64Array, rows: readonly ArrayLike<number>[], n: number, gqa: GqaReduce, sign = 1): void {
  if (gqa === 'max') {
    for (let j = 0; j < n; j++) {
      let m = -Infinity;
      for (const row of rows) if (row[j] > m) m = row[j];
      target[j] += sign * m;
    }
    return;
  }
  // row by row (each row streams once): target[j] += scale·row_g[j], query heads in group order
  const scale = gqa === 'mean' ? sign / rows.length : sign;
  for (const row of rows) for (let j = 0; j < n; j++) target[j] += scale * row[j];
}

export function globalLocalScorer(options: GlobalLocalOptions): GlobalLocalScorer {
  const W = Math.max(1, Math.floor(options.window));
  const s = Math.max(1, Math.floor(options.stride));
  const m = Math.ceil(W / s) + 1;
  const { gqa, fusion, mix } = options;
  let rows = 0;
  /** L̄ while GL is computed (reused: decode asks for every head's scores at every step) */
  let scratch = new Float64Array(0);
  const snapName = (t: number) => `snap.${(t / s) % m}`;
  const windowStart = (r: number) => (r > W ? s * Math.floor((r - W) / s) : 0);

  const observePrefill = (env: StageEnv) => {
    const { cache, dims } = env;
    const prefill = env.prefill!;
    const group = dims.groupSize;
    const fed = prefill.tokenCount;
    const sums = prefill.attentionSums;
    if (!sums) return;
    const window = prefill.windowAttention;
    const available = window ? Math.min(prefill.windowRows, fed) : 0;
    const r0 = rows;
    const r = r0 + fed;
    // the snapshots a later query may read: multiples of s from B(r) to r
    const times: number[] = [];
    for (let t = s * Math.floor(r / s); t >= Math.max(r0, windowStart(r)) && times.length < m; t -= s) if (t > 0) times.push(t);
    for (let l = 0; l < cache.nLayers; l++) {
      for (let h = 0; h < cache.nKvHeads; h++) {
        const n = cache.length(l, h);
        const global = cache.writeColumn(l, h, env.column('global'));
        const before = times.includes(r0) ? global.slice(0, n) : null;
        addReduced(global, sums[l].slice(h * group, h * group + group), n, gqa);
        if (times.length === 0) continue;
        // G after row t = G now − the rows after t (going back from the newest row)
        const blocks = window ? window[l].slice(h * group, h * group + group) : [];
        const entries = blocks.length > 0 ? blocks[0].length / Math.max(1, prefill.windowRows) : n;
        const current = Float64Array.from(global);
        let q = r;
        const row = new Array<Float32Array>(blocks.length);
        for (const t of times) {
          for (; q > t; q--) {
            const k = prefill.windowRows - (r - q) - 1;
            if (r - q >= available || k < 0) continue;
            for (let g = 0; g < blocks.length; g++) row[g] = blocks[g].subarray(k * entries, k * entries + n);
            addReduced(current, row, n, gqa, -1);
          }
          cache.writeColumn(l, h, env.column(snapName(t))).set(t === r0 && before ? before : current);
        }
      }
    }
    rows = r;
  };

  const observeStep = (env: StageEnv) => {
    const { cache, dims } = env;
    const attention = env.step!.attention;
    if (!attention) return;
    const group = dims.groupSize;
    const r = rows + 1;
    for (let l = 0; l < cache.nLayers; l++) {
      for (let h = 0; h < cache.nKvHeads; h++) {
        const n = cache.length(l, h);
        const global = cache.writeColumn(l, h, env.column('global'));
        addReduced(global, attention[l].slice(h * group, h * group + group), n, gqa);
        if (r % s === 0) cache.writeColumn(l, h, env.column(snapName(r))).set(global);
      }
    }
    rows = r;
  };

  /** 1/k for k = 0 … (0 at 0: no row could see the entry), grown as rows arrive */
  let reciprocal = new Float64Array(1);
  const reciprocals = (upTo: number): Float64Array => {
    if (reciprocal.length > upTo) return reciprocal;
    const next = new Float64Array(Math.max(upTo + 1, 2 * reciprocal.length));
    for (let k = 1; k < next.length; k++) next[k] = 1 / k;
    return (reciprocal = next);
  };

  /** Ḡ and L̄ of one head into `global` / `local`. */
  const perQuery = (env: StageEnv, layer: number, kvHead: number, global: Float64Array, local: Float64Array) => {
    const { cache } = env;
    const n = cache.length(layer, kvHead);
    const G = cache.column(layer, kvHead, env.column('global'));
    const tokens = cache.tokens(layer, kvHead);
    const fed = cache.tokenCount;
    const b = windowStart(rows);
    const span = rows - b;
    const inv = reciprocals(rows);
    const old = b > 0 ? cache.column(layer, kvHead, env.column(snapName(b))) : null;
    // rows that could see entry j: min(fed − token_j, R); of the local window: min(that, R − B)
    for (let j = 0; j < n; j++) {
      const seen = Math.max(0, Math.min(fed - tokens[j], rows));
      global[j] = G[j] * inv[seen];
      local[j] = (old ? G[j] - old[j] : G[j]) * inv[seen < span ? seen : span];
    }
  };

  const parts = (env: StageEnv, layer: number, kvHead: number): GlobalLocalParts => {
    const n = env.cache.length(layer, kvHead);
    const out = { global: new Float64Array(n), local: new Float64Array(n) };
    perQuery(env, layer, kvHead, out.global, out.local);
    return out;
  };

  return {
    columns: [
      { name: 'global', width: 1, reduce: 'sum', initial: 0 },
      ...Array.from({ length: m }, (_, k) => ({ name: `snap.${k}`, width: 1, reduce: 'sum' as const, initial: 0 })),
    ],
    needs: { attention: true, prefillWindow: W + s - 1 },
    withoutHistory: 'no attention history: global and local scores start at 0, so the oldest entries are the class centres until attention accumulates',
    get rows() {
      return rows;
    },
    windowStart,
    observe(env) {
      if (env.prefill) observePrefill(env);
      else if (env.step) observeStep(env);
    },
    parts,
    accumulated: (env, layer, kvHead) => env.cache.column(layer, kvHead, env.column('global')),
    headScores(env, layer, kvHead) {
      const n = env.cache.length(layer, kvHead);
      const global = new Float64Array(n);
      if (scratch.length < n) scratch = new Float64Array(Math.max(n, 2 * scratch.length));
      const local = scratch;
      perQuery(env, layer, kvHead, global, local);
      return fuseGlobalLocal(global, local, fusion, mix, global);
    },
    state: {
      get: (): JsonValue => ({ rows }),
      set(state) {
        const value = state !== null && typeof state === 'object' && !Array.isArray(state) ? state.rows : null;
        rows = typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : 0;
      },
      reset() {
        rows = 0;
      },
    },
  };
}
