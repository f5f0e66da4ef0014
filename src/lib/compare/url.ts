/**
 * The /compare page's link: the query string carries the inputs (never the outputs) — the lanes'
 * policy specs, the prompt, the sampler and its seed — so opening the link reproduces the run
 * (runs are deterministic). Example:
 *
 *   /compare?v=1&lane=full&lane=window%3Asize%3D32&prompt=Once+upon&seed=1&t=0.8&k=40&p=0.95
 *
 * A lane may decode speculatively (engine/spec/, engine/lanes.ts): its `lane` value is then the
 * policy, a `|` and a drafter spec (docs/cli.md, "--draft"), spaces around `|` optional:
 *
 *   lane=full                                   plain decoding, full cache
 *   lane=full | lookup                          the same with prompt lookup (its defaults)
 *   lane=window:size=32 | model:gamma=4         a draft model drafts 4 tokens per round
 *   lane=full | self:gamma=4,policy=window(size=32)   self-speculation on a compressed cache
 *
 *   /compare?v=1&lane=full&lane=full+%7C+lookup%3Amax_ngram%3D3%2Ck%3D10&prompt=…
 *
 * Policy specs never contain `|`, so every link without one means what it did (plain lanes), and
 * `| none` is a plain lane too. The drafter part is parsed by the engine's drafter registry here
 * (a bad one is dropped from the lane — the lane stays, plain — with a problem message saying
 * why); a draft model that cannot be loaded is reported by the worker when the lanes start.
 *
 * The run travels too (optional fields, added within version 1: a link without them means what it
 * always did — the lanes set up, nothing decoded):
 *
 *   steps=6        the tokens every lane decoded (only once some are): opening the link runs every
 *                  lane to it by itself, with the setup the lanes ran with
 *   at=3           the selected step (0-based; absent: follow the newest step)
 *   run=32         the Run button's length (the page's setting; decodes nothing by itself)
 *
 *   /compare?v=1&lane=full&lane=window%3Asize%3D32&prompt=Once+upon&seed=1&t=0&k=40&p=0.95&steps=6&at=3
 *
 * Decoding validates every field and falls back to the defaults (with a problem message) for what
 * is missing or malformed; lane specs are checked for shape here and against the model's policies
 * by the worker when the lanes start.
 */
import { looksLikePolicySpec } from '../../../engine/policies/spec.ts';
import { parseDrafter } from '../../../engine/spec/index.ts';
import type { SamplerSettings } from '../worker/protocol.ts';

export const COMPARE_URL_VERSION = 1;
export const MIN_LANES = 2;
export const MAX_LANES = 4;
/** longest prompt a link carries (characters); longer prompts are cut with a problem message */
export const MAX_PROMPT_CHARS = 6000;
/** longest lane spec a link carries: room for a composition of three of the longest canonical specs (~110 characters each) */
const MAX_SPEC_CHARS = 600;
/** longest drafter spec a lane carries (a self drafter with a composed draft policy) */
const MAX_DRAFTER_CHARS = 400;
/** the longest run a link asks for (the worker stops earlier when the context is full) */
export const MAX_LINK_STEPS = 4096;
/** between a lane's policy and its drafter */
export const DRAFTER_SEPARATOR = '|';

export interface CompareSetup {
  prompt: string;
  sampler: SamplerSettings;
  /** lane spec per lane, 2–4: a policy spec, optionally ` | drafter spec` (laneSpec / splitLaneSpec) */
  lanes: string[];
  /** the steps every lane decoded (see the header); absent: nothing is decoded when the link opens */
  steps?: number;
  /** the selected step, 0-based (< steps); absent or null: follow the newest */
  at?: number | null;
  /** the Run button's length */
  run?: number;
}

/** A lane's parts: the policy spec and the drafter spec (null: plain decoding). */
export interface LaneParts {
  policy: string;
  drafter: string | null;
}

/** `window:size=32 | lookup` → { policy: 'window:size=32', drafter: 'lookup' }; no `|` (or `| none`): drafter null. */
export function splitLaneSpec(text: string): LaneParts {
  const at = text.indexOf(DRAFTER_SEPARATOR);
  if (at < 0) return { policy: text.trim(), drafter: null };
  const drafter = text.slice(at + 1).trim();
  return { policy: text.slice(0, at).trim(), drafter: drafter === '' || drafter === 'none' ? null : drafter };
}

/** The lane spec of a policy and a drafter (none: the policy alone, as every link before drafters). */
export function laneSpec(policy: string, drafter: string | null | undefined): string {
  const d = drafter?.trim();
  return d && d !== 'none' ? `${policy} ${DRAFTER_SEPARATOR} ${d}` : policy;
}

