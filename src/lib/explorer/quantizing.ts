/**
 * Which policies store entries under a codec (quantized, channel-pruned, low-rank, shared): the
 * quantization error view's empty state names them. The registry (engine/policies) carries no such
 * flag, so the list is kept here, the one place the UI reads it from: add a policy when its
 * decisions re-encode entries (Decision reencode). MiniCache re-encodes a pair's merged entries with
 * a shared direction, so it shows here too.
 */
import { policyIds } from '../../../engine/policies/spec.ts';

export const QUANTIZING_POLICY_IDS: readonly string[] = ['kivi', 'gear', 'mikv', 'think', 'cskv', 'pca', 'headmerge', 'cachegen', 'minicache'];

/** The quantizing policies among the registered ones (ids, in QUANTIZING_POLICY_IDS order). */
export function registeredQuantizingPolicies(registered: readonly { id: string }[]): string[] {
  return QUANTIZING_POLICY_IDS.filter((id) => registered.some((p) => p.id === id));
}

/** Whether a spec or composition has a member among `quantizing` (ids read by engine/policies/spec.ts). */
export function specQuantizes(spec: string, quantizing: readonly string[]): boolean {
  return policyIds(spec).some((id) => quantizing.includes(id));
}
