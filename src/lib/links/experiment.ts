/**
 * An explorer experiment (issue 11): the inputs that reproduce a session exactly — never its
 * outputs. Runs are deterministic (DESIGN.md §1: same model + prompt + config + seed ⇒ identical
 * tokens), so replaying these inputs gives the same tokens bit for bit and the same view.
 *
 * The policy timeline, the drafter and the steps decoded are one ordered list of actions, exactly
 * as the session took them. Plain decoding is deterministic per token (Back restores the sampler),
 * so its steps fold into counts and a Back over plain steps folds into them too
 * (experiment-log.ts); speculative rounds depend on how the user cut them (a Step is one round,
 * a Run stops rounds at its length), so they stay as the commands that made them.
 *
 * The wire form (codec.ts) is this object as JSON with short keys; validation (validate.ts)
 * checks every field of an untrusted one.
 */
import type { SamplerSettings } from '../worker/protocol.ts';

/** The version of the experiment a link carries; a link with a newer one is refused politely. */
export const EXPERIMENT_VERSION = 1;

export type ForgottenMode = 'off' | 'all' | 'head';

export type ExperimentAction =
  /** plain decoding: this many steps (Steps and Runs alike: each step samples one token) */
  | { kind: 'decode'; steps: number }
  /** Steps while a drafter is in charge: `count` verification rounds, one per Step */
  | { kind: 'round'; count: number }
  /**
   * a Run while a drafter is in charge: rounds until `steps` tokens (or EOS when `stopAtEos`),
   * each cut to what is left of `steps`; `cut`: the Run was paused between rounds once that many
   * tokens were in
   */
  | { kind: 'run'; steps: number; stopAtEos: boolean; cut?: number }
  /** ← Back by this many steps, where it cannot fold into the steps before it */
  | { kind: 'back'; steps: number }
  /** back to this many steps (a /compare lane: its rounds decoded past the step it showed) */
  | { kind: 'keep'; steps: number }
  /** a live policy switch (canonical spec) */
  | { kind: 'policy'; spec: string }
  /** the drafter in charge from here (canonical spec; null: plain decoding) */
  | { kind: 'drafter'; spec: string | null }
  /** the full-cache reference lane turned on or off here */
  | { kind: 'reference'; on: boolean };

/** What the page showed: the selected step, layer and head and the view toggles. */
export interface ExperimentView {
  /** selected step; null follows the newest */
  step: number | null;
  layer: number;
  head: number;
  scale: 'linear' | 'log';
  excludeSink: boolean;
  forgotten: ForgottenMode;
  /** attention views drawn while decoding */
  live: boolean;
}

export interface Experiment {
  model: { id: string; sha256: string };
  prompt: string;
  sampler: SamplerSettings;
  /** the policy the session started with (canonical spec) */
  policy: string;
  actions: ExperimentAction[];
  /** decode steps at the end: what the replay must arrive at */
  steps: number;
  view: ExperimentView;
}

export const DEFAULT_VIEW: ExperimentView = { step: null, layer: 0, head: 0, scale: 'linear', excludeSink: false, forgotten: 'all', live: true };

/** The decode steps an action asks for, where it says (a round feeds at least one token): a link's replay length. */
export function stepsAskedBy(action: ExperimentAction): number {
  if (action.kind === 'decode') return action.steps;
  if (action.kind === 'run') return action.cut ?? action.steps;
  if (action.kind === 'round') return action.count;
  return 0;
}

/** The steps the actions arrive at, when they are all plain (null: speculative actions decide at run time). */
export function plainSteps(actions: readonly ExperimentAction[]): number | null {
  let steps = 0;
  for (const action of actions) {
    if (action.kind === 'decode') steps += action.steps;
    else if (action.kind === 'back') steps = Math.max(0, steps - action.steps);
    else if (action.kind === 'keep') steps = Math.min(steps, action.steps);
    else if (action.kind === 'round' || action.kind === 'run') return null;
  }
  return steps;
}

/** One line for people: model, policy timeline, drafter, steps. */
export function describeExperiment(experiment: Experiment): string {
  const switches = experiment.actions.filter((a) => a.kind === 'policy').length;
  const drafter = [...experiment.actions].reverse().find((a) => a.kind === 'drafter');
  const parts = [experiment.model.id, experiment.policy];
  if (switches > 0) parts.push(`${switches} policy switch${switches === 1 ? '' : 'es'}`);
  if (drafter?.kind === 'drafter' && drafter.spec) parts.push(`drafter ${drafter.spec}`);
  parts.push(`${experiment.steps} step${experiment.steps === 1 ? '' : 's'}`);
  const s = experiment.sampler;
  parts.push(s.temperature === 0 ? 'greedy' : `T ${s.temperature}, seed ${s.seed}`);
  return parts.join(' · ');
}

/**
 * The experiment of a setup decoded in one go (a /compare lane, a /bench cell): the prompt, the
 * sampler, the policy and, when there is one, the drafter, then `steps` tokens. A /compare lane
 * with a drafter runs uncut rounds (a Step each) and holds back what passes the shown step: with
 * `rounds` given, the experiment is that many Steps kept to `steps` — the same draws at T > 0.
 */
export function experimentOfRun(run: {
  model: { id: string; sha256: string };
  prompt: string;
  sampler: SamplerSettings;
  policy: string;
  drafter?: string | null;
  steps: number;
  /** verification rounds the drafter ran to reach `steps` (a /compare lane) */
  rounds?: number | null;
  view?: Partial<ExperimentView>;
}): Experiment {
  const steps = Math.max(0, Math.floor(run.steps));
  const actions: ExperimentAction[] = [];
  if (run.drafter) {
    actions.push({ kind: 'drafter', spec: run.drafter });
    // a Run of one token is a Step in the explorer (one uncut round): one round kept to one token is the same draw
    const rounds = run.rounds ?? (steps === 1 ? 1 : null);
    if (steps > 0 && rounds) actions.push({ kind: 'round', count: rounds }, { kind: 'keep', steps });
    else if (steps > 0) actions.push({ kind: 'run', steps, stopAtEos: false });
  } else if (steps > 0) actions.push({ kind: 'decode', steps });
  return { model: run.model, prompt: run.prompt, sampler: { ...run.sampler }, policy: run.policy, actions, steps, view: { ...DEFAULT_VIEW, ...run.view } };
}
