/**
 * Passkey retrieval (a needle in a haystack) and the retrieval-head score of Wu et al. 2024
 * ("Retrieval Head Mechanistically Explains Long-Context Factuality", nightdessert/Retrieval_Head).
 *
 * Prompts use exactly the wording the models were trained on (training/prepare_corpus.py):
 *
 *   INTRO + filler[:at].join(" ") + ("\n" if at) + NEEDLE(key) + filler[at:].join(" ") + QUESTION
 *
 * with filler sentences drawn (seeded) from held-out prose and the prompt grown to about
 * `targetTokens`. A trial decodes greedily with the full cache and succeeds when the decoded text,
 * trimmed, starts with the key.
 *
 * Retrieval score (Wu et al., 2024, "Retrieval Head Mechanistically Explains Long-Context Factuality"; our reading for a 5-digit key): while the answer is decoded,
 * a query head scores 1/|answer tokens| each time its top-1 attended cache entry is one of the
 * key's tokens inside the needle (both mentions) and the generated token equals the token there.
 * |answer tokens| is the number of tokens of the key. The attention that produced generated token
 * g_k is the query of the token before it, so the session prefills all but the last prompt token
 * and feeds that one as a forced step: step s's attention is paired with step s+1's token.
 * Scores are averaged over the successful trials; a head with score > 0.1 is a retrieval head.
 */
import { Xoshiro128 } from '../sampling.ts';
import { Session, type EngineModel } from '../session.ts';
import type { LayerAttention } from '../trace/schema.ts';
import { bosPrefix, encodeBare, randomIndex, type TokenEncoder } from './heldout.ts';

/** What prompt building needs of a tokenizer (KvTokenizer fits). */
export interface TokenDecoder extends TokenEncoder {
  decode(ids: readonly number[]): string;
}

export const PASSKEY_INTRO = 'There is a pass key hidden inside a lot of irrelevant text. Find it and remember it.\n\n';
export const PASSKEY_QUESTION = '\nWhat is the pass key? The pass key is';
export function passkeyNeedle(key: string): string {
  return `The pass key is ${key}. Remember it. ${key} is the pass key.\n`;
}

export interface NeedlePromptOptions {
  /** prompt length to aim for, BOS included; the prompt never exceeds it */
  targetTokens: number;
  /**
   * where the needle goes in the filler, as a share of its tokens: 0 = right after the intro,
   * 1 = right before the question (placed at the nearest sentence boundary)
   */
  depth: number;
  seed: number;
  /** the pass key; default: seeded in 10000–99999 */
  key?: number;
}

export interface NeedlePrompt {
  text: string;
  ids: number[];
  key: string;
  /** requested depth */
  depth: number;
  /** filler tokens before the needle / all filler tokens (measured on the token sequence) */
  actualDepth: number;
  /** token index of the needle's first token */
  needleStart: number;
  /** token indices of the key's tokens inside the needle (both mentions) */
  keyTokenIndices: number[];
  /** the key's token ids (what a correct answer copies) */
  keyTokens: number[];
  fillerSentences: number;
}

/** All start indices where `pattern` occurs in `ids`. */
function occurrences(ids: readonly number[], pattern: readonly number[]): number[] {
  const found: number[] = [];
  outer: for (let i = 0; i + pattern.length <= ids.length; i++) {
    for (let k = 0; k < pattern.length; k++) if (ids[i + k] !== pattern[k]) continue outer;
    found.push(i);
  }
  return found;
}

function assemble(sentences: readonly string[], at: number, key: string): string {
  const before = sentences.slice(0, at).join(' ');
  const after = sentences.slice(at).join(' ');
  return PASSKEY_INTRO + before + (at > 0 ? '\n' : '') + passkeyNeedle(key) + after + PASSKEY_QUESTION;
}

/**
 * Grows a prompt from filler `sentences` drawn with `rng` until `assemble(chosen, at)` reaches
 * `targetTokens` (never past it, within one sentence of it); `at` is the sentence boundary nearest
 * to `depth` of the filler's tokens, where the caller puts its needle. Shared by the passkey
 * prompts and the held-out needle family (needle-family.ts).
 */
