/**
 * The policy registry. Adding a method = adding one file that exports a PolicyDefinition and
 * listing it here; the spec parser, the CLI and the UI's controls pick it up from this list.
 */
import { fullPolicy } from './full.ts';
import type { PolicyDefinition } from './types.ts';
import { windowPolicy } from './window.ts';

export const POLICIES: readonly PolicyDefinition[] = [fullPolicy, windowPolicy];

export function findPolicy(id: string, registry: readonly PolicyDefinition[] = POLICIES): PolicyDefinition | undefined {
  return registry.find((p) => p.id === id);
}

export type * from './types.ts';
export { NO_CHANGE, decideEveryHead, indexRange, intParam, floatParam, enumParam, boolParam } from './types.ts';
