/**
 * The /bench page's link: the query string carries the whole setup of the form (never results),
 * so opening it sets the page up as it was; it never starts an evaluation by itself (one can take
 * minutes) — the page asks for Run as usual. Every field is written, defaults included, so a link
 * keeps its meaning when the page's defaults change. Example (one line in the address):
 *
 *   /bench?v=1&task=needle&policies=full,window,h2o&extra=h2o%3Aaccumulate%3Dmean&budgets=64%2C+128
 *     &seed=0&windows=1&tokens=512&prefix=32&lengths=256%2C+512&depths=0%2C+0.5%2C+1&trials=1
 *     &drafters=model,lookup&draft.model=model%3Agamma%3D4&draft.lookup=lookup&…
 *     &target=full&gammas=&spec-prompts=2&spec-prompt-tokens=128&spec-tokens=64&temperature=0
 *     &texts=prose,python-doc
 *
 * `policies` are the ticked policy ids in order (empty: none); `drafters` the ticked drafters of
 * the spec task's picker; `draft.<id>` the spec typed into drafter `<id>`'s row. List fields typed
 * as text (budgets, lengths, depths, gammas, extra) travel as typed.
 *
 * Decoding never throws: a field that is malformed is named in a problem message and takes its
 * default, the rest of the link stands; a link of another (newer) version is refused politely and
 * leaves the whole setup at its defaults. Values are capped in length.
 */
import { looksLikePolicySpec, splitPolicyList } from '../../../engine/policies/spec.ts';
import { POLICIES } from '../../../engine/policies/index.ts';
import { DRAFTERS } from '../../../engine/spec/index.ts';
import { drafterProblem } from '../compare/url.ts';
import { EVAL_TASK_NAMES, parseNumberList, type BenchSetup, type EvalTaskName } from './setup.ts';
import { SPEC_TEXT_SETS, type DrafterChoice, type SpecTextSet } from './spec.ts';

export const BENCH_URL_VERSION = 1;
/** longest list typed as text a link carries (budgets, lengths, depths, γ values) */
const MAX_LIST_CHARS = 200;
/** longest policy text a link carries (the extra specs; the target policy) */
const MAX_SPECS_CHARS = 2000;
/** longest drafter spec (as compare/url.ts) */
const MAX_DRAFTER_CHARS = 400;
/** the largest token count a link asks for (the worker checks it against the model's context) */
const MAX_TOKENS = 1 << 16;

/** The query string (without "?") of a setup. */
export function encodeBenchQuery(setup: BenchSetup): string {
  const q = new URLSearchParams();
  q.set('v', String(BENCH_URL_VERSION));
  q.set('task', setup.task);
  q.set('policies', setup.chosen.join(','));
  q.set('extra', setup.extra);
  q.set('budgets', setup.budgets);
  q.set('seed', String(setup.seed));
  q.set('windows', String(setup.windows));
  q.set('tokens', String(setup.tokens));
  q.set('prefix', String(setup.prefix));
  q.set('lengths', setup.lengths);
  q.set('depths', setup.depths);
  q.set('trials', String(setup.trials));
  q.set('drafters', setup.drafters.filter((d) => d.on).map((d) => d.id).join(','));
  for (const d of setup.drafters) q.set(`draft.${d.id}`, d.spec);
  q.set('target', setup.targetPolicy);
  q.set('gammas', setup.gammas);
  q.set('spec-prompts', String(setup.specPrompts));
  q.set('spec-prompt-tokens', String(setup.specPromptTokens));
  q.set('spec-tokens', String(setup.specTokens));
  q.set('temperature', String(setup.temperature));
  q.set('texts', setup.texts.join(','));
  return q.toString();
}

/** Reads one field: absent → the default; `read` answers the value or the problem (named by the caller). */
class FieldReader {
  readonly problems: string[] = [];
  constructor(private readonly q: URLSearchParams) {}

  field<T>(name: string, fallback: T, read: (raw: string) => T | { problem: string }): T {
    const raw = this.q.get(name);
    if (raw === null) return fallback;
    const value = read(raw);
    if (isProblem(value)) {
      this.problems.push(`ignored ${name}=${JSON.stringify(raw.slice(0, 60))} in the link: ${value.problem}`);
      return fallback;
    }
    return value;
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    return this.field(name, fallback, (raw) => {
      const n = raw.trim() === '' ? NaN : Number(raw);
      return Number.isInteger(n) && n >= min && n <= max ? n : { problem: `not an integer in ${min}..${max}` };
    });
  }
}

function isProblem(value: unknown): value is { problem: string } {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && 'problem' in value && Object.keys(value).length === 1;
}

function capped(raw: string, max: number): { problem: string } | null {
  return raw.length > max ? { problem: `longer than ${max} characters` } : null;
}

/** A number list typed as text (kept as typed when it reads); `check` refuses a value. */
function numberList(integer: boolean, check: (n: number) => string | null, allowEmpty = false) {
  return (raw: string): string | { problem: string } => {
    const long = capped(raw, MAX_LIST_CHARS);
    if (long) return long;
    if (allowEmpty && raw.trim() === '') return raw;
    try {
      for (const n of parseNumberList(raw, 'list', integer)) {
        const problem = check(n);
        if (problem) return { problem };
      }
      return raw;
    } catch (error) {
      return { problem: (error as Error).message.replace(/^list: /, '') };
    }
  };
}

