/**
 * Merge transforms (stages.ts Transform): entries a selector dropped are folded into the cache
 * instead of evicted. Both emit MergeGroups (cache/decision.ts), so the store keeps every merged
 * entry's origins, count and the scorer's columns.
 *
 * compensationToken — RazorAttention (Tang et al., 2024, https://arxiv.org/abs/2407.15891): every
 *   entry a head drops is folded into one merged entry, the mean of their keys and of their
 *   values, anchored at the first (so it sits right after the sinks). Members are weighted by the
 *   tokens each stands for (origin length), so a compensation token folded again stays the exact
 *   running mean. `count: 'dropped'` gives it count N_D (attention bias log N_D, the paper);
 *   `'one'` count 1 (Golden-Stick's virtual token, no bias). With `reserveCompensationSlot` the
 *   token has its own place in the head's budget.
 *
 * mergeRecall — D2O (Wan et al., 2025, https://arxiv.org/abs/2406.13035): each dropped entry finds
 *   its most similar kept key (cosine); with the layer's EMA threshold τ ← α·τ + (1 − α)·mean of
 *   those similarities over every entry the layer drops in this decision (the first sets τ), an
 *   entry at or above τ is merged into its kept entry, the rest are evicted. Merge weights and
 *   counts per `weights` / `count` (policies/d2o.ts has the reading).
 */
import type { MergeGroup } from '../cache/decision.ts';
import type { JsonValue } from '../types.ts';
import { evictedIndices, type HeadDraft, type Selector, type Transform } from './stages.ts';

/** What a selection dropped, ascending: evictedIndices without its per-head flag array while no merge was added yet. */
function dropped(draft: HeadDraft): number[] {
  if (draft.merge.length > 0) return evictedIndices(draft);
  const keep = draft.keep!;
  const out: number[] = [];
  for (let i = 0, k = 0; i < draft.length; i++) {
    if (k < keep.length && keep[k] === i) k++;
    else out.push(i);
  }
  return out;
}

export type CompensationCount = 'dropped' | 'one';

export function compensationToken(count: CompensationCount): Transform {
  return {
    layer(env, layer, heads) {
      for (const head of heads) {
        if (!head.keep) continue;
        const members = dropped(head);
        // a merge needs two members; reserveCompensationSlot makes every selected head drop two or more
        if (members.length < 2) continue;
        const sizes = members.map((i) => env.cache.origin(layer, head.kvHead, i).length);
        const total = sizes.reduce((a, b) => a + b, 0);
        head.merge.push({ members, weights: sizes.map((c) => c / total), anchor: members[0], count: count === 'dropped' ? total : 1 });
      }
    },
  };
}

/**
 * The compensation token's place in the budget: `inner` selects from `budget.total − 1`, so a head
 * over its budget drops at least two entries (one dropped entry is its own mean: nothing to fold).
 */
export function reserveCompensationSlot(inner: Selector): Selector {
  return {
    state: inner.state,
    select: (env, head) => inner.select(env, { ...head, budget: { total: head.budget.total - 1, recent: head.budget.recent } }),
  };
}

export interface Nearest {
  target: number;
  similarity: number;
}

/** Cosine similarity from a dot product, the squared norm of one key and the norm of the other (0 for a zero key). */
function cosine(dot: number, squaredNorm: number, norm: number): number {
  const product = norm * Math.sqrt(squaredNorm);
  return product > 0 ? dot / product : 0;
}

/** For each evicted entry, its most similar kept entry (cosine of keys; ties → earlier kept entry). */
export function nearestKept(keys: ArrayLike<number>, d: number, kept: ArrayLike<number>, evicted: ArrayLike<number>): Nearest[] {
  const out: Nearest[] = [];
  const m = kept.length;
  for (let x = 0; x < evicted.length; x++) {
    const e = evicted[x] * d;
    let ne = 0;
    for (let c = 0; c < d; c++) ne += keys[e + c] * keys[e + c];
    ne = Math.sqrt(ne);
    let target = kept[0];
    let similarity = -Infinity;
    // Decoding evicts about one entry per head and step, so each kept key's norm is computed with
    // its dot product in the same pass. Two kept keys per pass keep two independent sums in flight;
    // each sum still adds its terms in key order, so the results are those of one key at a time.
    let k = 0;
    for (; k + 1 < m; k += 2) {
      const a = kept[k] * d;
      const b = kept[k + 1] * d;
      let dotA = 0;
      let normA = 0;
      let dotB = 0;
      let normB = 0;
      for (let c = 0; c < d; c++) {
        const q = keys[e + c];
        const ya = keys[a + c];
        const yb = keys[b + c];
        dotA += q * ya;
        normA += ya * ya;
        dotB += q * yb;
        normB += yb * yb;
      }
      const ua = cosine(dotA, normA, ne);
      if (ua > similarity) {
        similarity = ua;
        target = kept[k];
      }
      const ub = cosine(dotB, normB, ne);
      if (ub > similarity) {
        similarity = ub;
        target = kept[k + 1];
      }
    }
    if (k < m) {
      const a = kept[k] * d;
      let dot = 0;
      let norm = 0;
      for (let c = 0; c < d; c++) {
        dot += keys[e + c] * keys[a + c];
        norm += keys[a + c] * keys[a + c];
      }
      const u = cosine(dot, norm, ne);
      if (u > similarity) {
        similarity = u;
        target = kept[k];
      }
    }
    out.push({ target, similarity });
  }
  return out;
}

