/**
 * Passkey retrieval with a policy active, over a depth × prompt-length grid.
 *
 * Prompts are engine/metrics/needle.ts `buildNeedlePrompt` (the training wording; filler from
 * held-out prose), built once per (length, depth, trial) from a seed that depends only on those,
 * so every policy sees the same prompts and keys. A trial:
 *
 *   1. prefill all prompt tokens but the last (chunks of 128, full attention inside the prefill,
 *      as the papers' prefill), then the policy's afterPrefill compresses the cache;
 *   2. feed the last prompt token as a step: the query that predicts the first answer token
 *      already sees only what the policy kept (the first answer token is not a free full-cache
 *      prediction);
 *   3. decode greedily — the policy acting after every step — until the answer is decided: the
 *      trimmed output starts with the key (success), stops being a prefix of it, ends (EOS), or
 *      `decodeTokens` tokens were generated. Success = the trimmed output starts with the key
 *      (stopping early never changes that verdict).
 */
import { Session, type EngineModel } from '../session.ts';
import { buildNeedlePrompt, type NeedlePrompt, type TokenDecoder } from '../metrics/needle.ts';

export interface NeedleSettings {
  /** needle depths in [0, 1] (0 = right after the intro, 1 = right before the question) */
  depths: number[];
  /** prompt lengths in tokens (each ≤ context − decodeTokens − 1) */
  lengths: number[];
  /** prompts per (length, depth) cell */
  trials: number;
  seed: number;
  /** most answer tokens decoded (default 7) */
  decodeTokens: number;
}

export interface NeedleTrialResult {
  key: string;
  output: string;
  success: boolean;
  promptTokens: number;
  /** entries per KV head when the answer was decided */
  entries: number;
  memoryRatio: number;
}

export interface NeedleCell {
  length: number;
  depth: number;
  trials: number;
  correct: number;
  accuracy: number;
  /** mean prompt tokens of the cell's prompts */
  promptTokens: number;
  /** the cell's trials: key and what the model answered */
  examples: { key: string; output: string; success: boolean }[];
}

export interface NeedleFigures {
  accuracy: number;
  correct: number;
  trials: number;
  /** cells in length-major order: lengths[0] × depths, lengths[1] × depths, … */
  cells: NeedleCell[];
  entries: { mean: number };
  memoryRatio: { mean: number };
  seconds: number;
}

const QUIET_TRACE = { attention: false, fullSteps: 0, topTokens: 0 } as const;

/** The seed of one prompt: depends on the grid coordinates only (not on the policy). */
export function promptSeed(seed: number, length: number, depth: number, trial: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [length, Math.round(depth * 1000), trial]) h = (Math.imul(h ^ v, 0x85ebca6b) + 0x1b873593) >>> 0;
  return h;
}

/** The grid's prompts, [cell][trial], cells in length-major order. */
export function needlePrompts(tokenizer: TokenDecoder, sentences: readonly string[], settings: NeedleSettings): NeedlePrompt[][] {
  const cells: NeedlePrompt[][] = [];
  for (const length of settings.lengths) {
    for (const depth of settings.depths) {
      const prompts: NeedlePrompt[] = [];
      for (let t = 0; t < settings.trials; t++) {
        prompts.push(buildNeedlePrompt(tokenizer, sentences, { targetTokens: length, depth, seed: promptSeed(settings.seed, length, depth, t) }));
      }
      cells.push(prompts);
    }
  }
  return cells;
}

/** One passkey prompt through a session with policy `spec` (see the header for the protocol). */
export async function needleTrial(model: EngineModel, prompt: NeedlePrompt, spec: string, decodeTokens = 7): Promise<NeedleTrialResult> {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new RangeError('needle trials need a model with a tokenizer');
  const ids = prompt.ids;
  if (ids.length < 2) throw new RangeError('a needle prompt has at least 2 tokens');
  const session = new Session(model, { policy: spec, sampler: { temperature: 0 }, trace: QUIET_TRACE });
  await session.prefill(ids.slice(0, -1));
  await session.step({ token: ids[ids.length - 1] });
  const eos = model.manifest.tokenizer.eos_id;
  const generated: number[] = [];
  const key = prompt.key;
  for (let i = 0; i < decodeTokens; i++) {
    const step = await session.step();
    if (step.token.id === eos) break;
    generated.push(step.token.id);
    const text = tokenizer.decode(generated, { skipSpecial: true }).trim();
    if (text.length >= key.length || (text.length > 0 && !key.startsWith(text))) break;
  }
  const output = tokenizer.decode(generated, { skipSpecial: true });
  const memory = session.memory();
  const heads = session.dims.nLayers * session.dims.nKvHeads;
  return { key, output, success: output.trim().startsWith(key), promptTokens: ids.length, entries: memory.heldEntries / heads, memoryRatio: memory.ratio };
}

/** Runs the whole grid for one policy spec over prompts from needlePrompts. */
export async function needleRun(
  model: EngineModel,
  prompts: readonly (readonly NeedlePrompt[])[],
  settings: NeedleSettings,
  spec: string,
  onTrial?: (done: number, total: number, trial: NeedleTrialResult) => void | Promise<void>,
): Promise<NeedleFigures> {
  const started = globalThis.performance.now();
  const total = prompts.reduce((a, c) => a + c.length, 0);
  const cells: NeedleCell[] = [];
  let done = 0;
  let entries = 0;
  let ratio = 0;
  let c = 0;
  for (const length of settings.lengths) {
    for (const depth of settings.depths) {
      const results: NeedleTrialResult[] = [];
      for (const prompt of prompts[c]) {
        const result = await needleTrial(model, prompt, spec, settings.decodeTokens);
        results.push(result);
        entries += result.entries;
        ratio += result.memoryRatio;
        done++;
        await onTrial?.(done, total, result);
      }
      const correct = results.filter((r) => r.success).length;
      cells.push({
        length,
        depth,
        trials: results.length,
        correct,
        accuracy: results.length ? correct / results.length : 0,
        promptTokens: results.reduce((a, r) => a + r.promptTokens, 0) / Math.max(1, results.length),
        examples: results.map((r) => ({ key: r.key, output: r.output, success: r.success })),
      });
      c++;
    }
  }
  const correct = cells.reduce((a, cell) => a + cell.correct, 0);
  return {
    accuracy: total ? correct / total : 0,
    correct,
    trials: total,
    cells,
    entries: { mean: total ? entries / total : 0 },
    memoryRatio: { mean: total ? ratio / total : 1 },
    seconds: (globalThis.performance.now() - started) / 1000,
  };
}
