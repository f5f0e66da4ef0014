/**
 * Which policies merge entries instead of evicting them (the merge view's empty state names them).
 * The registry (engine/policies) carries no such flag, so the list is kept here, the one place the
 * UI reads it from: add a policy here when it merges (Decision groups) or re-encodes a pair's
 * entries with a shared direction (MiniCache).
 */
import { policyIds } from '../../../engine/policies/spec.ts';

export const MERGING_POLICY_IDS: readonly string[] = ['chelsea', 'kvmerger', 'd2o', 'ems', 'minicache', 'razor'];

/** The merging policies among the registered ones (ids, in MERGING_POLICY_IDS order). */
export function registeredMergingPolicies(registered: readonly { id: string }[]): string[] {
  return MERGING_POLICY_IDS.filter((id) => registered.some((p) => p.id === id));
}

/** Whether a spec or composition has a member among `merging` (ids read by engine/policies/spec.ts). */
export function specMerges(spec: string, merging: readonly string[]): boolean {
  return policyIds(spec).some((id) => merging.includes(id));
}