export type MergeWeights = 'softmax' | 'code';

/** Weights of [kept, ...recalled] for recalled similarities `u`. */
export function mergeWeights(u: readonly number[], mode: MergeWeights): number[] {
  if (mode === 'code') {
    const m = u.length;
    return [1 / (1 + m), ...u.map((x) => x / (1 + m))];
  }
  const exps = u.map((x) => Math.exp(x));
  const z = exps.reduce((a, b) => a + b, 0) + Math.E;
  return [Math.E / z, ...exps.map((x) => x / z)];
}

/** τ ← α·τ + (1 − α)·mean (the first observation sets τ = mean); unchanged when nothing was evicted. */
export function updateThreshold(tau: number | null, similarities: readonly number[], alpha: number): number | null {
  if (similarities.length === 0) return tau;
  const mean = similarities.reduce((a, b) => a + b, 0) / similarities.length;
  return tau === null ? mean : alpha * tau + (1 - alpha) * mean;
}

export interface MergeRecallOptions {
  nLayers: number;
  /** α of the EMA threshold */
  alpha: number;
  weights: MergeWeights;
  /** `kept`: the merged entry counts as its kept entry did (no bias, D2O); `members`: the tokens merged (bias log count) */
  count: 'kept' | 'members';
}

export interface MergeRecall extends Transform {
  /** [layer] EMA threshold, null before the layer's first eviction */
  readonly tau: readonly (number | null)[];
  state: { get(): (number | null)[]; set(state: JsonValue): void; reset(): void };
}

export function mergeRecall(options: MergeRecallOptions): MergeRecall {
  const { nLayers, alpha } = options;
  let tau: (number | null)[] = new Array<number | null>(nLayers).fill(null);
  return {
    get tau() {
      return tau;
    },
    layer(env, layer, heads) {
      const { cache } = env;
      const found: { draft: HeadDraft; evicted: number[]; nearest: Nearest[] }[] = [];
      const similarities: number[] = [];
      for (const draft of heads) {
        if (!draft.keep) continue;
        const evicted = dropped(draft);
        if (evicted.length === 0) continue;
        const nearest = nearestKept(cache.keys(layer, draft.kvHead), cache.headDim, draft.keep, evicted);
        for (const x of nearest) similarities.push(x.similarity);
        found.push({ draft, evicted, nearest });
      }
      const threshold = updateThreshold(tau[layer], similarities, alpha);
      tau[layer] = threshold;
      if (threshold === null) return;
      for (const { draft, evicted, nearest } of found) {
        const recalled = new Map<number, { members: number[]; u: number[] }>();
        evicted.forEach((e, i) => {
          const { target, similarity } = nearest[i];
          if (similarity < threshold) return;
          const group = recalled.get(target) ?? { members: [], u: [] };
          group.members.push(e);
          group.u.push(similarity);
          recalled.set(target, group);
        });
        if (recalled.size === 0) continue;
        const counts = cache.counts(layer, draft.kvHead);
        const groups: MergeGroup[] = [];
        for (const [target, group] of [...recalled.entries()].sort((a, b) => a[0] - b[0])) {
          const members = [target, ...group.members];
          const count = options.count === 'members' ? members.reduce((s, m) => s + counts[m], 0) : counts[target];
          groups.push({ members, weights: mergeWeights(group.u, options.weights), anchor: target, count });
        }
        draft.merge.push(...groups);
        // a merge target leaves `keep`: it is the anchor of its group now
        const keep = draft.keep!;
        const rest = new Int32Array(keep.length - recalled.size);
        for (let i = 0, o = 0; i < keep.length; i++) if (!recalled.has(keep[i])) rest[o++] = keep[i];
        draft.keep = rest;
      }
    },
    state: {
      get: () => [...tau],
      set(state) {
        tau = new Array<number | null>(nLayers).fill(null);
        if (Array.isArray(state)) state.forEach((t, l) => (tau[l] = typeof t === 'number' ? t : null));
      },
      reset() {
        tau = new Array<number | null>(nLayers).fill(null);
      },
    },
  };
}
