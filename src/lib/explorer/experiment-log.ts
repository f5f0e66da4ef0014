/**
 * The explorer's record of what shaped the session's tokens (src/lib/links/experiment.ts): the
 * actions in the order the session took them, folded where folding changes nothing.
 *
 * - Plain steps fold into one count: each samples one token from the sampler's stream, however
 *   they were grouped into Steps and Runs.
 * - ← Back over plain steps folds into them (Back restores the sampler exactly, so decoding on
 *   after it is decoding on from that step), and a policy switch it crosses is dropped, as the
 *   session drops it. A Back that reaches speculative rounds, a drafter change or the reference
 *   lane stays an action: those do not rewind with the session (the decoder's generator and a
 *   learning drafter's state go on).
 */
import type { ExperimentAction } from '../links/experiment.ts';

export class ExperimentLog {
  private list: ExperimentAction[] = [];

  get actions(): readonly ExperimentAction[] {
    return this.list;
  }

  /** A new session: what is already in charge (a drafter, the reference lane) comes first. */
  reset(initial: readonly ExperimentAction[] = []): void {
    this.list = [...initial];
  }

  /** `steps` plain decode steps were taken. */
  decoded(steps: number): void {
    if (steps <= 0) return;
    const last = this.list.at(-1);
    if (last?.kind === 'decode') this.list[this.list.length - 1] = { kind: 'decode', steps: last.steps + steps };
    else this.list.push({ kind: 'decode', steps });
  }

  /** A speculative Step (one round; consecutive ones fold into a count) or Run was taken. */
  speculated(action: Extract<ExperimentAction, { kind: 'round' | 'run' }>): void {
    const last = this.list.at(-1);
    if (action.kind === 'round' && last?.kind === 'round') this.list[this.list.length - 1] = { kind: 'round', count: last.count + action.count };
    else this.list.push(action);
  }

  /** The policy was switched live. */
  switched(spec: string): void {
    this.list.push({ kind: 'policy', spec });
  }

  /** The drafter in charge changed (null: plain decoding). */
  drafter(spec: string | null): void {
    this.list.push({ kind: 'drafter', spec });
  }

  reference(on: boolean): void {
    this.list.push({ kind: 'reference', on });
  }

  /** The session went back `steps` steps (as many as it really went back). */
  back(steps: number): void {
    let left = steps;
    while (left > 0) {
      const last = this.list.at(-1);
      if (last?.kind === 'decode') {
        const taken = Math.min(left, last.steps);
        left -= taken;
        if (taken === last.steps) this.list.pop();
        else this.list[this.list.length - 1] = { kind: 'decode', steps: last.steps - taken };
      } else if (last?.kind === 'policy') {
        // the switch came after the step Back returns to: the session drops it
        this.list.pop();
      } else break;
    }
    if (left === 0) return;
    const last = this.list.at(-1);
    if (last?.kind === 'back') this.list[this.list.length - 1] = { kind: 'back', steps: last.steps + left };
    else if (last !== undefined) this.list.push({ kind: 'back', steps: left });
  }

}