export function growFiller(
  tokenizer: TokenEncoder,
  sentences: readonly string[],
  rng: Xoshiro128,
  options: { targetTokens: number; depth: number },
  assemble: (chosen: readonly string[], at: number) => string,
): { text: string; ids: number[]; sentences: string[]; at: number } {
  const { targetTokens, depth } = options;
  const fixed = tokenizer.encode(assemble([], 0)).length;
  if (fixed > targetTokens) throw new RangeError(`a needle prompt needs at least ${fixed} tokens, target is ${targetTokens}`);
  // Draw sentences until their (separately counted) tokens fill the budget, then fix up exactly.
  const chosen: string[] = [];
  const lengths: number[] = [];
  let estimate = fixed;
  for (let guard = 0; estimate < targetTokens && guard < 100_000; guard++) {
    const sentence = sentences[randomIndex(rng, sentences.length)];
    chosen.push(sentence);
    lengths.push(encodeBare(tokenizer, ` ${sentence}`).length);
    estimate += lengths[lengths.length - 1];
  }
  // The needle goes to the sentence boundary nearest to `depth` of the filler's tokens.
  const boundary = (n: number) => {
    let total = 0;
    for (let i = 0; i < n; i++) total += lengths[i];
    let best = 0;
    let bestGap = Infinity;
    for (let i = 0, before = 0; i <= n; before += lengths[i] ?? 0, i++) {
      const gap = Math.abs(before - depth * total);
      if (gap < bestGap) {
        best = i;
        bestGap = gap;
      }
    }
    return best;
  };
  let at = boundary(chosen.length);
  let text = assemble(chosen, at);
  let ids = tokenizer.encode(text);
  while (ids.length > targetTokens && chosen.length > 0) {
    chosen.pop();
    lengths.pop();
    at = boundary(chosen.length);
    text = assemble(chosen, at);
    ids = tokenizer.encode(text);
  }
  return { text, ids, sentences: chosen, at };
}

/**
 * Builds one passkey prompt of at most `targetTokens` tokens (and within one filler sentence of it)
 * from `sentences` (see fillerSentences). Deterministic per seed.
 */
export function buildNeedlePrompt(tokenizer: TokenDecoder, sentences: readonly string[], options: NeedlePromptOptions): NeedlePrompt {
  const { targetTokens, depth, seed } = options;
  if (!(depth >= 0 && depth <= 1)) throw new RangeError(`needle depth must be in [0, 1], got ${depth}`);
  if (sentences.length === 0) throw new RangeError('needle prompts need filler sentences (none given)');
  const rng = new Xoshiro128(seed);
  const key = String(options.key ?? 10000 + randomIndex(rng, 90000));
  const { text, ids, sentences: chosen } = growFiller(tokenizer, sentences, rng, { targetTokens, depth }, (filler, at) => assemble(filler, at, key));

  const keyTokens = encodeBare(tokenizer, key);
  const found = occurrences(ids, keyTokens);
  if (found.length !== 2) {
    throw new RangeError(`the key ${key} should occur twice in the prompt's tokens (as ${keyTokens.join(' ')}), found ${found.length}`);
  }
  const keyTokenIndices = found.flatMap((start) => keyTokens.map((_, k) => start + k));
  // Token boundaries of intro, needle and question, found by decoded length (whitespace tokens
  // merge differently in context, so counting the parts' own tokens would be off by one or two).
  const bos = bosPrefix(tokenizer).length;
  const decodedLength = (from: number, to: number) => (to > from ? tokenizer.decode(ids.slice(from, to)).length : 0);
  const forwardTo = (from: number, chars: number) => {
    let k = from;
    while (k < ids.length && decodedLength(from, k) < chars) k++;
    return k;
  };
  const needleLead = encodeBare(tokenizer, 'The pass key is ').length;
  let needleStart = Math.max(bos, found[0] - needleLead);
  while (needleStart > bos && decodedLength(needleStart, found[0]) < 'The pass key is '.length) needleStart--;
  const fillerStart = forwardTo(bos, PASSKEY_INTRO.length);
  const needleEnd = forwardTo(needleStart, passkeyNeedle(key).length);
  let questionStart = ids.length;
  while (questionStart > needleEnd && decodedLength(questionStart, ids.length) < PASSKEY_QUESTION.length) questionStart--;
  const before = Math.max(0, needleStart - fillerStart);
  const fillerTokens = before + Math.max(0, questionStart - needleEnd);
  const actualDepth = fillerTokens === 0 ? 0 : before / fillerTokens;
  return { text, ids, key, depth, actualDepth, needleStart, keyTokenIndices, keyTokens, fillerSentences: chosen.length };
}

