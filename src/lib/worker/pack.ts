/**
 * Turns the engine's StepTrace (entry-indexed, per KV head) into the token-indexed arrays the
 * views draw. This is layout, not model math: every number comes from the trace or the cache.
 */
import type { CacheView } from '../../../engine/cache/store.ts';
import type { Calibration } from '../../../engine/calibration/format.ts';
import type { ReferenceMetrics } from '../../../engine/reference.ts';
import type { DecisionTrace, LayerAttention, StepTrace, TokenProb } from '../../../engine/trace/schema.ts';
import { CELL, type AttentionGrid, type CacheMapView, type CalibrationView, type ReferenceView, type ScoreGrid, type StepView } from './protocol.ts';

/** [layer][queryHead][token] weights; NaN where the head's KV head held nothing for the token. */
export function packAttention(attention: readonly LayerAttention[], heads: number, tokens: number): AttentionGrid {
  const layers = attention.length;
  const weights = new Float32Array(layers * heads * tokens).fill(Number.NaN);
  for (let l = 0; l < layers; l++) {
    const layer = attention[l];
    const kvHeads = layer.entries.length;
    const group = heads / kvHeads;
    for (let qh = 0; qh < heads; qh++) {
      const entries = layer.entries[Math.floor(qh / group)];
      const row = layer.weights[qh];
      const base = (l * heads + qh) * tokens;
      const n = Math.min(row.length, entries.tokens.length);
      for (let i = 0; i < n; i++) {
        const t = entries.tokens[i];
        if (t >= 0 && t < tokens) {
          const j = base + t;
          // two entries never share a first token, but stay safe: accumulate
          weights[j] = Number.isNaN(weights[j]) ? row[i] : weights[j] + row[i];
        }
      }
    }
  }
  return { layers, heads, tokens, weights };
}

/** What each KV head holds right now, plus what `decision` evicted (marked EVICTED). */
export function packCacheMap(cache: CacheView, decision: DecisionTrace | null): CacheMapView {
  const { nLayers: layers, nKvHeads: kvHeads } = cache;
  const tokens = cache.tokenCount;
  const codes = new Uint8Array(layers * kvHeads * tokens);
  for (let l = 0; l < layers; l++) {
    for (let h = 0; h < kvHeads; h++) {
      const base = (l * kvHeads + h) * tokens;
      const n = cache.length(l, h);
      const first = cache.tokens(l, h);
      const counts = cache.counts(l, h);
      for (let i = 0; i < n; i++) {
        const codec = cache.codec(l, h, i);
        if (counts[i] !== 1) {
          for (const t of cache.origin(l, h, i)) if (t >= 0 && t < tokens) codes[base + t] = CELL.MERGED;
        } else {
          const t = first[i];
          if (t >= 0 && t < tokens) codes[base + t] = codec ? CELL.ENCODED : CELL.HELD;
        }
      }
    }
  }
  if (decision) {
    for (const head of decision.heads) {
      const base = (head.layer * kvHeads + head.kvHead) * tokens;
      for (const t of head.evictedTokens) {
        if (t >= 0 && t < tokens && codes[base + t] === CELL.EMPTY) codes[base + t] = CELL.EVICTED;
      }
    }
  }
  return { layers, kvHeads, tokens, codes };
}

/**
 * A decision's scores laid out by token: `entryTokens(layer, kvHead)` gives the first token of
 * every entry the policy scored (the order its scores use). Null when no head has scores.
 */
export function packScores(
  scores: DecisionTrace['scores'],
  entryTokens: (layer: number, kvHead: number) => ArrayLike<number> | null,
  tokens: number,
): ScoreGrid | null {
  if (!scores) return null;
  const layers = scores.length;
  const kvHeads = scores[0]?.length ?? 0;
  const values = new Float32Array(layers * kvHeads * tokens).fill(Number.NaN);
  let any = false;
  for (let l = 0; l < layers; l++) {
    for (let h = 0; h < kvHeads; h++) {
      const row = scores[l][h];
      const first = row ? entryTokens(l, h) : null;
      if (!row || !first) continue;
      const base = (l * kvHeads + h) * tokens;
      const n = Math.min(row.length, first.length);
      for (let i = 0; i < n; i++) {
        const t = first[i];
        if (t >= 0 && t < tokens && !Number.isNaN(row[i])) {
          values[base + t] = row[i];
          any = true;
        }
      }
    }
  }
  return any ? { layers, kvHeads, tokens, values } : null;
}

