/**
 * What a session writes into its trace events (trace/schema.ts) besides the bare numbers: the
 * entries each step's query attended to, the top-k summary that outlives full rows, and the
 * applied decision with the scores the policy gave.
 */
import type { AppliedDecision, CacheView } from './cache/view.ts';
import type { Decision } from './cache/decision.ts';
import { topKInto } from './metrics/softmax.ts';
import type { ModelDims } from './runtime/forward.ts';
import type { AttentionTop, DecisionTrace, HeadEntries, LayerAttention } from './trace/schema.ts';

function captureEntries(cache: CacheView, layer: number): HeadEntries[] {
  const entries: HeadEntries[] = [];
  for (let h = 0; h < cache.nKvHeads; h++) {
    const n = cache.length(layer, h);
    const counts = cache.counts(layer, h);
    let merged = false;
    for (let i = 0; i < n && !merged; i++) merged = counts[i] !== 1;
    entries.push({
      tokens: cache.tokens(layer, h).slice(),
      positions: cache.positions(layer, h).slice(),
      counts: merged ? counts.slice() : null,
      origins: merged ? Array.from({ length: n }, (_, i) => (counts[i] !== 1 ? [...cache.origin(layer, h, i)] : null)) : null,
    });
  }
  return entries;
}

/** Full attention rows of a step with the entries they refer to (captured before the policy acts). */
export function captureAttention(cache: CacheView, entryAttention: Float32Array[][]): LayerAttention[] {
  return entryAttention.map((weights, layer) => ({ entries: captureEntries(cache, layer), weights }));
}

/** The k strongest entries per layer × query head, as token / position / weight. */
export function summarizeAttention(dims: ModelDims, cache: CacheView, entryAttention: Float32Array[][], k: number): AttentionTop {
  const { nLayers, nHeads, groupSize } = dims;
  const size = nLayers * nHeads * k;
  const top: AttentionTop = { k, tokens: new Int32Array(size).fill(-1), positions: new Int32Array(size).fill(-1), weights: new Float32Array(size) };
  for (let l = 0; l < nLayers; l++) {
    for (let qh = 0; qh < nHeads; qh++) {
      const kvHead = Math.floor(qh / groupSize);
      const tokens = cache.tokens(l, kvHead);
      const positions = cache.positions(l, kvHead);
      const base = (l * nHeads + qh) * k;
      // indices land in `tokens` first and are then mapped to token / position in place
      const found = topKInto(entryAttention[l][qh], k, top.tokens, top.weights, base);
      for (let rank = 0; rank < found; rank++) {
        const index = top.tokens[base + rank];
        top.tokens[base + rank] = tokens[index];
        top.positions[base + rank] = positions[index];
      }
    }
  }
  return top;
}

export function emptyApplied(): AppliedDecision {
  return { heads: [], evicted: 0, merged: 0, reencoded: 0, hidden: 0 };
}

/**
 * The applied decision plus the scores the policy gave (copied, so the policy may reuse its
 * arrays). In a composition the scores are the first member's: only they index the entries as the
 * step's query saw them (later members see the cache the earlier ones left).
 */
export function decisionTrace(applied: AppliedDecision, decisions: readonly Decision[], nLayers: number, nKvHeads: number, keepScores = true): DecisionTrace {
  let scores: (Float32Array | null)[][] | null = null;
  const decision = decisions[0];
  if (keepScores && decision?.layers) {
    let anyScores = false;
    scores = [];
    for (let l = 0; l < nLayers; l++) {
      const row: (Float32Array | null)[] = [];
      for (let h = 0; h < nKvHeads; h++) {
        const given = decision.layers[l]?.[h]?.scores;
        row.push(given ? Float32Array.from(given) : null);
        anyScores ||= Boolean(given);
      }
      scores.push(row);
    }
    if (!anyScores) scores = null;
  }
  return { ...applied, scores };
}
