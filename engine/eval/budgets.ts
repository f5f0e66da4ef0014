/**
 * Budgets for evaluations: one number B — the entries a KV head may hold — turned into each
 * policy's own parameters, so that "h2o at 128" and "window at 128" hold about the same memory.
 *
 * Each method declares its mapping next to its stages (PolicyDefinition.budget, e.g. window:
 * size = B; h2o: heavy = ⌊B/2⌋, recent = B − ⌊B/2⌋); `budgetTable()` lists them all (docs, the
 * bench page, `kvscope eval --help`).
 *
 * A composition (`snapkv:budget=64 + streaming:sinks=4,recent=60`) is evaluated once, as given.
 * A spec that names any of the parameters its budget maps to (e.g. `window:size=32`) is taken as
 * given and evaluated once; otherwise (e.g. `h2o`, `h2o:accumulate=mean`) it is evaluated at every
 * budget, its other parameters kept. `full`, `minicache` and the quantization / low-rank methods (they
 * hold every entry) are never budgeted.
 */
import { PolicySpecError } from '../errors.ts';
import { findPolicy, POLICIES } from '../policies/index.ts';
import { explicitParamNames, formatPolicyChain, formatPolicySpec, parsePolicyChain, parsePolicySpec, policyLabel } from '../policies/spec.ts';
import type { BudgetRule, PolicyDefinition } from '../policies/types.ts';

export { explicitParamNames };
export type { BudgetRule };

/** Each registered method's budget rule (declared in its own file: PolicyDefinition.budget). */
export function budgetRules(registry: readonly PolicyDefinition[] = POLICIES): Readonly<Record<string, BudgetRule>> {
  return Object.fromEntries(registry.flatMap((p) => (p.budget ? [[p.id, p.budget] as const] : [])));
}

export const BUDGET_RULES: Readonly<Record<string, BudgetRule>> = budgetRules();

/** Policies evaluated once, whatever the budgets: they hold every entry (PolicyDefinition.holdsEveryEntry says what they save). */
export const UNBUDGETED: readonly string[] = POLICIES.filter((p) => p.holdsEveryEntry !== undefined).map((p) => p.id);

export const DEFAULT_BUDGETS: readonly number[] = [64, 128, 256, 512];

/** The canonical spec of `spec` with its budget parameters set from `budget`. */
export function specForBudget(spec: string, budget: number, registry: readonly PolicyDefinition[] = POLICIES): string {
  const parsed = parsePolicySpec(spec, registry);
  const rule = findPolicy(parsed.id, registry)?.budget;
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
    const definition = findPolicy(parsed.id, registry);
    const rule = definition?.budget;
    const explicit = explicitParamNames(input);
    const asGiven = definition?.holdsEveryEntry !== undefined || !rule || rule.params.some((p) => explicit.includes(p));
    if (asGiven) {
      if (!definition) throw new PolicySpecError(`unknown policy ${parsed.id}`);
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
    const rule = p.budget;
    if (p.holdsEveryEntry !== undefined) return { id: p.id, mapping: `— (evaluated once: ${p.holdsEveryEntry})`, scope: '' };
    return { id: p.id, mapping: rule ? rule.text : '— (no mapping: give its parameters)', scope: rule?.scope ?? '' };
  });
}
