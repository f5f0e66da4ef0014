/**
 * Reading an untrusted experiment from its wire form (codec.ts): every field checked for type,
 * range and length, the first problem named with its field. Specs are checked for shape here
 * (the worker checks them against the model's policies and drafters when the link replays).
 *
 * Wire form (version 1), short keys to keep links short:
 *   { m: [modelId, sha256], p: prompt, s: [temperature, topK, topP, seed], P: policy,
 *     a: [action…], n: steps, w: [step (-1: newest), layer, head, log 0|1, excludeSink 0|1,
 *     forgotten, live 0|1], e?: the edited prompt not yet applied (address bar only) }
 *   actions: ['d', n] decode · ['r', k?] k rounds (1) · ['R', n, stopAtEos 0|1, cut?] run ·
 *            ['b', n] back · ['k', n] back to n steps · ['p', spec] policy ·
 *            ['D', spec | null] drafter · ['f', 0|1] reference lane
 */
import { looksLikePolicySpec } from '../../../engine/policies/spec.ts';
import { drafterProblem } from '../compare/url.ts';
import { plainSteps, stepsAskedBy, type Experiment, type ExperimentAction, type ExperimentView, type ForgottenMode } from './experiment.ts';

export const LIMITS = {
  promptChars: 20_000,
  policyChars: 600,
  modelIdChars: 200,
  actions: 4_000,
  /** decode steps in one action and in all (a replay of 100,000 steps takes half an hour or more: it can be stopped) */
  steps: 100_000,
  layers: 4_096,
} as const;

export class LinkError extends Error {}

function fail(field: string, problem: string): never {
  throw new LinkError(`${field} ${problem}`);
}

function integer(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) fail(field, `must be a whole number from ${min} to ${max}`);
  return value;
}

function number(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) fail(field, `must be a number from ${min} to ${max}`);
  return value;
}

function text(value: unknown, field: string, max: number): string {
  if (typeof value !== 'string') fail(field, 'must be text');
  if (value.length > max) fail(field, `is longer than ${max} characters`);
  return value;
}

function flag(value: unknown, field: string): boolean {
  if (value !== 0 && value !== 1) fail(field, 'must be 0 or 1');
  return value === 1;
}

function tuple(value: unknown, field: string, length: number): unknown[] {
  if (!Array.isArray(value) || value.length !== length) fail(field, `must be a list of ${length} values`);
  return value;
}

function policySpec(value: unknown, field: string): string {
  const spec = text(value, field, LIMITS.policyChars).trim();
  if (!looksLikePolicySpec(spec)) fail(field, `is not a policy spec (${JSON.stringify(spec.slice(0, 60))})`);
  return spec;
}

function action(value: unknown, field: string): ExperimentAction {
  if (!Array.isArray(value) || value.length === 0) fail(field, 'must be a non-empty list');
  const [kind, ...args] = value as unknown[];
  const arity = (n: number, most = n) => {
    if (args.length < n || args.length > most) fail(field, `(${JSON.stringify(kind)}) must have ${n === most ? n : `${n} to ${most}`} argument${most === 1 ? '' : 's'}`);
  };
  switch (kind) {
    case 'd':
      arity(1);
      return { kind: 'decode', steps: integer(args[0], `${field}[1]`, 1, LIMITS.steps) };
    case 'r':
      arity(0, 1);
      return { kind: 'round', count: args.length === 0 ? 1 : integer(args[0], `${field}[1]`, 1, LIMITS.steps) };
    case 'R': {
      arity(2, 3);
      const steps = integer(args[0], `${field}[1]`, 1, LIMITS.steps);
      const run: ExperimentAction = { kind: 'run', steps, stopAtEos: flag(args[1], `${field}[2]`) };
      return args.length === 3 ? { ...run, cut: integer(args[2], `${field}[3]`, 1, steps) } : run;
    }
    case 'b':
      arity(1);
      return { kind: 'back', steps: integer(args[0], `${field}[1]`, 1, LIMITS.steps) };
    case 'k':
      arity(1);
      return { kind: 'keep', steps: integer(args[0], `${field}[1]`, 0, LIMITS.steps) };
    case 'p':
      arity(1);
      return { kind: 'policy', spec: policySpec(args[0], `${field}[1]`) };
    case 'D': {
      arity(1);
      if (args[0] === null) return { kind: 'drafter', spec: null };
      const spec = text(args[0], `${field}[1]`, LIMITS.policyChars).trim();
      const problem = drafterProblem(spec);
      if (problem) fail(`${field}[1]`, `is not a drafter spec: ${problem}`);
      return { kind: 'drafter', spec };
    }
    case 'f':
      arity(1);
      return { kind: 'reference', on: flag(args[0], `${field}[1]`) };
    default:
      fail(`${field}[0]`, `is not an action kind (${JSON.stringify(kind)})`);
  }
}

const FORGOTTEN: readonly ForgottenMode[] = ['off', 'all', 'head'];

