/**
 * Budgets for evaluations: one number B — the entries a KV head may hold — turned into each
 * policy's own parameters, so that "h2o at 128" and "window at 128" hold about the same memory.
 *
 * | policy      | parameters set from B                          | what B bounds |
 * |-------------|------------------------------------------------|---------------|
 * | full        | — (not budgeted: evaluated once)               | nothing       |
 * | window      | size = B                                       | every head    |
 * | streaming   | sinks = 4, recent = B − 4                      | every head    |
 * | h2o         | heavy = ⌊B/2⌋, recent = B − ⌊B/2⌋              | every head    |
 * | tova        | budget = B                                     | every head    |
 * | snapkv      | budget = B (the 32-query window counts in B)   | the prompt, once at prefill; decoding appends |
 * | windowkv    | budget = B (the 32-token suffix counts in B)   | the prompt, once at prefill; decoding appends |
 * | compresskv  | budget = B (mean over layers; 8-query window)  | the prompt, once at prefill; decoding appends |
 * | razor       | sinks = 4, recent = B − 5 (+1 compensation)    | non-retrieval heads; retrieval heads keep all |
 * | lacache     | cache_size = B                                 | every head (ladder over layers) |
 * | d2o         | heavy = ⌊B/2⌋, recent = B − ⌊B/2⌋              | per layer scaled by attention density, mean B |
 *
 * A composition (`snapkv:budget=64 + streaming:sinks=4,recent=60`) is evaluated once, as given.
 * A spec that names any of the parameters its budget maps to (e.g. `window:size=32`) is taken as
 * given and evaluated once; otherwise (e.g. `h2o`, `h2o:accumulate=mean`) it is evaluated at every
 * budget, its other parameters kept. `full` is never budgeted.
 */
import { PolicySpecError } from '../errors.ts';
import { findPolicy, POLICIES } from '../policies/index.ts';
import { explicitParamNames, formatPolicyChain, formatPolicySpec, parsePolicyChain, parsePolicySpec, policyLabel } from '../policies/spec.ts';

export { explicitParamNames };
import type { ParamValue, PolicyDefinition } from '../policies/types.ts';

export interface BudgetRule {
  /** parameters this policy's budget maps to */
  params: readonly string[];
  /** the parameter values for budget B (B ≥ the rule's minimum) */
  map(budget: number): Record<string, ParamValue>;
  /** the mapping in words, e.g. "sinks = 4, recent = B − 4" */
  text: string;
  /** what B bounds for this policy */
  scope: string;
  /** smallest budget the mapping accepts */
  min: number;
}

const half = (b: number) => Math.floor(b / 2);

export const BUDGET_RULES: Readonly<Record<string, BudgetRule>> = {
  window: { params: ['size'], map: (b) => ({ size: b }), text: 'size = B', scope: 'every head', min: 1 },
  streaming: {
    params: ['sinks', 'recent'],
    map: (b) => ({ sinks: 4, recent: b - 4 }),
    text: 'sinks = 4, recent = B − 4',
    scope: 'every head',
    min: 5,
  },
  h2o: {
    params: ['heavy', 'recent'],
    map: (b) => ({ heavy: half(b), recent: b - half(b) }),
    text: 'heavy = ⌊B/2⌋, recent = B − ⌊B/2⌋',
    scope: 'every head',
    min: 2,
  },
  tova: { params: ['budget'], map: (b) => ({ budget: b }), text: 'budget = B', scope: 'every head', min: 1 },
  snapkv: {
    params: ['budget'],
    map: (b) => ({ budget: b }),
    text: 'budget = B (its 32-query observation window counts in B)',
    scope: 'the prompt, once after prefill; decoded tokens are appended',
    min: 1,
  },
  windowkv: {
    params: ['budget'],
    map: (b) => ({ budget: b }),
    text: 'budget = B (its 32-token suffix counts in B)',
    scope: 'the prompt, once after prefill; decoded tokens are appended',
    min: 1,
  },
  compresskv: {
    params: ['budget'],
    map: (b) => ({ budget: b }),
    text: 'budget = B (mean over layers; its 8-query window counts in B)',
    scope: 'the prompt, once after prefill; decoded tokens are appended',
    min: 1,
  },
  razor: {
    params: ['sinks', 'recent'],
    map: (b) => ({ sinks: 4, recent: b - 5 }),
    text: 'sinks = 4, recent = B − 5, plus 1 compensation token',
    scope: 'non-retrieval heads; retrieval heads keep every entry',
    min: 6,
  },
  lacache: { params: ['cache_size'], map: (b) => ({ cache_size: b }), text: 'cache_size = B', scope: 'every head (ladder across layers)', min: 1 },
  d2o: {
    params: ['heavy', 'recent'],
    map: (b) => ({ heavy: half(b), recent: b - half(b) }),
    text: 'heavy = ⌊B/2⌋, recent = B − ⌊B/2⌋',
    scope: 'every head, scaled per layer by attention density (mean B)',
    min: 2,
  },
};