// ---------------------------------------------------------------------------------------------
// Retrieval-head score (pure: works on any attention in the trace's LayerAttention layout)

export interface RetrievalObservation {
  /** the token generated from this attention's query */
  token: number;
  /** [layer] attention of that query (StepTrace.attention) */
  attention: readonly LayerAttention[];
}

/**
 * Hits per query head, flattened [layer × nHeads + head]: how often the head's top-1 attended
 * entry stands for one of `keyTokenIndices` and the generated token equals `sequence` there.
 * Ties go to the earlier entry. Merged entries count when any token they stand for qualifies.
 */
export function retrievalHits(
  observations: readonly RetrievalObservation[],
  sequence: ArrayLike<number>,
  keyTokenIndices: readonly number[],
  nHeads: number,
): Float64Array {
  const nLayers = observations[0]?.attention.length ?? 0;
  const hits = new Float64Array(nLayers * nHeads);
  const keySet = new Set(keyTokenIndices);
  for (const { token, attention } of observations) {
    for (let l = 0; l < attention.length; l++) {
      const { entries, weights } = attention[l];
      const groupSize = nHeads / entries.length;
      for (let qh = 0; qh < nHeads; qh++) {
        const w = weights[qh];
        let best = 0;
        for (let j = 1; j < w.length; j++) if (w[j] > w[best]) best = j;
        const head = entries[Math.floor(qh / groupSize)];
        const origin = head.origins?.[best] ?? [head.tokens[best]];
        if (origin.some((t) => keySet.has(t) && sequence[t] === token)) hits[l * nHeads + qh] += 1;
      }
    }
  }
  return hits;
}

export interface RetrievalHeads {
  /** [layer][head] mean score over the trials */
  scores: number[][];
  trials: number;
  threshold: number;
  /** heads above the threshold, best first */
  heads: { layer: number; head: number; score: number }[];
}

/** Averages per-trial scores ([layer × nHeads + head], already divided by |answer tokens|). */
export function summarizeRetrievalHeads(trialScores: readonly ArrayLike<number>[], nLayers: number, nHeads: number, threshold = 0.1): RetrievalHeads {
  const scores = Array.from({ length: nLayers }, () => new Array<number>(nHeads).fill(0));
  for (const trial of trialScores) {
    for (let l = 0; l < nLayers; l++) for (let h = 0; h < nHeads; h++) scores[l][h] += trial[l * nHeads + h] / trialScores.length;
  }
  const heads: RetrievalHeads['heads'] = [];
  for (let l = 0; l < nLayers; l++) for (let h = 0; h < nHeads; h++) if (scores[l][h] > threshold) heads.push({ layer: l, head: h, score: scores[l][h] });
  heads.sort((a, b) => b.score - a.score || a.layer - b.layer || a.head - b.head);
  return { scores, trials: trialScores.length, threshold, heads };
}

// ---------------------------------------------------------------------------------------------
// Trials through the engine

export interface NeedleTrial {
  key: string;
  depth: number;
  actualDepth: number;
  promptTokens: number;
  /** decoded continuation */
  output: string;
  success: boolean;
  /** per-head retrieval score of this trial ([layer × nHeads + head]) */
  retrieval: Float64Array;
  /** each decoded token with the attention of the query that produced it (for other head scores) */
  observations: RetrievalObservation[];
  /** prompt + decoded token ids, indexed like the observations' entry origins */
  tokens: readonly number[];
}