function view(value: unknown, steps: number): ExperimentView {
  const w = tuple(value, 'w (the view)', 7);
  const step = integer(w[0], 'w[0] (selected step)', -1, Math.max(0, steps - 1));
  const forgotten = w[5];
  if (!FORGOTTEN.includes(forgotten as ForgottenMode)) fail('w[5] (forgotten tokens)', `must be one of ${FORGOTTEN.join(', ')}`);
  return {
    step: step < 0 ? null : step,
    layer: integer(w[1], 'w[1] (layer)', 0, LIMITS.layers),
    head: integer(w[2], 'w[2] (head)', 0, LIMITS.layers),
    scale: flag(w[3], 'w[3] (log scale)') ? 'log' : 'linear',
    excludeSink: flag(w[4], 'w[4] (exclude sink)'),
    forgotten: forgotten as ForgottenMode,
    live: flag(w[6], 'w[6] (live views)'),
  };
}

/** The experiment (and the unapplied prompt edit, if any) in a parsed wire object; throws LinkError. */
export function readWire(wire: unknown): { experiment: Experiment; draft: string | null } {
  if (typeof wire !== 'object' || wire === null || Array.isArray(wire)) fail('the experiment', 'must be an object');
  const o = wire as Record<string, unknown>;
  const model = tuple(o.m, 'm (the model)', 2);
  const id = text(model[0], 'm[0] (model id)', LIMITS.modelIdChars);
  if (!/^[A-Za-z0-9][\w.-]*$/.test(id)) fail('m[0] (model id)', 'may hold only letters, digits, ".", "_" and "-"');
  const sha256 = text(model[1], 'm[1] (model sha256)', 64);
  if (!/^[0-9a-f]{64}$/.test(sha256)) fail('m[1] (model sha256)', 'must be 64 lower-case hex digits');
  const s = tuple(o.s, 's (the sampler)', 4);
  const sampler = {
    temperature: number(s[0], 's[0] (temperature)', 0, 10),
    topK: integer(s[1], 's[1] (top-k)', 0, 1_000_000),
    topP: number(s[2], 's[2] (top-p)', Number.MIN_VALUE, 1),
    seed: integer(s[3], 's[3] (seed)', 0, 0xffffffff),
  };
  if (!Array.isArray(o.a)) fail('a (the actions)', 'must be a list');
  if (o.a.length > LIMITS.actions) fail('a (the actions)', `has more than ${LIMITS.actions} entries`);
  const actions = o.a.map((a, i) => action(a, `a[${i}]`));
  const steps = integer(o.n, 'n (steps decoded)', 0, LIMITS.steps);
  const asked = actions.reduce((sum, a) => sum + stepsAskedBy(a), 0);
  if (asked > LIMITS.steps) fail('a (the actions)', `decode ${asked} steps in all, more than a link may replay (${LIMITS.steps})`);
  const decoded = plainSteps(actions);
  if (decoded !== null && decoded !== steps) fail('n (steps decoded)', `is ${steps}, but the actions decode ${decoded} steps`);
  const experiment: Experiment = {
    model: { id, sha256 },
    prompt: text(o.p, 'p (the prompt)', LIMITS.promptChars),
    sampler,
    policy: policySpec(o.P, 'P (the policy)'),
    actions,
    steps,
    view: view(o.w, steps),
  };
  const draft = o.e === undefined ? null : text(o.e, 'e (the edited prompt)', LIMITS.promptChars);
  return { experiment, draft };
}

/** The wire object of an experiment (the inverse of readWire). */
export function toWire(experiment: Experiment, draft: string | null = null): Record<string, unknown> {
  const v = experiment.view;
  const wire: Record<string, unknown> = {
    m: [experiment.model.id, experiment.model.sha256],
    p: experiment.prompt,
    s: [experiment.sampler.temperature, experiment.sampler.topK, experiment.sampler.topP, experiment.sampler.seed],
    P: experiment.policy,
    a: experiment.actions.map(actionWire),
    n: experiment.steps,
    w: [v.step ?? -1, v.layer, v.head, v.scale === 'log' ? 1 : 0, v.excludeSink ? 1 : 0, v.forgotten, v.live ? 1 : 0],
  };
  if (draft !== null) wire.e = draft;
  return wire;
}

function actionWire(action: ExperimentAction): unknown[] {
  switch (action.kind) {
    case 'decode':
      return ['d', action.steps];
    case 'round':
      return action.count === 1 ? ['r'] : ['r', action.count];
    case 'run':
      return action.cut === undefined ? ['R', action.steps, action.stopAtEos ? 1 : 0] : ['R', action.steps, action.stopAtEos ? 1 : 0, action.cut];
    case 'back':
      return ['b', action.steps];
    case 'keep':
      return ['k', action.steps];
    case 'policy':
      return ['p', action.spec];
    case 'drafter':
      return ['D', action.spec];
    case 'reference':
      return ['f', action.on ? 1 : 0];
  }
}