/** A comma list of names from `known` (each once), kept in the link's order. */
function nameList<T extends string>(known: readonly T[], what: string) {
  return (raw: string): T[] | { problem: string } => {
    const long = capped(raw, MAX_SPECS_CHARS);
    if (long) return long;
    const names = raw.split(',').map((s) => s.trim()).filter(Boolean);
    const unknown = names.filter((n) => !(known as readonly string[]).includes(n));
    if (unknown.length) return { problem: `unknown ${what} ${unknown.slice(0, 3).map((n) => JSON.stringify(n.slice(0, 40))).join(', ')} (known: ${known.join(', ')})` };
    if (new Set(names).size !== names.length) return { problem: `a ${what} is listed twice` };
    return names as T[];
  };
}

function policyText(allowEmpty: boolean) {
  return (raw: string): string | { problem: string } => {
    const long = capped(raw, MAX_SPECS_CHARS);
    if (long) return long;
    if (raw.trim() === '') return allowEmpty ? raw : { problem: 'empty' };
    const bad = splitPolicyList(raw).find((spec) => !looksLikePolicySpec(spec));
    return bad === undefined ? raw : { problem: `${JSON.stringify(bad.slice(0, 60))} is not a policy spec` };
  };
}

const POLICY_IDS = POLICIES.map((p) => p.id);
const DRAFTER_IDS = DRAFTERS.map((d) => d.id);

/**
 * Reads a setup from a query string (see the header). `present` says whether the link carried any
 * setup field at all (a bare /bench is not a link).
 */
export function decodeBenchQuery(search: string, defaults: BenchSetup): { setup: BenchSetup; problems: string[]; present: boolean } {
  const q = new URLSearchParams(search.startsWith('?') ? search.slice(1) : search);
  const present = [...q.keys()].some((key) => key !== 'v');
  const fresh = (): BenchSetup => ({ ...defaults, chosen: [...defaults.chosen], drafters: defaults.drafters.map((d) => ({ ...d })), texts: [...defaults.texts] });
  const version = q.get('v');
  if (version !== null && version !== String(BENCH_URL_VERSION)) {
    const n = Number(version);
    const problem =
      Number.isInteger(n) && n > BENCH_URL_VERSION
        ? `this link was made by a newer kvscope (bench link version ${n}; this page reads version ${BENCH_URL_VERSION}): reload the app to open it — the setup stays at its defaults`
        : `the link's version ${JSON.stringify(version.slice(0, 20))} is not one this page reads (version ${BENCH_URL_VERSION}): the setup stays at its defaults`;
    return { setup: fresh(), problems: [problem], present };
  }
  const r = new FieldReader(q);
  const d = fresh();
  const positive = (n: number) => (n >= 1 ? null : 'not a positive integer');
  const onDrafters = r.field('drafters', null as string[] | null, nameList(DRAFTER_IDS, 'drafter'));
  const drafters: DrafterChoice[] = d.drafters.map((choice) => ({
    ...choice,
    on: onDrafters ? onDrafters.includes(choice.id) : choice.on,
    spec: r.field(`draft.${choice.id}`, choice.spec, (raw) => {
      const problem = raw.length > MAX_DRAFTER_CHARS ? `longer than ${MAX_DRAFTER_CHARS} characters` : drafterProblem(raw.trim());
      return problem ? { problem } : raw;
    }),
  }));
  for (const key of new Set(q.keys())) {
    const id = /^draft\.(.*)$/s.exec(key)?.[1];
    if (id !== undefined && !DRAFTER_IDS.includes(id)) r.problems.push(`ignored ${JSON.stringify(key.slice(0, 60))} in the link: no drafter ${JSON.stringify(id.slice(0, 30))} (known: ${DRAFTER_IDS.join(', ')})`);
  }
  const setup: BenchSetup = {
    task: r.field('task', d.task, (raw) => ((EVAL_TASK_NAMES as readonly string[]).includes(raw) ? (raw as EvalTaskName) : { problem: `the tasks are ${EVAL_TASK_NAMES.join(', ')}` })),
    chosen: r.field('policies', d.chosen, nameList(POLICY_IDS, 'policy')),
    extra: r.field('extra', d.extra, policyText(true)),
    budgets: r.field('budgets', d.budgets, numberList(true, positive)),
    seed: r.integer('seed', d.seed, 0, 0xffffffff),
    windows: r.integer('windows', d.windows, 1, 16),
    tokens: r.integer('tokens', d.tokens, 16, MAX_TOKENS),
    prefix: r.integer('prefix', d.prefix, 1, MAX_TOKENS),
    lengths: r.field('lengths', d.lengths, numberList(true, positive)),
    depths: r.field('depths', d.depths, numberList(false, (n) => (n >= 0 && n <= 1 ? null : `${n} is not a depth in [0, 1]`))),
    trials: r.integer('trials', d.trials, 1, 100),
    drafters,
    targetPolicy: r.field('target', d.targetPolicy, policyText(true)),
    gammas: r.field('gammas', d.gammas, numberList(true, positive, true)),
    specPrompts: r.integer('spec-prompts', d.specPrompts, 1, 64),
    specPromptTokens: r.integer('spec-prompt-tokens', d.specPromptTokens, 2, MAX_TOKENS),
    specTokens: r.integer('spec-tokens', d.specTokens, 1, MAX_TOKENS),
    temperature: r.field('temperature', d.temperature, (raw) => {
      const t = raw.trim() === '' ? NaN : Number(raw);
      return Number.isFinite(t) && t >= 0 && t <= 10 ? t : { problem: 'not a temperature in 0..10 (0 = greedy)' };
    }),
    texts: r.field('texts', d.texts, nameList<SpecTextSet>(SPEC_TEXT_SETS, 'text set')),
  };
  return { setup, problems: r.problems, present };
}