/** The engine's message for a drafter spec it refuses, null when it parses (or is empty / none). */
export function drafterProblem(text: string): string | null {
  if (text.length > MAX_DRAFTER_CHARS) return `a drafter spec is at most ${MAX_DRAFTER_CHARS} characters`;
  if (text.includes(DRAFTER_SEPARATOR)) return `a drafter spec has no "${DRAFTER_SEPARATOR}"`;
  try {
    parseDrafter(text);
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

/** The query string (without "?") for a setup. */
export function encodeCompareQuery(setup: CompareSetup): string {
  const q = new URLSearchParams();
  q.set('v', String(COMPARE_URL_VERSION));
  for (const lane of setup.lanes) q.append('lane', lane);
  q.set('prompt', setup.prompt.slice(0, MAX_PROMPT_CHARS));
  q.set('seed', String(setup.sampler.seed));
  q.set('t', String(setup.sampler.temperature));
  q.set('k', String(setup.sampler.topK));
  q.set('p', String(setup.sampler.topP));
  if (setup.steps !== undefined) q.set('steps', String(setup.steps));
  if (setup.at !== undefined && setup.at !== null) q.set('at', String(setup.at));
  if (setup.run !== undefined) q.set('run', String(setup.run));
  return q.toString();
}

function numberField(q: URLSearchParams, name: string, what: string, ok: (v: number) => boolean, fallback: number, problems: string[]): number {
  const raw = q.get(name);
  if (raw === null) return fallback;
  const value = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(value) || !ok(value)) {
    problems.push(`ignored ${what} ${JSON.stringify(raw)} in the link`);
    return fallback;
  }
  return value;
}

/**
 * Reads a setup from a query string. Fields missing from the link take `defaults`; malformed ones
 * too, with a line in `problems`. `present` says whether the link carried any lanes at all.
 */
export function decodeCompareQuery(search: string, defaults: CompareSetup): { setup: CompareSetup; problems: string[]; present: boolean } {
  const q = new URLSearchParams(search.startsWith('?') ? search.slice(1) : search);
  const problems: string[] = [];
  const version = q.get('v');
  if (version !== null && version !== String(COMPARE_URL_VERSION)) problems.push(`the link has version ${version}; this page reads version ${COMPARE_URL_VERSION}`);
  const given = q.getAll('lane').map((s) => s.trim());
  const lanes: string[] = [];
  for (const spec of given) {
    const { policy, drafter } = splitLaneSpec(spec);
    if (policy.length > MAX_SPEC_CHARS || !looksLikePolicySpec(policy)) problems.push(`ignored the lane ${JSON.stringify(spec.slice(0, 60))}: not a policy spec`);
    else if (lanes.length >= MAX_LANES) problems.push(`ignored lanes past the ${MAX_LANES}th`);
    else if (drafter === null) lanes.push(spec.includes(DRAFTER_SEPARATOR) ? policy : spec);
    else {
      const problem = drafterProblem(drafter);
      if (problem) problems.push(`lane ${lanes.length + 1} (${policy}) decodes without a drafter: ignored the drafter ${JSON.stringify(drafter.slice(0, 60))}: ${problem}`);
      lanes.push(problem ? policy : laneSpec(policy, drafter));
    }
  }
  let finalLanes = lanes;
  if (given.length > 0 && lanes.length < MIN_LANES) {
    problems.push(`the link has ${lanes.length} usable lane(s); compare needs ${MIN_LANES}–${MAX_LANES}, so the default lanes fill in`);
    finalLanes = [...lanes, ...defaults.lanes].slice(0, Math.max(MIN_LANES, lanes.length));
  } else if (given.length === 0) {
    finalLanes = [...defaults.lanes];
  }
  let prompt = q.get('prompt') ?? defaults.prompt;
  if (prompt.length > MAX_PROMPT_CHARS) {
    problems.push(`the prompt in the link was cut to ${MAX_PROMPT_CHARS} characters`);
    prompt = prompt.slice(0, MAX_PROMPT_CHARS);
  }
  const d = defaults.sampler;
  const sampler: SamplerSettings = {
    seed: numberField(q, 'seed', 'seed', (v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff, d.seed, problems),
    temperature: numberField(q, 't', 'temperature', (v) => v >= 0 && v <= 10, d.temperature, problems),
    topK: numberField(q, 'k', 'top-k', (v) => Number.isInteger(v) && v >= 0, d.topK, problems),
    topP: numberField(q, 'p', 'top-p', (v) => v > 0 && v <= 1, d.topP, problems),
  };
  const setup: CompareSetup = { prompt, sampler, lanes: finalLanes };
  const steps = numberField(q, 'steps', 'run length (steps)', (v) => Number.isInteger(v) && v >= 1 && v <= MAX_LINK_STEPS, NaN, problems);
  if (!Number.isNaN(steps)) setup.steps = steps;
  const run = numberField(q, 'run', 'Run length (run)', (v) => Number.isInteger(v) && v >= 1 && v <= MAX_LINK_STEPS, NaN, problems);
  if (!Number.isNaN(run)) setup.run = run;
  const at = numberField(q, 'at', 'selected step (at)', (v) => Number.isInteger(v) && v >= 0, NaN, problems);
  if (!Number.isNaN(at)) {
    if (setup.steps === undefined) problems.push(`ignored the selected step ${at} in the link: it decodes no steps`);
    else if (at >= setup.steps) problems.push(`ignored the selected step ${at} in the link: it decodes ${setup.steps} step(s), numbered from 0`);
    else setup.at = at;
  }
  return { setup, problems, present: given.length > 0 };
}
