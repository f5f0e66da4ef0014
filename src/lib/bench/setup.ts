/**
 * What the /bench page's setup holds (every field of its form, text fields as typed) and its
 * defaults: the state (state.svelte.ts) starts from them and the link (url.ts) carries them.
 */
import type { EvalConfig } from '../worker/lab-protocol.ts';
import { defaultDrafterChoices, type DrafterChoice, type SpecTextSet } from './spec.ts';

export type EvalTaskName = EvalConfig['task'] | 'spec';

export const EVAL_TASK_NAMES: readonly EvalTaskName[] = ['ppl', 'needle', 'spec'];

export interface BenchSetup {
  task: EvalTaskName;
  /** policy ids ticked in the picker, in the order they were ticked */
  chosen: string[];
  /** more policy specs, whitespace-separated (e.g. h2o:accumulate=mean) */
  extra: string;
  budgets: string;
  seed: number;
  // perplexity
  windows: number;
  tokens: number;
  prefix: number;
  // passkey retrieval
  lengths: string;
  depths: string;
  trials: number;
  // spec task
  drafters: DrafterChoice[];
  /** the target's KV-cache policy */
  targetPolicy: string;
  /** γ values each drafter runs at; blank = each spec as given */
  gammas: string;
  specPrompts: number;
  specPromptTokens: number;
  specTokens: number;
  temperature: number;
  texts: SpecTextSet[];
}

export function benchDefaults(): BenchSetup {
  return {
    task: 'ppl',
    chosen: ['full', 'window', 'streaming', 'h2o', 'razor'],
    extra: '',
    budgets: '64, 128, 256',
    seed: 0,
    windows: 1,
    tokens: 512,
    prefix: 32,
    lengths: '256, 512',
    depths: '0, 0.5, 1',
    trials: 1,
    drafters: defaultDrafterChoices(),
    targetPolicy: 'full',
    gammas: '',
    specPrompts: 2,
    specPromptTokens: 128,
    specTokens: 64,
    temperature: 0,
    texts: ['prose', 'python-doc'],
  };
}

/** "64, 128 256" → [64, 128, 256]; throws with a readable message on anything else. */
export function parseNumberList(text: string, what: string, integer = true): number[] {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (parts.length === 0) throw new Error(`${what}: give at least one value`);
  return parts.map((p) => {
    const n = Number(p);
    if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new Error(`${what}: ${JSON.stringify(p)} is not ${integer ? 'an integer' : 'a number'}`);
    return n;
  });
}