/** Runs one prompt: greedy decoding with the full cache, attention captured for the retrieval score. */
export async function runNeedleTrial(model: EngineModel, prompt: NeedlePrompt, decodeTokens = 7): Promise<NeedleTrial> {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new RangeError('needle trials need a model with a tokenizer');
  const { nHeads } = model.forward.dims;
  const session = new Session(model, {
    policy: 'full',
    sampler: { temperature: 0 },
    trace: { attention: true, fullSteps: decodeTokens + 1, topTokens: 0, attentionTop: 1 },
  });
  const ids = prompt.ids;
  if (ids.length < 2) throw new RangeError('a needle prompt has at least 2 tokens');
  await session.prefill(ids.slice(0, -1));
  // The last prompt token is fed as a step so that the query predicting the first answer token is traced.
  let previous = await session.step({ token: ids[ids.length - 1] });
  const observations: RetrievalObservation[] = [];
  const generated: number[] = [];
  const eos = model.manifest.tokenizer.eos_id;
  for (let i = 0; i < decodeTokens; i++) {
    const step = await session.step();
    generated.push(step.token.id);
    if (previous.attention) observations.push({ token: step.token.id, attention: previous.attention });
    previous = step;
    if (step.token.id === eos) break;
  }
  const output = tokenizer.decode(generated, { skipSpecial: true });
  const hits = retrievalHits(observations, session.tokens, prompt.keyTokenIndices, nHeads);
  const retrieval = hits.map((h) => h / prompt.keyTokens.length);
  return {
    key: prompt.key,
    depth: prompt.depth,
    actualDepth: prompt.actualDepth,
    promptTokens: ids.length,
    output,
    success: output.trim().startsWith(prompt.key),
    retrieval,
    observations,
    tokens: session.tokens,
  };
}

export interface NeedleOptions {
  trials: number;
  targetTokens: number;
  seed: number;
  decodeTokens?: number;
  /** depth buckets of equal width over [0, 1] (default 5) */
  buckets?: number;
  onProgress?: (done: number, total: number, trial: NeedleTrial) => void;
}

export interface NeedleReport {
  trials: number;
  targetTokens: number;
  decodeTokens: number;
  accuracy: number;
  correct: number;
  /** requested-depth buckets [from, to) (the last one includes 1) */
  byDepth: { from: number; to: number; trials: number; correct: number; accuracy: number }[];
  promptTokens: { min: number; max: number; mean: number };
  retrieval: RetrievalHeads;
  /** a few trials for the report (key, depth, output) */
  examples: { key: string; depth: number; output: string; success: boolean }[];
}

/** Depth of trial i of n: evenly spread over [0, 1], both ends included. */
export function trialDepth(i: number, n: number): number {
  return n <= 1 ? 0.5 : i / (n - 1);
}

/** Runs `trials` passkey prompts spread over depths 0..1 and scores retrieval heads on the successes. */
export async function runNeedleEval(model: EngineModel, sentences: readonly string[], options: NeedleOptions): Promise<NeedleReport> {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new RangeError('needle trials need a model with a tokenizer');
  const { nLayers, nHeads } = model.forward.dims;
  const decodeTokens = options.decodeTokens ?? 7;
  const bucketCount = options.buckets ?? 5;
  const results: NeedleTrial[] = [];
  for (let i = 0; i < options.trials; i++) {
    const prompt = buildNeedlePrompt(tokenizer, sentences, {
      targetTokens: options.targetTokens,
      depth: trialDepth(i, options.trials),
      seed: (options.seed * 1_000_003 + i) >>> 0,
    });
    const trial = await runNeedleTrial(model, prompt, decodeTokens);
    results.push(trial);
    options.onProgress?.(i + 1, options.trials, trial);
  }
  const correct = results.filter((r) => r.success).length;
  const byDepth = Array.from({ length: bucketCount }, (_, b) => {
    const from = b / bucketCount;
    const to = (b + 1) / bucketCount;
    const inBucket = results.filter((r) => r.depth >= from && (r.depth < to || (b === bucketCount - 1 && r.depth <= 1)));
    const ok = inBucket.filter((r) => r.success).length;
    return { from, to, trials: inBucket.length, correct: ok, accuracy: inBucket.length ? ok / inBucket.length : 0 };
  });
  const lengths = results.map((r) => r.promptTokens);
  const successes = results.filter((r) => r.success).map((r) => r.retrieval);
  return {
    trials: results.length,
    targetTokens: options.targetTokens,
    decodeTokens,
    accuracy: results.length ? correct / results.length : 0,
    correct,
    byDepth,
    promptTokens: {
      min: Math.min(...lengths),
      max: Math.max(...lengths),
      mean: lengths.reduce((a, b) => a + b, 0) / Math.max(1, lengths.length),
    },
    retrieval: summarizeRetrievalHeads(successes, nLayers, nHeads),
    examples: results
      .filter((_, i) => i % Math.max(1, Math.floor(results.length / 5)) === 0)
      .slice(0, 5)
      .map((r) => ({ key: r.key, depth: r.depth, output: r.output, success: r.success })),
  };
}