/** Scores of a step's decision: the entries it scored are the ones the step's query saw (trace.attention). */
export function stepScores(trace: StepTrace): ScoreGrid | null {
  const attention = trace.attention;
  if (!attention) return null;
  return packScores(trace.decision.scores, (l, h) => attention[l]?.entries[h]?.tokens ?? null, trace.tokenIndex + 1);
}

/** What a decision evicted, as flattened (layer, kvHead, token) triples. */
export function packEvictions(decision: DecisionTrace): Int32Array {
  let n = 0;
  for (const head of decision.heads) n += head.evictedTokens.length;
  const out = new Int32Array(n * 3);
  let k = 0;
  for (const head of decision.heads) {
    for (const t of head.evictedTokens) {
      out[k++] = head.layer;
      out[k++] = head.kvHead;
      out[k++] = t;
    }
  }
  return out;
}

/** The reference lane's metrics as the page keeps them (per-head masses dropped). */
export function packReference(metrics: ReferenceMetrics | null): ReferenceView | null {
  if (!metrics) return null;
  const { kl, agree, mass, massByLayer, memoryRatio, policyBytes, fullBytes } = metrics;
  return { kl, agree, mass, massByLayer: [...massByLayer], memoryRatio, policyBytes, fullBytes };
}

/** The calibration's head scores for the retrieval-head map. */
export function calibrationView(calibration: Calibration | null | undefined): CalibrationView | null {
  if (!calibration || (!calibration.razor && !calibration.retrieval)) return null;
  const notes: string[] = [];
  const razor = calibration.razor;
  const retrieval = calibration.retrieval;
  if (razor) {
    notes.push(
      `echo / induction: RazorAttention's data-free probe, BOS + ${razor.repeatLength} random tokens repeated ${razor.repeats}× (${razor.sequences} sequence${razor.sequences === 1 ? '' : 's'}, seed ${razor.seed})`,
    );
  }
  if (retrieval) {
    notes.push(
      `Wu et al. / semantic: passkey prompts, ${retrieval.trials} trials (${retrieval.successes} retrieved the key), ${retrieval.targetTokens} tokens, greedy, full cache`,
    );
  }
  return {
    echo: razor?.echo ?? null,
    induction: razor?.induction ?? null,
    wu: retrieval?.wu ?? null,
    semantic: retrieval?.semantic ?? null,
    threshold: retrieval?.threshold ?? null,
    notes,
  };
}

export interface PackOptions {
  heads: number;
  /** the model's distribution for the token after this step */
  next: TokenProb[];
  /** include the attention grid (views on) */
  attention: boolean;
  /** the cache as it stands after this step (only for the latest step) */
  cache: CacheView | null;
  /** reference-lane metrics of this step */
  reference?: ReferenceMetrics | null;
}

export function packStep(trace: StepTrace, options: PackOptions): StepView {
  const tokens = trace.tokenIndex + 1;
  return {
    step: trace.step,
    tokenIndex: trace.tokenIndex,
    position: trace.position,
    token: trace.token,
    sampleProb: trace.sampleProb,
    topK: trace.topK,
    next: options.next,
    policy: trace.policy,
    note: trace.decision.note,
    evicted: trace.decision.evicted,
    merged: trace.decision.merged,
    reencoded: trace.decision.reencoded,
    memory: trace.memory,
    timings: trace.timings,
    attention: options.attention && trace.attention ? packAttention(trace.attention, options.heads, tokens) : null,
    cacheMap: options.attention && options.cache ? packCacheMap(options.cache, trace.decision) : null,
    scores: options.attention ? stepScores(trace) : null,
    evictions: packEvictions(trace.decision),
    reference: packReference(options.reference ?? null),
  };
}
