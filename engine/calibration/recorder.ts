/**
 * A do-nothing policy whose hooks hand the observations to the calibration code. Calibration runs
 * a normal Session (full cache: every decision is NO_CHANGE) with `registry: [recorder]`, so it
 * sees exactly what policies see — attention mapped onto cache entries, window rows, queries —
 * without a second code path through the graph.
 */
import type { CacheView } from '../cache/store.ts';
import { NO_CHANGE, type PolicyDefinition, type PolicyNeeds, type PrefillObservation, type StepObservation } from '../policies/types.ts';

export const RECORDER_ID = 'calibration-recorder';

export interface RecorderHooks {
  afterPrefill?(cache: CacheView, observation: PrefillObservation): void;
  afterStep?(cache: CacheView, observation: StepObservation): void;
}

/** A registry entry (use with SessionOptions.registry and policy RECORDER_ID). */
export function recorderPolicy(needs: PolicyNeeds, hooks: RecorderHooks): PolicyDefinition {
  return {
    id: RECORDER_ID,
    label: 'Calibration recorder',
    description: 'Keeps the full cache and records what the forward produced (calibration only).',
    paper: { short: 'kvscope calibration', title: 'kvscope calibration recorder' },
    params: [],
    needs,
    create(params) {
      return {
        id: RECORDER_ID,
        params,
        needs,
        afterPrefill(cache, observation) {
          hooks.afterPrefill?.(cache, observation);
          return NO_CHANGE;
        },
        afterStep(cache, observation) {
          hooks.afterStep?.(cache, observation);
          return NO_CHANGE;
        },
        reset() {},
        getState: () => null,
        setState() {},
      };
    },
  };
}
