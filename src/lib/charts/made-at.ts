/** The decision a view's numbers come from, in words (merge and quantization views). */
import type { MergeMadeAt } from '../worker/protocol.ts';

/** 'the prefill', 'step 12', 'the switch after the prompt', 'the switch after step 3' (`at.step` = steps decoded before the switch). */
export function madeAtLabel(at: MergeMadeAt): string {
  if (at.kind === 'prefill') return 'the prefill';
  if (at.kind === 'step') return `step ${at.step}`;
  return at.step === 0 ? 'the switch after the prompt' : `the switch after step ${at.step - 1}`;
}
