/**
 * The /bench speculative-decoding task's setup and layout helpers (no model math: the numbers are
 * the report's, engine/eval/spec.ts): the drafter picker's defaults, the plan of a setup (the same
 * checks as `kvscope eval --task spec` before it loads a model), table rows and chart bars.
 */
import { DraftSpecError, PolicySpecError } from '../../../engine/errors.ts';
import { expandSpecRuns, type SpecRun } from '../../../engine/eval/spec-runs.ts';
import { SPEC_TEXT_SETS, type SpecTextSet } from '../../../engine/eval/spec-texts.ts';
import type { SpecConfig, SpecReport, SpecRow, SpecSettings } from '../../../engine/eval/spec.ts';
import { formatPolicyChain, parsePolicyChain } from '../../../engine/policies/spec.ts';
import { DRAFTERS } from '../../../engine/spec/index.ts';

export { SPEC_TEXT_SETS, type SpecTextSet };

/** One drafter of the picker: a registered drafter id, its editable spec, and whether it runs. */
export interface DrafterChoice {
  id: string;
  spec: string;
  on: boolean;
}

/** The spec each drafter starts with in the picker (registry order): the registry's example (DrafterDefinition.example). */
export const DRAFTER_EXAMPLES: Readonly<Record<string, string>> = Object.fromEntries(DRAFTERS.map((d) => [d.id, d.example.spec]));

/** Chosen at first: a draft model and prompt lookup. */
const DEFAULT_ON = new Set(['model', 'lookup']);

export function defaultDrafterChoices(): DrafterChoice[] {
  return DRAFTERS.map((d) => ({ id: d.id, spec: DRAFTER_EXAMPLES[d.id] ?? d.id, on: DEFAULT_ON.has(d.id) }));
}

/** One colour per drafter id (Okabe–Ito), stable across the charts. */
const DRAFTER_COLORS: Readonly<Record<string, string>> = {
  model: '#0072B2',
  lookup: '#E69F00',
  infinigram: '#009E73',
  omnidraft: '#CC79A7',
  online: '#D55E00',
  self: '#56B4E9',
};

export function drafterColor(id: string): string {
  return DRAFTER_COLORS[id] ?? '#666666';
}

/** The setup of the spec task as the page holds it (text fields as typed). */
export interface SpecSetup {
  drafters: readonly DrafterChoice[];
  /** the target's KV-cache policy spec */
  policy: string;
  /** γ values, comma/space separated; blank = each spec as given */
  gammas: string;
  prompts: number;
  promptTokens: number;
  tokens: number;
  temperature: number;
  seed: number;
  texts: readonly SpecTextSet[];
}

export type SpecPlan = { config: SpecConfig; runs: SpecRun[] } | { problem: string };

function listOfIntegers(text: string, what: string): number[] {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  return parts.map((p) => {
    const n = Number(p);
    if (!Number.isInteger(n)) throw new Error(`${what}: ${JSON.stringify(p)} is not an integer`);
    return n;
  });
}

/**
 * The evaluation a setup describes (texts in the registry's order), or the first problem with it:
 * the checks the CLI makes before loading a model (drafter specs, γ, the policy); the worker
 * checks the rest (lengths against the model's context, a policy that needs calibration).
 */
export function planSpec(setup: SpecSetup): SpecPlan {
  try {
    const drafts = setup.drafters.filter((d) => d.on).map((d) => d.spec.trim());
    if (drafts.length === 0) return { problem: 'choose at least one drafter' };
    const empty = setup.drafters.find((d) => d.on && d.spec.trim() === '');
    if (empty) return { problem: `${empty.id}: give a spec (e.g. ${DRAFTER_EXAMPLES[empty.id] ?? empty.id})` };
    const texts = SPEC_TEXT_SETS.filter((t) => setup.texts.includes(t));
    if (texts.length === 0) return { problem: 'choose at least one text set' };
    const gammaList = listOfIntegers(setup.gammas, 'γ values');
    const gammas = gammaList.length > 0 ? gammaList : null;
    const policy = formatPolicyChain(parsePolicyChain(setup.policy.trim() || 'full'));
    const runs = expandSpecRuns(drafts, gammas);
    for (const [name, value] of [
      ['prompts', setup.prompts],
      ['prompt tokens', setup.promptTokens],
      ['tokens', setup.tokens],
    ] as const) {
      if (!Number.isInteger(value) || value < 1) return { problem: `${name} must be a positive integer` };
    }
    if (!(Number.isFinite(setup.temperature) && setup.temperature >= 0)) return { problem: 'temperature must be a number ≥ 0 (0 = greedy)' };
    const settings: Partial<SpecSettings> = {
      prompts: setup.prompts,
      promptTokens: setup.promptTokens,
      tokens: setup.tokens,
      temperature: setup.temperature,
      seed: setup.seed,
      policy,
      texts: [...texts],
      gammas,
    };
    return { config: { drafts, settings }, runs };
  } catch (error) {
    if (error instanceof DraftSpecError) return { problem: `drafter: ${error.message}` };
    if (error instanceof PolicySpecError) return { problem: `target policy: ${error.message}` };
    return { problem: (error as Error).message };
  }
}

/** What an empty `model=` (a drafter's draft model id left to the target's manifest) reads as in the plan. */
export const MANIFEST_DRAFT = '‹manifest’s draft›';

/**
 * A run's canonical spec as the plan line shows it: the same string the table will show, except
 * that a draft model id left empty (`model=`: the one the target's manifest names, only known once
 * the run has resolved it) reads `model=‹manifest’s draft›`.
 */
export function planSpecText(spec: string): string {
  let depth = 0;
  let out = '';
  for (let i = 0; i < spec.length; i++) {
    const c = spec[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    out += c;
    if (depth === 0 && c === '=' && /(^|[:,])model$/.test(spec.slice(0, i)) && (i + 1 === spec.length || spec[i + 1] === ',')) out += MANIFEST_DRAFT;
  }
  return out;
}

/** A table row: one drafter run on one text set, with the drafter id for its colour. */
export interface SpecTableRow {
  id: string;
  row: SpecRow;
}

/** The report's rows in its order (records as given, each run's text sets in order). */
export function specTableRows(report: SpecReport): SpecTableRow[] {
  return report.records.flatMap((record) => record.rows.map((row) => ({ id: record.id, row })));
}

/** "yes" / "NO" / "—" (sampling: not compared), as the CLI writes it. */
export function identicalText(value: boolean | null): string {
  return value === null ? '—' : value ? 'yes' : 'NO';
}

/** A chart bar: one drafter run on one text set. */
export interface SpecBar {
  /** the run's canonical spec (the x-axis group) */
  spec: string;
  id: string;
  text: SpecTextSet;
  value: number;
}

/** Bars of one metric: per run (spec) and text set, in the report's order. */
export function specBars(report: SpecReport, metric: 'target_calls_per_token' | 'speedup' | 'acceptance_rate'): SpecBar[] {
  return specTableRows(report).map(({ id, row }) => ({ spec: row.spec, id, text: row.text, value: row[metric] }));
}
