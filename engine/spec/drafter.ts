/**
 * What a drafter is (docs/architecture.md, "Speculative decoding"): given every token so far, it
 * proposes up to `maxTokens` next tokens and the distribution each was drawn from. The decoder
 * (decoder.ts) verifies them with the target in one forward and tells the drafter how the round
 * went, so online drafters can learn. A drafter keeps its own state (a draft session, an n-gram
 * table) and must cope with any context: the target may have been reset or stepped by hand, so a
 * drafter finds what it can reuse of the previous context instead of assuming it continues.
 */
import type { EngineModel } from '../session.ts';
import type { SamplerOptions, Xoshiro128 } from '../sampling.ts';
import type { Citation, ParamSpec, ParamValue } from '../policies/types.ts';

export interface DraftRequest {
  /** prompt + generated tokens + the token the target drew next (not yet fed to the target) */
  tokens: readonly number[];
  /** the most tokens to propose this round (≥ 1) */
  maxTokens: number;
  /** the target's sampler settings: a drafter that samples draws with them (temperature 0 = its argmax) */
  sampler: Required<SamplerOptions>;
  /** the decoder's seeded generator: every random draft draw comes from it */
  rng: Xoshiro128;
}

export interface DraftProposal {
  tokens: number[];
  /** per token, the distribution over the vocabulary it was drawn from; null = one-hot (q = 1 on the token) */
  q: (Float64Array | null)[];
  /** per token, the drafter's own probability of it (model softmax, n-gram share; 1 for one-hot drafters), for views */
  confidence: number[];
}

/** How a round went, for drafters that learn from the target (OmniDraft, online speculative decoding). */
export interface RoundOutcome {
  /** DraftRequest.tokens of the round */
  context: readonly number[];
  drafted: readonly number[];
  /** leading drafted tokens the target kept */
  accepted: number;
  /** the target's token after the accepted ones: the correction, the bonus, or the accepted token a cache change cut at */
  next: number;
  /** the target's sampling distribution at each verified position (accepted + 1 of them, fewer when cut) */
  targetProbs: readonly Float64Array[];
}

export interface Drafter {
  /** canonical drafter spec (spec.ts) */
  readonly spec: string;
  /** the most tokens a round may propose */
  readonly gamma: number;
  propose(request: DraftRequest): Promise<DraftProposal>;
  observe?(outcome: RoundOutcome): void;
  /** numbers for views and the CLI (index bytes, table entries, learned corrections …) */
  describe?(): Record<string, number | string>;
}

/** Drafter parameters: the policies' kinds, plus a model id and a nested KV-cache policy spec. */
export type DrafterParamSpec =
  | ParamSpec
  | { kind: 'text'; name: string; description: string; default: string; pattern?: RegExp; patternText?: string }
  | { kind: 'policy'; name: string; description: string; default: string };

export type DrafterParams = Readonly<Record<string, ParamValue>>;

/** What creating a drafter may need from its host (the CLI, the worker, tests). */
export interface DrafterEnv {
  target: EngineModel;
  /** a draft model by id ('' = the one the target's manifest names); absent where none can be loaded */
  loadModel?: (id: string) => Promise<EngineModel>;
  /**
   * one file of a token index (∞-gram suffix array, FM-index) by index id ('' = the shipped
   * default, static/indexes/index.json) and file name; absent where none can be loaded
   */
  loadIndex?: (id: string, file: string) => Promise<Uint8Array>;
}

export interface DrafterDefinition {
  id: string;
  label: string;
  description: string;
  paper: Citation;
  params: readonly DrafterParamSpec[];
  /** the parameter that bounds a round's draft length (γ) */
  gammaParam: string;
  /** a spec to try and what it does, for help texts, pickers and the benchmark's default run */
  example: { spec: string; what: string };
  create(params: DrafterParams, env: DrafterEnv): Promise<Drafter>;
}