/** Policies evaluated once, whatever the budgets (they hold everything). */
export const UNBUDGETED: readonly string[] = ['full'];

export const DEFAULT_BUDGETS: readonly number[] = [64, 128, 256, 512];

/** The canonical spec of `spec` with its budget parameters set from `budget`. */
export function specForBudget(spec: string, budget: number, registry: readonly PolicyDefinition[] = POLICIES): string {
  const parsed = parsePolicySpec(spec, registry);
  const rule = BUDGET_RULES[parsed.id];
  if (!rule) throw new PolicySpecError(`${parsed.id}: no budget mapping (give its budget parameters in the spec instead)`);
  if (!Number.isInteger(budget) || budget < rule.min) throw new PolicySpecError(`${parsed.id}: budget must be an integer ≥ ${rule.min}, got ${budget}`);
  const text = Object.entries({ ...parsed.params, ...rule.map(budget) })
    .map(([name, value]) => `${name}=${String(value)}`)
    .join(',');
  return formatPolicySpec(parsePolicySpec(`${parsed.id}:${text}`, registry), registry);
}

/** One evaluated configuration: a policy given on the command line / page at one budget. */
export interface EvalRun {
  /** the spec as the user gave it */
  input: string;
  id: string;
  /** null: evaluated as given (full, or budget parameters named explicitly) */
  budget: number | null;
  /** canonical spec evaluated */
  spec: string;
}

/** Checks a budget list: positive integers, no duplicates; returned ascending. */
export function checkBudgets(budgets: readonly number[]): number[] {
  if (budgets.length === 0) throw new PolicySpecError('the budget list is empty');
  for (const b of budgets) {
    if (!Number.isInteger(b) || b < 1) throw new PolicySpecError(`budgets must be positive integers, got ${b}`);
  }
  const sorted = [...budgets].sort((a, b) => a - b);
  for (let i = 1; i < sorted.length; i++) if (sorted[i] === sorted[i - 1]) throw new PolicySpecError(`budget ${sorted[i]} is listed twice`);
  return sorted;
}

/**
 * Expands policy specs over budgets (see the header). `all` stands for every registered policy.
 * Throws PolicySpecError on an unknown policy, a bad parameter or a budget a mapping cannot take.
 */
export function expandRuns(specs: readonly string[], budgets: readonly number[], registry: readonly PolicyDefinition[] = POLICIES): EvalRun[] {
  if (specs.length === 0) throw new PolicySpecError('no policy given');
  const sorted = checkBudgets(budgets);
  const inputs = specs.flatMap((s) => (s.trim() === 'all' ? registry.map((p) => p.id) : [s.trim()]));
  const runs: EvalRun[] = [];
  for (const input of inputs) {
    const chain = parsePolicyChain(input, registry);
    if (chain.length > 1) {
      // a composition is evaluated as given: one budget mapping could not speak for all its members
      runs.push({ input, id: policyLabel(input), budget: null, spec: formatPolicyChain(chain, registry) });
      continue;
    }
    const parsed = chain[0];
    const rule = BUDGET_RULES[parsed.id];
    const explicit = explicitParamNames(input);
    const asGiven = UNBUDGETED.includes(parsed.id) || !rule || rule.params.some((p) => explicit.includes(p));
    if (asGiven) {
      if (!rule && !UNBUDGETED.includes(parsed.id) && !findPolicy(parsed.id, registry)) throw new PolicySpecError(`unknown policy ${parsed.id}`);
      runs.push({ input, id: parsed.id, budget: null, spec: formatPolicySpec(parsed, registry) });
      continue;
    }
    for (const budget of sorted) runs.push({ input, id: parsed.id, budget, spec: specForBudget(input, budget, registry) });
  }
  const seen = new Set<string>();
  for (const run of runs) {
    if (seen.has(run.spec)) throw new PolicySpecError(`${run.spec} is evaluated twice (drop the duplicate --policy)`);
    seen.add(run.spec);
  }
  return runs;
}

/** The mapping table as rows (docs, the bench page, `kvscope eval --help`). */
export function budgetTable(registry: readonly PolicyDefinition[] = POLICIES): { id: string; mapping: string; scope: string }[] {
  return registry.map((p) => {
    const rule = BUDGET_RULES[p.id];
    if (UNBUDGETED.includes(p.id)) return { id: p.id, mapping: '— (evaluated once)', scope: 'keeps everything' };
    return { id: p.id, mapping: rule ? rule.text : '— (no mapping: give its parameters)', scope: rule?.scope ?? '' };
  });
}
