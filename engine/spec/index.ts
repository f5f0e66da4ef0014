/**
 * The drafter registry (docs/architecture.md, "Speculative decoding"): adding a drafter = one file
 * in drafters/ + one entry here. The spec parser, the CLI's --draft, the explorer's drafter picker,
 * /compare lanes, /bench and the tests pick it up from this list.
 */
import { DraftSpecError } from '../errors.ts';
import type { IntParamSpec } from '../policies/types.ts';
import type { Drafter, DrafterDefinition, DrafterEnv } from './drafter.ts';
import { LookupDrafter } from './drafters/lookup.ts';
import { infinigramDrafter } from './drafters/infinigram.ts';
import { omnidraftDrafter } from './drafters/omnidraft.ts';
import { onlineDrafter } from './drafters/online.ts';
import { loadDraftModel, SessionDrafter } from './drafters/session-drafter.ts';
import { formatDraftSpec, parseDraftSpec, resolveDraftParams, type DraftSpec } from './spec.ts';

const gammaParam = (fallback: number, description = 'most tokens drafted per round (γ)'): IntParamSpec => ({ kind: 'int', name: 'gamma', description, default: fallback, min: 1, max: 32 });

export const modelDrafter: DrafterDefinition = {
  id: 'model',
  label: 'Draft model',
  description: 'a small model with the target\'s tokenizer drafts γ tokens; the target verifies them in one forward',
  paper: { short: 'Leviathan et al., 2023 (ICML); Chen et al., 2023', title: 'Fast Inference from Transformers via Speculative Decoding / Accelerating Large Language Model Decoding with Speculative Sampling' },
  params: [
    gammaParam(4),
    { kind: 'text', name: 'model', description: 'draft model id (empty = the one the target\'s manifest names)', default: '', pattern: /^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, patternText: 'a model id such as kvscope-draft-2l' },
    { kind: 'policy', name: 'policy', description: 'the draft model\'s own KV-cache policy', default: 'full' },
  ],
  gammaParam: 'gamma',
  example: { spec: 'model:gamma=4', what: 'the manifest\'s draft model (model=ID for another)' },
  async create(params, env) {
    const draft = await loadDraftModel(String(params.model), env, 'model');
    return new SessionDrafter(formatDraftSpec({ id: 'model', params: { ...params, model: draft.manifest.id } }, DRAFTERS), Number(params.gamma), draft, String(params.policy));
  },
};

export const selfDrafter: DrafterDefinition = {
  id: 'self',
  label: 'Self-speculation (compressed cache)',
  description: 'the target itself drafts on a compressed KV cache and verifies on its own cache: acceptance measures how much the policy changes the model\'s predictions',
  paper: { short: 'Chen et al., 2025 (RAPID)', title: 'Long-Context Inference with Retrieval-Augmented Speculative Decoding', code: 'John-AI-Lab/RAPID' },
  params: [gammaParam(4), { kind: 'policy', name: 'policy', description: 'the draft\'s KV-cache policy (the compressed cache)', default: 'streaming:sinks=4,recent=60' }],
  gammaParam: 'gamma',
  example: { spec: 'self:gamma=4,policy=streaming(sinks=4,recent=60)', what: 'the target on a compressed cache' },
  async create(params, env) {
    return new SessionDrafter(formatDraftSpec({ id: 'self', params }, DRAFTERS), Number(params.gamma), env.target, String(params.policy));
  },
};

export const lookupDrafter: DrafterDefinition = {
  id: 'lookup',
  label: 'Prompt lookup',
  description: 'match the last n tokens (n from max_ngram down to 1) earlier in the context and propose what followed them',
  paper: { short: 'Saxena, 2023', title: 'Prompt Lookup Decoding', url: 'https://github.com/apoorvumang/prompt-lookup-decoding' },
  params: [
    { kind: 'int', name: 'max_ngram', description: 'longest suffix matched', default: 3, min: 1, max: 16 },
    { kind: 'int', name: 'k', description: 'most tokens proposed per round (γ)', default: 10, min: 1, max: 32 },
  ],
  gammaParam: 'k',
  example: { spec: 'lookup:max_ngram=3,k=10', what: 'prompt lookup: continue an earlier match' },
  async create(params, env) {
    return new LookupDrafter(formatDraftSpec({ id: 'lookup', params }, DRAFTERS), { maxNgram: Number(params.max_ngram), k: Number(params.k), eos: env.target.manifest.tokenizer.eos_id });
  },
};

export const DRAFTERS: readonly DrafterDefinition[] = [modelDrafter, lookupDrafter, infinigramDrafter, omnidraftDrafter, onlineDrafter, selfDrafter];

export function findDrafter(id: string): DrafterDefinition | undefined {
  return DRAFTERS.find((d) => d.id === id);
}

/** Parses a drafter spec against the registry (null for `none`). */
export function parseDrafter(text: string): DraftSpec | null {
  return parseDraftSpec(text, DRAFTERS);
}

/** Canonical drafter spec string. */
export function formatDrafter(spec: DraftSpec): string {
  return formatDraftSpec(spec, DRAFTERS);
}

/** A drafter from a spec string (or parsed spec); null for `none`. */
export async function createDrafter(spec: string | DraftSpec, env: DrafterEnv): Promise<Drafter | null> {
  const parsed = typeof spec === 'string' ? parseDrafter(spec) : spec;
  if (!parsed) return null;
  const definition = findDrafter(parsed.id);
  if (!definition) throw new DraftSpecError(`unknown drafter ${JSON.stringify(parsed.id)}`);
  return definition.create(resolveDraftParams(definition, parsed.params), env);
}

export type { Drafter, DrafterDefinition, DrafterEnv, DraftProposal, DraftRequest, RoundOutcome } from './drafter.ts';
export { SpeculativeDecoder, type RoundResult, type SpeculativeDecoderOptions, type SpeculativeRunResult, type SpeculativeRunOptions } from './decoder.ts';
export { SpeculativeStats, type SpeculativeSummary } from './stats.ts';
export { parseDraftSpec, formatDraftSpec, type DraftSpec } from './spec.ts';
