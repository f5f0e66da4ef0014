/**
 * Retrieval-head scores on passkey prompts, two readings from one set of greedy decodes:
 *
 * - Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context Factuality",
 *   nightdessert/Retrieval_Head): engine/metrics/needle.ts's `retrievalHits` (top-1 attended entry
 *   is a key token in the needle and equals the generated token), reused as is.
 * - CompressKV's *semantic* retrieval score (Lin et al., 2025, TUDa-HWAI/CompressKV,
 *   `semantic_retrieval_head_detection.py`, read to understand): at every decoded token that occurs
 *   in the needle, each head adds its whole attention mass on the needle span — no top-1 or copy
 *   condition, so heads that read the needle "semantically" score too. Our reading where it is
 *   loose: the needle span is the needle sentence up to the key's second mention,
 *   [needleStart, last key token + 1) (both mentions of the key, the text around them); the mass
 *   is added once per qualifying decoded token (the reference adds it once per matching needle
 *   position, which double-counts repeated tokens); per trial the sum is divided by the number of
 *   key tokens (the reference keeps raw sums; dividing puts both scores on the same scale), and
 *   trials are averaged over the successful ones, as Wu et al. do (the reference filters on
 *   ROUGE recall > 50, we on the decoded text starting with the key).
 *
 * Prompts, decoding and the pairing of attention with the generated token are those of
 * runNeedleTrial (needle.ts): the last prompt token is fed as a forced step, so step s's attention
 * is the query that produced step s+1's token.
 */
import { buildNeedlePrompt, runNeedleTrial, trialDepth, type NeedlePrompt, type RetrievalObservation } from '../metrics/needle.ts';
import { fillerSentences } from '../metrics/heldout.ts';
import type { EngineModel } from '../session.ts';
import type { LayerAttention } from '../trace/schema.ts';
import type { RetrievalCalibration } from './format.ts';

/** The needle span used by the semantic score: [needleStart, last key token + 1). */
export function needleSpan(prompt: Pick<NeedlePrompt, 'needleStart' | 'keyTokenIndices'>): [number, number] {
  return [prompt.needleStart, Math.max(...prompt.keyTokenIndices) + 1];
}

/**
 * Semantic retrieval mass per query head, flattened [layer × nHeads + head]: for every observation
 * whose generated token occurs in `sequence[span]`, the head's attention on entries standing for a
 * token of the span (merged entries count when any of their tokens does).
 */
export function semanticMass(observations: readonly RetrievalObservation[], sequence: ArrayLike<number>, span: readonly [number, number], nHeads: number): Float64Array {
  const nLayers = observations[0]?.attention.length ?? 0;
  const mass = new Float64Array(nLayers * nHeads);
  const [start, end] = span;
  const spanTokens = new Set<number>();
  for (let t = start; t < end; t++) spanTokens.add(sequence[t]);
  const inSpan = (t: number) => t >= start && t < end;
  for (const { token, attention } of observations) {
    if (!spanTokens.has(token)) continue;
    attention.forEach((layer: LayerAttention, l) => {
      const groupSize = nHeads / layer.entries.length;
      const masks = layer.entries.map((head) => {
        const mask = new Uint8Array(head.tokens.length);
        for (let j = 0; j < mask.length; j++) {
          const origin = head.origins?.[j] ?? [head.tokens[j]];
          mask[j] = origin.some(inSpan) ? 1 : 0;
        }
        return mask;
      });
      for (let qh = 0; qh < nHeads; qh++) {
        const mask = masks[Math.floor(qh / groupSize)];
        const w = layer.weights[qh];
        let sum = 0;
        for (let j = 0; j < w.length; j++) if (mask[j]) sum += w[j];
        mass[l * nHeads + qh] += sum;
      }
    });
  }
  return mass;
}

export interface RetrievalTrial {
  key: string;
  output: string;
  success: boolean;
  /** [layer × nHeads + head], already divided by the number of key tokens */
  wu: Float64Array;
  semantic: Float64Array;
}

/** One passkey prompt: greedy decode with the full cache, both scores from the same attention. */
export async function runRetrievalTrial(model: EngineModel, prompt: NeedlePrompt, decodeTokens = 7): Promise<RetrievalTrial> {
  const trial = await runNeedleTrial(model, prompt, decodeTokens);
  const { nHeads } = model.forward.dims;
  const semantic = semanticMass(trial.observations, trial.tokens, needleSpan(prompt), nHeads).map((m) => m / prompt.keyTokens.length);
  return { key: trial.key, output: trial.output, success: trial.success, wu: trial.retrieval, semantic };
}

export interface RetrievalOptions {
  /** passkey prompts, depths spread over 0..1 (default 10) */
  trials?: number;
  /** prompt length (default min(512, context − decodeTokens − 1)) */
  targetTokens?: number;
  decodeTokens?: number;
  seed?: number;
  /** average over the successful trials only (Wu et al.); when false and none succeeds, over all (default true) */
  requireSuccess?: boolean;
  onProgress?: (done: number, total: number, trial: RetrievalTrial) => void;
}

/** Wu et al. and semantic retrieval scores over `trials` passkey prompts built from `documents`. */
export async function runRetrievalCalibration(model: EngineModel, documents: readonly string[], options: RetrievalOptions = {}): Promise<RetrievalCalibration> {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new RangeError('retrieval calibration needs a model with a tokenizer');
  const { nLayers, nHeads, contextLength } = model.forward.dims;
  const trials = options.trials ?? 10;
  const decodeTokens = options.decodeTokens ?? 7;
  const targetTokens = options.targetTokens ?? Math.min(512, contextLength - decodeTokens - 1);
  const seed = options.seed ?? 1;
  const requireSuccess = options.requireSuccess ?? true;
  const sentences = fillerSentences(documents);
  const results: RetrievalTrial[] = [];
  for (let i = 0; i < trials; i++) {
    const prompt = buildNeedlePrompt(tokenizer, sentences, { targetTokens, depth: trialDepth(i, trials), seed: (seed * 1_000_003 + i) >>> 0 });
    const trial = await runRetrievalTrial(model, prompt, decodeTokens);
    results.push(trial);
    options.onProgress?.(i + 1, trials, trial);
  }
  const successes = results.filter((r) => r.success);
  const used = successes.length > 0 || requireSuccess ? successes : results;
  const average = (pick: (r: RetrievalTrial) => Float64Array) =>
    Array.from({ length: nLayers }, (_, l) =>
      Array.from({ length: nHeads }, (_, h) => (used.length === 0 ? 0 : used.reduce((s, r) => s + pick(r)[l * nHeads + h], 0) / used.length)),
    );
  return {
    trials,
    successes: successes.length,
    averagedOver: used.length,
    targetTokens,
    decodeTokens,
    seed,
    threshold: 0.1,
    wu: average((r) => r.wu),
    semantic: average((r) => r.semantic),
  };
}
