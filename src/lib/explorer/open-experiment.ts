/**
 * Opening an experiment link in the explorer (issue 11): the setup is taken from the link, the
 * session is started and every recorded action is taken again, in order, through the explorer's
 * own commands — so the replay is the session the link was made from, token for token, and the
 * explorer's log ends up holding the same actions. Then the view is set as the link says.
 *
 * Nothing here does model math: it drives ExplorerState like a user would, faster.
 */
import { stepsAskedBy, type Experiment, type ExperimentAction } from '../links/experiment.ts';
import { choicesFromSpec } from './policy-choice.ts';
import type { ExplorerState } from './state.svelte.ts';
import type { ModelInfo } from '../worker/protocol.ts';

export class OpenError extends Error {}

/** Takes the link's setup into the page (prompt, sampler, first policy) before anything runs. */
export function takeSetup(app: ExplorerState, experiment: Experiment): void {
  app.prompt = experiment.prompt;
  app.sampler = { ...experiment.sampler };
  try {
    app.policyMembers = choicesFromSpec(experiment.policy);
  } catch (error) {
    throw new OpenError(`its policy ${experiment.policy} is not one this app can run: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Why the loaded model cannot replay the link, or null when it is the link's model. */
export function modelProblem(app: Pick<ExplorerState, 'model'>, experiment: Experiment): string | null {
  return modelMismatch(app.model, experiment.model);
}

/**
 * Why `loaded` is not the model a link names (explorer, /compare and /bench links), saying which
 * model to load and where to get it; null when it is that model.
 */
export function modelMismatch(loaded: Pick<ModelInfo, 'id' | 'sha256'> | null, wanted: { id: string; sha256: string }): string | null {
  if (!loaded) return 'the model is not loaded';
  const where = `pick it in the model list if this browser has it, or upload its folder at /models`;
  if (loaded.id !== wanted.id) {
    return `it was made with the model ${wanted.id} (sha256 ${wanted.sha256.slice(0, 12)}…); this app has ${loaded.id} loaded — load ${wanted.id} to open it (${where})`;
  }
  if (loaded.sha256 !== wanted.sha256) {
    return `it was made with another version of ${wanted.id} (sha256 ${wanted.sha256.slice(0, 12)}…, this app has ${loaded.sha256.slice(0, 12)}…): its tokens would differ — load that version to open it (${where})`;
  }
  return null;
}

function describe(action: ExperimentAction): string {
  switch (action.kind) {
    case 'decode':
      return `decoding ${action.steps} step${action.steps === 1 ? '' : 's'}`;
    case 'round':
      return action.count === 1 ? 'a speculative step' : `${action.count} speculative steps`;
    case 'run':
      return `a speculative run of ${action.steps} tokens${action.cut ? ` paused after ${action.cut}` : ''}`;
    case 'back':
      return `going back ${action.steps} step${action.steps === 1 ? '' : 's'}`;
    case 'keep':
      return `going back to step ${action.steps}`;
    case 'policy':
      return `switching to ${action.spec}`;
    case 'drafter':
      return action.spec ? `setting the drafter ${action.spec}` : 'turning the drafter off';
    case 'reference':
      return `turning the reference lane ${action.on ? 'on' : 'off'}`;
  }
}

/** Total decode steps the actions ask for (the replay's progress bar). */
export function stepsAsked(experiment: Experiment): number {
  let total = 0;
  for (const a of experiment.actions) total += stepsAskedBy(a);
  return total;
}

async function take(app: ExplorerState, action: ExperimentAction, stopped: () => boolean): Promise<string | null> {
  const errorNow = () => app.error?.message ?? null;
  switch (action.kind) {
    case 'decode':
      await app.run(action.steps, false);
      return errorNow();
    case 'round':
      for (let i = 0; i < action.count && !errorNow() && !stopped(); i++) await app.step();
      return errorNow();
    case 'run':
      await app.run(action.steps, action.stopAtEos, action.cut);
      return errorNow();
    case 'back':
      await app.back(action.steps);
      return errorNow();
    case 'keep':
      if (app.steps.length > action.steps) await app.back(app.steps.length - action.steps);
      return errorNow();
    case 'policy':
      return (await app.applySpec(action.spec)) ? null : (app.policyError ?? errorNow() ?? 'the policy was refused');
    case 'drafter':
      return (await app.spec.apply(action.spec ?? 'none')) ? null : (app.spec.error ?? 'the drafter was refused');
    case 'reference':
      await app.setReference(action.on);
      return errorNow();
  }
}

/**
 * Replays an experiment on the loaded model: setup, start (unless the session already is the
 * link's freshly started one), every action, then the view. Throws OpenError naming what failed
 * (the session then stays where the replay got to, usable).
 */
export async function replayExperiment(
  app: ExplorerState,
  experiment: Experiment,
  onProgress?: (done: number, total: number) => void,
  stopped: () => boolean = () => false,
): Promise<void> {
  const problem = modelProblem(app, experiment);
  if (problem) throw new OpenError(problem);
  app.dismissError();
  const fresh =
    app.session !== null &&
    app.steps.length === 0 &&
    app.appliedPrompt === experiment.prompt &&
    app.appliedSampler === JSON.stringify(experiment.sampler) &&
    app.startedPolicy === experiment.policy &&
    app.experiment?.actions.length === 0;
  if (!fresh) {
    takeSetup(app, experiment);
    // what a session carries over from the last one (the drafter, the reference lane) is the link's to set
    if (app.spec.active && !(await app.spec.apply('none'))) throw new OpenError(`the drafter in charge cannot be turned off: ${app.spec.error}`);
    if (app.reference) await app.setReference(false);
    await app.start();
    if (app.policyError) throw new OpenError(`its policy ${experiment.policy} was refused: ${app.policyError}`);
    if (!app.session || app.error) throw new OpenError(`its prompt cannot be run: ${app.error?.message ?? 'the session did not start'}`);
  }
  const total = stepsAsked(experiment);
  let done = 0;
  onProgress?.(0, total);
  for (const [index, action] of experiment.actions.entries()) {
    const failure = stopped() ? null : await take(app, action, stopped);
    if (stopped()) throw new OpenError(`its replay was stopped at step ${app.steps.length} of ${experiment.steps}; the session stays there`);
    if (failure) throw new OpenError(`action ${index + 1} of ${experiment.actions.length} (${describe(action)}) failed: ${failure}`);
    done += stepsAskedBy(action);
    onProgress?.(Math.min(done, total), total);
  }
  if (app.steps.length !== experiment.steps) {
    throw new OpenError(`the replay decoded ${app.steps.length} steps where the link says ${experiment.steps}: the model or the app may have changed since it was made`);
  }
  showView(app, experiment);
}

/** Sets the selected step, layer, head and view toggles the link names (bounded by the model). */
export function showView(app: ExplorerState, experiment: Experiment): void {
  const view = experiment.view;
  const model = app.shownModel;
  app.layer = model && view.layer < model.layers ? view.layer : 0;
  app.head = model && view.head < model.heads ? view.head : 0;
  app.scale = view.scale;
  app.excludeSink = view.excludeSink;
  app.forgottenMode = view.forgotten;
  if (app.viewsLive !== view.live) app.setViewsLive(view.live);
  app.select(view.step);
}
