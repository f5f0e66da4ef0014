/**
 * The policy as the pickers edit it: the members of a composition in the order they run
 * (engine/policies/chain.ts), each a policy id with typed parameters. Spec strings are read and
 * written by the engine (engine/policies/spec.ts) — this file never splits or joins one itself, so
 * what the explorer, /compare and their links show is exactly what the engine runs.
 */
import { PolicySpecError } from '../../../engine/errors.ts';
import { formatPolicyChain, parsePolicyChain } from '../../../engine/policies/spec.ts';
import type { ParamValue } from '../../../engine/policies/types.ts';
import type { PolicyChoice, PolicyInfo } from '../worker/protocol.ts';

/** Members a picker offers to compose (a typed spec may hold more; the engine sets no limit). */
export const MAX_PICKED_MEMBERS = 3;

export function defaultChoice(info: PolicyInfo): PolicyChoice {
  return { id: info.id, params: Object.fromEntries(info.params.map((p) => [p.name, p.default])) };
}

/**
 * A spec or composition → members typed by the engine's schemas, every parameter filled in.
 * Throws the engine's PolicySpecError (its message says what to write instead).
 */
export function choicesFromSpec(spec: string): PolicyChoice[] {
  return parsePolicyChain(spec).map((member) => ({ id: member.id, params: { ...member.params } }));
}

/** choicesFromSpec, or null for a spec this build cannot read (an imported trace of another version). */
export function choicesFromSpecOrNull(spec: string): PolicyChoice[] | null {
  try {
    return choicesFromSpec(spec);
  } catch (error) {
    if (error instanceof PolicySpecError) return null;
    throw error;
  }
}

/** The canonical spec of the members (the engine's form), or null while a parameter is invalid. */
export function specOfChoices(members: readonly PolicyChoice[]): string | null {
  try {
    return formatPolicyChain(members);
  } catch (error) {
    if (error instanceof PolicySpecError) return null;
    throw error;
  }
}

export function replaceMember(members: readonly PolicyChoice[], index: number, choice: PolicyChoice): PolicyChoice[] {
  return members.map((member, i) => (i === index ? choice : member));
}

export function withMemberParam(members: readonly PolicyChoice[], index: number, name: string, value: ParamValue): PolicyChoice[] {
  return members.map((member, i) => (i === index ? { ...member, params: { ...member.params, [name]: value } } : member));
}

/** The members without the one at `index`; the first member is never removed (a policy is always in force). */
export function withoutMember(members: readonly PolicyChoice[], index: number): PolicyChoice[] {
  if (index <= 0 || members.length <= 1) return [...members];
  return members.filter((_, i) => i !== index);
}

/**
 * The member "then …" adds: the first policy that evicts (not `full`, which would change nothing),
 * is not in the composition yet and can run on this model; its defaults.
 */
export function nextMember(members: readonly PolicyChoice[], policies: readonly PolicyInfo[], calibrated: boolean): PolicyChoice | null {
  const used = new Set(members.map((m) => m.id));
  const runnable = policies.filter((p) => p.id !== 'full' && (calibrated || !p.needs.calibration));
  const info = runnable.find((p) => !used.has(p.id)) ?? runnable[0];
  return info ? defaultChoice(info) : null;
}
