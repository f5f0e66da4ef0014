/**
 * Draft acceptance under greedy verification (speculative decoding, Leviathan et al. 2023 /
 * Chen et al. 2023, "Accelerating Large Language Model Decoding with Speculative Sampling").
 *
 * The target decodes greedily; the draft, teacher-forced on the same prompt + target tokens,
 * "accepts" position i iff its argmax equals the target's token i. α is the share of accepted
 * positions. Because greedy verification accepts a proposal exactly when it equals the target's
 * argmax, and accepted proposals are the target's own tokens, these teacher-forced flags are all
 * that speculative decoding with draft length γ would see: a block starting at i accepts the run
 * of consecutive accepted flags (at most γ) and the target adds one token (the correction, or the
 * bonus token when all γ were accepted). `simulateGreedyVerification` replays those blocks.
 */
import { argmax } from '../sampling.ts';
import { Session, type EngineModel } from '../session.ts';

/** acceptance flag per position: draft argmax === target token */
export function acceptanceFlags(targetTokens: readonly number[], draftPredictions: readonly number[]): boolean[] {
  if (targetTokens.length !== draftPredictions.length) {
    throw new RangeError(`acceptance needs as many draft predictions as target tokens (${draftPredictions.length} vs ${targetTokens.length})`);
  }
  return targetTokens.map((t, i) => draftPredictions[i] === t);
}

export interface SpeculativeStats {
  gamma: number;
  /** verification blocks (= target forwards) simulated */
  blocks: number;
  /** tokens those blocks produced (accepted drafts + one target token each) */
  tokens: number;
  /** draft tokens proposed (γ per block) and accepted */
  proposed: number;
  accepted: number;
  /** tokens per target forward, bonus/correction token included */
  meanAcceptedLength: number;
  /** 1 / meanAcceptedLength */
  targetCallsPerToken: number;
  /** positions at the end of a sequence that could not fill a decided block (not counted) */
  tailDropped: number;
}

/**
 * Replays greedy verification with draft length γ over acceptance-flag sequences. A block
 * starting at p proposes γ tokens: it accepts k = the run of true flags from p (≤ γ)
 * and yields k + 1 tokens; the next block starts at p + k + 1. A block whose outcome depends on
 * flags past the end of the sequence is not counted (its positions are reported as tailDropped).
 */
export function simulateGreedyVerification(sequences: readonly (readonly boolean[])[], gamma: number): SpeculativeStats {
  if (!Number.isInteger(gamma) || gamma < 1) throw new RangeError(`gamma must be an integer ≥ 1, got ${gamma}`);
  let blocks = 0;
  let tokens = 0;
  let proposed = 0;
  let accepted = 0;
  let tailDropped = 0;
  for (const flags of sequences) {
    const n = flags.length;
    let p = 0;
    while (p < n) {
      let k = 0;
      while (k < gamma && p + k < n && flags[p + k]) k++;
      const decided = k === gamma || p + k < n; // all γ accepted, or a rejection was seen
      if (!decided) break;
      blocks++;
      tokens += k + 1;
      accepted += k;
      proposed += gamma;
      p += k + 1;
    }
    tailDropped += Math.max(0, n - p);
  }
  return {
    gamma,
    blocks,
    tokens,
    proposed,
    accepted,
    meanAcceptedLength: blocks ? tokens / blocks : 0,
    targetCallsPerToken: tokens ? blocks / tokens : 0,
    tailDropped,
  };
}

/** Expected tokens per target forward with i.i.d. acceptance α: (1 − α^{γ+1}) / (1 − α). */
export function expectedAcceptedLength(alpha: number, gamma: number): number {
  if (alpha >= 1) return gamma + 1;
  return (1 - alpha ** (gamma + 1)) / (1 - alpha);
}

export interface AcceptanceOptions {
  /** greedy target tokens per prompt (default 32) */
  tokens?: number;
  /** draft length for the simulation (default 4) */
  gamma?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface AcceptanceReport {
  prompts: number;
  promptTokens: number;
  tokensPerPrompt: number;
  /** per-token acceptance rate over all positions */
  alpha: number;
  /** acceptance rate per generated position (0-based) */
  byPosition: number[];
  speculative: SpeculativeStats;
  /** (1 − α^{γ+1}) / (1 − α) for comparison (assumes independent positions) */
  expectedAcceptedLength: number;
}

/** Target greedy continuation and the draft's teacher-forced argmax at every position. */
export async function draftAgreement(target: EngineModel, draft: EngineModel, prompt: readonly number[], tokens: number): Promise<{ target: number[]; draft: number[] }> {
  const quiet = { attention: false, fullSteps: 0, topTokens: 0 };
  const t = new Session(target, { policy: 'full', sampler: { temperature: 0 }, trace: quiet });
  await t.prefill(prompt);
  const result = await t.run(tokens, { stopAtEos: false });
  const targetTokens = result.steps.map((s) => s.token.id);

  // Teacher forcing in one prefill: row (prompt.length − 1 + i) predicts target token i.
  const d = new Session(draft, { policy: 'full', trace: quiet });
  const fed = [...prompt, ...targetTokens.slice(0, -1)];
  const { logits } = await d.prefill(fed, { allLogits: true });
  const vocab = draft.forward.dims.vocabSize;
  const predictions = targetTokens.map((_, i) => {
    const row = prompt.length - 1 + i;
    return argmax(logits!.subarray(row * vocab, (row + 1) * vocab));
  });
  return { target: targetTokens, draft: predictions };
}

/** α and γ-block statistics of `draft` against `target` over held-out prompts. */
export async function measureDraftAcceptance(
  target: EngineModel,
  draft: EngineModel,
  prompts: readonly (readonly number[])[],
  options: AcceptanceOptions = {},
): Promise<AcceptanceReport> {
  const tokens = options.tokens ?? 32;
  const gamma = options.gamma ?? 4;
  if (target.forward.dims.vocabSize !== draft.forward.dims.vocabSize) {
    throw new RangeError(`draft vocabulary (${draft.forward.dims.vocabSize}) differs from the target's (${target.forward.dims.vocabSize})`);
  }
  const sequences: boolean[][] = [];
  for (let i = 0; i < prompts.length; i++) {
    const { target: t, draft: d } = await draftAgreement(target, draft, prompts[i], tokens);
    sequences.push(acceptanceFlags(t, d));
    options.onProgress?.(i + 1, prompts.length);
  }
  const total = sequences.reduce((a, s) => a + s.length, 0);
  const acceptedCount = sequences.reduce((a, s) => a + s.filter(Boolean).length, 0);
  const alpha = total ? acceptedCount / total : 0;
  const byPosition = Array.from({ length: tokens }, (_, i) => {
    const at = sequences.filter((s) => i < s.length);
    return at.length ? at.filter((s) => s[i]).length / at.length : 0;
  });
  return {
    prompts: prompts.length,
    promptTokens: prompts[0]?.length ?? 0,
    tokensPerPrompt: tokens,
    alpha,
    byPosition,
    speculative: simulateGreedyVerification(sequences, gamma),
    expectedAcceptedLength: expectedAcceptedLength(alpha, gamma),
  };
}
