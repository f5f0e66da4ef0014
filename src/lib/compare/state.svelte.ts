/**
 * The /compare page's state (Svelte 5 runes): 2–4 lanes with different policies decoding the same
 * prompt with the same sampler and seed, stepping together in the engine worker (lab-protocol.ts,
 * engine/lanes.ts). Every lane is measured against the full cache on its own tokens (KL, top-1
 * agreement, attention mass held, memory). The page does no model math: it keeps the per-step
 * records the worker sends and derives only comparisons of token ids (divergence from lane 1).
 *
 * A lane may name a drafter (speculative decoding; the lane spec `policy | drafter`, url.ts): it
 * then decodes in verification rounds, and a Step still shows one token of every lane — a round's
 * extra tokens are held back until the other lanes catch up (engine/lanes.ts). Its steps carry
 * each token's origin and the round statistics up to it, as the worker computed them.
 */
import { sameChoice, type ModelChoice } from '../models/choice.ts';
import { readModelParam, withModelParam, type LinkedModel } from '../models/link-param.ts';
import { loadChosenModel } from '../models/load.ts';
import { modelMismatch } from '../explorer/open-experiment.ts';
import { EngineClient, EngineFailure } from '../worker/client.ts';
import type { EngineEvent, LoadProgressView, ModelInfo, PolicyChoice, PolicyInfo, PromptView, SamplerSettings, StopReason } from '../worker/protocol.ts';
import type { LaneSpecStats, LaneSpeculation, LaneState, LanesStep } from '../worker/lab-protocol.ts';
import type { ParamValue } from '../../../engine/policies/types.ts';
import { policyIds } from '../../../engine/policies/spec.ts';
// the page already has the registry (url.ts parses lanes' drafters with it)
import { DRAFTERS } from '../../../engine/spec/index.ts';
import type { EngineUrls, ShownError } from '../explorer/state.svelte.ts';
import {
  MAX_PICKED_MEMBERS,
  choicesFromSpec,
  choicesFromSpecOrNull,
  defaultChoice,
  nextMember,
  replaceMember,
  specOfChoices,
  withMemberParam,
  withoutMember,
} from '../explorer/policy-choice.ts';
import { EXAMPLES } from '../explorer/examples.ts';
import { indexesUrlOf } from '../worker/drafter-env.ts';
import { decodeCompareQuery, drafterProblem, encodeCompareQuery, laneSpec, MAX_LANES, MAX_LINK_STEPS, MIN_LANES, splitLaneSpec, type CompareSetup } from './url.ts';

export type CompareStatus = 'idle' | 'loading' | 'ready' | 'error' | 'crashed';
export type CompareActivity = 'idle' | 'prefilling' | 'stepping' | 'running' | 'rewinding';

export const COMPARE_DEFAULTS: CompareSetup = {
  prompt: EXAMPLES[0].text,
  sampler: { temperature: 0.8, topK: 40, topP: 0.95, seed: 1 },
  lanes: ['full', 'window:size=32', 'streaming:sinks=4,recent=28,positions=p2'],
};

/** What "+ Add lane" offers, in order (the first whose policy is not shown yet). */
const NEW_LANES = ['h2o:heavy=16,recent=16', 'tova:budget=32', 'snapkv:budget=32', 'razor:recent=27', 'window:size=32'];

/** Okabe–Ito colours, one per lane (colour-blind safe), lane 1 first. */
export const LANE_COLORS = ['#000000', '#e69f00', '#0072b2', '#cc79a7'];

/** One lane's metric series for the charts (LaneCharts.svelte), by step. */
export interface LaneSeries {
  label: string;
  color: string;
  kl: (number | null)[];
  top1: (boolean | null)[];
  mass: (number | null)[];
  memoryRatio: number[];
  /** speculative lanes: target calls per token up to each step (null for plain lanes) */
  callsPerToken: (number | null)[] | null;
}

/**
 * Variants the drafter field suggests besides the registry's examples (DRAFTER_SUGGESTIONS):
 * a parameter choice each, to show that a drafter takes parameters.
 */
const EXTRA_DRAFTER_SUGGESTIONS: readonly { spec: string; label: string }[] = [
  { spec: 'lookup:max_ngram=2,k=4', label: 'prompt lookup, short matches, 4 tokens per round' },
  { spec: 'self:gamma=4,policy=window(size=32)', label: 'self-speculation on a 32-entry window' },
];

/**
 * Drafters the drafter field suggests (datalist), with what they do: every registered drafter's
 * example (engine/spec/index.ts DRAFTERS, so a new drafter shows up by itself), then the extras.
 */
export const DRAFTER_SUGGESTIONS: readonly { spec: string; label: string }[] = [
  ...DRAFTERS.map((d) => ({ spec: d.example.spec, label: `${d.label}: ${d.example.what}` })),
  ...EXTRA_DRAFTER_SUGGESTIONS.filter((extra) => !DRAFTERS.some((d) => d.example.spec === extra.spec)),
];

export interface LaneSummary {
  spec: string;
  tokens: number[];
  pieces: string[];
  /** per step: this lane's token differs from lane 1's at the same step */
  diverged: boolean[];
  /** first step where it differs from lane 1 (null: never, or lane 1 itself) */
  firstDivergence: number | null;
  kl: (number | null)[];
  top1: (boolean | null)[];
  mass: (number | null)[];
  /** mean KL and top-1 agreement over the steps that have them */
  meanKl: number | null;
  agreement: number | null;
  memory: LaneState['memory'] | null;
  /** the lane's drafter as it ran (canonical), null for a plain lane */
  drafter: string | null;
  /** per step: who chose the token (speculative lanes; null for plain lanes) */
  origins: (LaneSpeculation['origin'] | null)[];
  /** per step: the verification round that fed it (speculative lanes) */
  rounds: (number | null)[];
  /** round statistics up to the last shown step (speculative lanes) */
  specStats: LaneSpecStats | null;
  callsPerToken: (number | null)[];
  /** tokens the lane has decoded past the shown step */
  ahead: number;
}

export class CompareState {
  status = $state<CompareStatus>('idle');
  progress = $state.raw<LoadProgressView | null>(null);
  model = $state.raw<ModelInfo | null>(null);
  /** the model to load (src/lib/models/choice.ts); null: the index's default */
  modelChoice = $state.raw<ModelChoice | null>(null);
  /** the model the opened link was made with (its `model=`), if it names one */
  linkedModel: LinkedModel | null = null;
  /** the opened address carried a link's setup (then without `model=` it was made on the default model) */
  fromLink = false;

  /** the model links name (`model=`): only once one was chosen (a page on the default model writes its links as before, and they open on the default) */
  private linkModel(): LinkedModel | null {
    return this.modelChoice && this.model ? { id: this.model.id, sha256: this.model.sha256 } : null;
  }
  policies = $state.raw<PolicyInfo[]>([]);
  error = $state.raw<ShownError | null>(null);
  notice = $state<string | null>(null);
  /** what the opened link had wrong (named fields, what fell back to defaults); stays until dismissed */
  linkProblems = $state<string | null>(null);

  // ---- setup ----
  prompt = $state(COMPARE_DEFAULTS.prompt);
  sampler = $state<SamplerSettings>({ ...COMPARE_DEFAULTS.sampler });
  /** each lane's policy as edited (applied on Reset): the members of a composition in order, one for a single policy */
  lanes = $state<PolicyChoice[][]>([]);
  /** per lane: the engine's message for the spec typed into it last, if it refused it */
  laneSpecErrors = $state<(string | null)[]>([]);
  /** per lane: the drafter spec as typed ('' = plain decoding), applied on Reset */
  drafters = $state<string[]>([]);
  /** lane specs from a link, resolved into `lanes` once the policies are known */
  private pendingSpecs: string[] = [...COMPARE_DEFAULTS.lanes];
  runSteps = $state(32);
  /** a link's run still to decode and the step it selects (cleared once the page has arrived there) */
  private opening = $state.raw<{ steps: number; at: number | null } | null>(null);

  // ---- running ----
  promptView = $state.raw<PromptView | null>(null);
  activeSpecs = $state.raw<string[]>([]);
  /** per running lane: its drafter (canonical, as the worker resolved it) or null */
  activeDrafters = $state.raw<(string | null)[]>([]);
  appliedSetup = $state<string | null>(null);
  steps = $state.raw<LanesStep[]>([]);
  laneStates = $state.raw<LaneState[]>([]);
  activity = $state<CompareActivity>('idle');
  lastStop = $state<StopReason | null>(null);
  /** the prompt and sampler the running lanes started with (Reset): what their tokens came from */
  ranWith = $state.raw<{ prompt: string; sampler: SamplerSettings } | null>(null);
  /** the selected step (0-based) of every lane; null follows the newest */
  selected = $state<number | null>(null);

  constructor(
    readonly client: EngineClient,
    readonly urls: EngineUrls & { heldout?: string },
    readonly threads = 1,
  ) {
    client.onCrash = (message) => {
      this.status = 'crashed';
      this.activity = 'idle';
      this.error = { kind: 'crash', message, action: 'restart' };
    };
  }

  readonly canStep = $derived(this.status === 'ready' && this.activity === 'idle' && this.activeSpecs.length > 0);
  readonly running = $derived(this.activity === 'running');
  /** canonical spec per lane as edited (the engine's form); null while a lane has an invalid parameter */
  readonly currentSpecs = $derived(this.lanes.map((lane) => specOfChoices(lane)));
  /** per lane: why the typed drafter spec is refused (the engine's parser), or null */
  readonly drafterErrors = $derived(this.drafters.map((text) => drafterProblem(text.trim())));
  readonly setupChanged = $derived(this.appliedSetup !== null && this.appliedSetup !== this.setupKey());
  readonly canAdd = $derived(this.lanes.length < MAX_LANES);
  readonly canRemove = $derived(this.lanes.length > MIN_LANES);

  /** Per-lane tokens, divergence from lane 1 and metric series (by step). */
  readonly summaries = $derived.by((): LaneSummary[] => {
    const steps = this.steps;
    const n = this.activeSpecs.length;
    const base = steps.map((s) => s.lanes[0]?.token.id);
    return Array.from({ length: n }, (_, i) => {
      const own = steps.map((s) => s.lanes[i]);
      const tokens = own.map((l) => l.token.id);
      const diverged = tokens.map((t, k) => i > 0 && t !== base[k]);
      const first = diverged.indexOf(true);
      const kl = own.map((l) => l.kl);
      const top1 = own.map((l) => l.top1);
      const klValues = kl.filter((v): v is number => v !== null);
      const topValues = top1.filter((v): v is boolean => v !== null);
      const spec = own.map((l) => l.speculative ?? null);
      const drafter = this.activeDrafters[i] ?? null;
      return {
        spec: this.activeSpecs[i],
        tokens,
        pieces: own.map((l) => l.token.piece),
        diverged,
        firstDivergence: first < 0 ? null : first,
        kl,
        top1,
        mass: own.map((l) => l.mass),
        meanKl: klValues.length ? klValues.reduce((a, b) => a + b, 0) / klValues.length : null,
        agreement: topValues.length ? topValues.filter(Boolean).length / topValues.length : null,
        memory: own.length ? own[own.length - 1].memory : (this.laneStates[i]?.memory ?? null),
        drafter,
        origins: spec.map((x) => x?.origin ?? null),
        rounds: spec.map((x) => x?.round ?? null),
        specStats: drafter === null ? null : (spec.at(-1)?.stats ?? this.laneStates[i]?.speculative ?? null),
        callsPerToken: spec.map((x) => x?.stats.targetCallsPerToken ?? null),
        ahead: this.laneStates[i]?.ahead ?? 0,
      };
    });
  });

  private setupKey(): string {
    return JSON.stringify({ prompt: this.prompt, sampler: this.sampler, lanes: this.currentSpecs, drafters: this.drafters.map((d) => d.trim()) });
  }

  /** The steps a link carries: those decoded (none: undefined, nothing runs when it opens); a link's own while it is being opened. */
  linkSteps(): number | undefined {
    if (this.opening) return this.opening.steps;
    return this.steps.length > 0 ? this.steps.length : undefined;
  }

  /** The Run button's length as a link carries it. */
  private runLength(): number {
    return Math.min(MAX_LINK_STEPS, Math.max(1, Math.floor(this.runSteps) || 1));
  }

  /** Selects a step of every lane (null: follow the newest); out of range selects nothing. */
  select(step: number | null): void {
    this.selected = step !== null && Number.isInteger(step) && step >= 0 && step < this.steps.length ? step : null;
  }

  /**
   * The setup as a link query. Once lanes have decoded: the setup they ran with (prompt, sampler,
   * lanes as they ran), the steps and the selected step — so the link decodes what the page shows,
   * whatever was edited since. Before: the setup as edited (a lane with an invalid parameter as it
   * last ran). The Run length either way.
   */
  query(): string {
    const steps = this.linkSteps();
    const ran = this.ranWith;
    if (steps !== undefined && ran && !this.opening) {
      const lanes = this.activeSpecs.map((spec, i) => laneSpec(spec, this.activeDrafters[i] ?? null));
      return withModelParam(encodeCompareQuery({ prompt: ran.prompt, sampler: { ...ran.sampler }, lanes, steps, at: this.selected, run: this.runLength() }), this.linkModel());
    }
    // a lane with no valid spec and none that ran is left out (the link decoder fills in defaults);
    // a drafter that does not parse is written as the lane last ran
    const lanes = this.lanes.length
      ? this.currentSpecs.flatMap((spec, i) => {
          const policy = spec ?? this.activeSpecs[i];
          if (!policy) return [];
          const typed = (this.drafters[i] ?? '').trim();
          return [laneSpec(policy, this.drafterErrors[i] ? (this.activeDrafters[i] ?? null) : typed)];
        })
      : this.pendingSpecs;
    const at = this.opening ? this.opening.at : this.selected;
    return withModelParam(encodeCompareQuery({ prompt: this.prompt, sampler: { ...this.sampler }, lanes, steps, at, run: this.runLength() }), this.linkModel());
  }

  /**
   * Takes the setup from a link's query string; returns the problems found (shown until
   * dismissed). A link with a run length runs every lane to it once they have started (load).
   */
  applyQuery(search: string): string[] {
    const { setup, problems } = decodeCompareQuery(search, COMPARE_DEFAULTS);
    this.prompt = setup.prompt;
    this.sampler = { ...setup.sampler };
    this.pendingSpecs = setup.lanes;
    if (setup.run !== undefined) this.runSteps = setup.run;
    if (setup.steps !== undefined) this.opening = { steps: setup.steps, at: setup.at ?? null };
    this.linkProblems = problems.length ? problems.join('; ') : null;
    this.linkedModel = readModelParam(search);
    this.fromLink = [...new URLSearchParams(search.startsWith('?') ? search.slice(1) : search).keys()].some((key) => key !== 'v');
    if (this.policies.length) this.resolveLanes();
    return problems;
  }

  /** Decodes a link's run in every lane, then selects its step (load, after the lanes started). */
  private async openRun(): Promise<void> {
    const open = this.opening;
    if (!open) return;
    try {
      if (this.activeSpecs.length) await this.advance(open.steps, 'running');
      if (open.at !== null) {
        if (open.at < this.steps.length) this.selected = open.at;
        else this.addLinkProblem(`the link selects step ${open.at}, but the lanes decoded ${this.steps.length} step(s): following the newest`);
      }
    } finally {
      this.opening = null;
    }
  }

  private addLinkProblem(problem: string): void {
    this.linkProblems = this.linkProblems ? `${this.linkProblems}; ${problem}` : problem;
  }

  /**
   * Lane specs → members typed by the engine's schemas. A lane with a policy this model does not
   * offer, or that the engine refuses, is dropped with a notice that says why.
   */
  private resolveLanes(): void {
    const lanes: PolicyChoice[][] = [];
    const drafters: string[] = [];
    const problems: string[] = [];
    for (const text of this.pendingSpecs) {
      const { policy: spec, drafter } = splitLaneSpec(text);
      const unknown = policyIds(spec).filter((id) => !this.policies.some((p) => p.id === id));
      if (unknown.length) {
        problems.push(`unknown policy in the link: ${spec}`);
        continue;
      }
      try {
        lanes.push(choicesFromSpec(spec));
        drafters.push(drafter ?? '');
      } catch (error) {
        problems.push(`ignored the lane ${spec}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    for (const spec of COMPARE_DEFAULTS.lanes) {
      if (lanes.length >= MIN_LANES) break;
      lanes.push(choicesFromSpecOrNull(spec) ?? [defaultChoice(this.policies[0])]);
      drafters.push('');
    }
    this.lanes = lanes;
    this.drafters = drafters;
    this.laneSpecErrors = lanes.map(() => null);
    for (const problem of problems) this.addLinkProblem(problem);
  }

  async load(): Promise<void> {
    this.status = 'loading';
    this.error = null;
    // until the new model is ready nothing may name the old one (links, the header)
    this.model = null;
    try {
      const ready = await loadChosenModel(this.client, this.urls, this.threads, this.modelChoice, (progress) => (this.progress = progress));
      this.model = ready.model;
      this.policies = ready.policies;
      const mismatch = this.linkedModel ? modelMismatch(ready.model, this.linkedModel) : null;
      if (mismatch) this.addLinkProblem(`this link ${mismatch}`);
      this.resolveLanes();
      this.status = 'ready';
      await this.start();
      await this.openRun();
    } catch (error) {
      if ((this.status as CompareStatus) === 'crashed') return;
      const failure = EngineFailure.from(error);
      this.status = 'error';
      this.error = { kind: failure.kind, message: failure.message, action: 'retry' };
    }
  }

  async restart(): Promise<void> {
    this.client.restart();
    this.steps = [];
    this.activeSpecs = [];
    await this.load();
  }

  /** Loads another model (the picker) and starts the lanes on it. */
  async chooseModel(choice: ModelChoice): Promise<void> {
    if (sameChoice(choice, this.modelChoice) && this.status === 'ready') return;
    this.modelChoice = choice;
    this.steps = [];
    this.activeSpecs = [];
    await this.load();
  }

  private fail(error: unknown): void {
    if (this.status === 'crashed') return;
    const failure = EngineFailure.from(error);
    if (failure.kind === 'crash') return;
    this.error = { kind: failure.kind, message: failure.message, action: 'dismiss' };
  }

  dismissError(): void {
    this.error = null;
  }

  // ---- lanes ----

  /** A new lane: the next of H2O, TOVA, SnapKV … whose policies no lane uses yet, with a budget like the default window's. */
  addLane(): void {
    if (!this.canAdd || this.policies.length === 0) return;
    const used = new Set(this.lanes.flatMap((lane) => lane.map((member) => member.id)));
    const next = NEW_LANES.find((spec) => policyIds(spec).every((id) => !used.has(id) && this.policies.some((p) => p.id === id)));
    this.lanes = [...this.lanes, (next && choicesFromSpecOrNull(next)) || [defaultChoice(this.policies[0])]];
    this.laneSpecErrors = [...this.laneSpecErrors, null];
    this.drafters = [...this.drafters, ''];
  }

  removeLane(index: number): void {
    if (!this.canRemove) return;
    this.lanes = this.lanes.filter((_, i) => i !== index);
    this.laneSpecErrors = this.laneSpecErrors.filter((_, i) => i !== index);
    this.drafters = this.drafters.filter((_, i) => i !== index);
  }

  /** A lane's drafter spec as typed ('' or `none`: plain decoding); it runs from the next Reset. */
  setDrafter(index: number, text: string): void {
    if (index < 0 || index >= this.lanes.length) return;
    this.drafters = this.lanes.map((_, i) => (i === index ? text : (this.drafters[i] ?? '')));
  }

  /** Picks the policy of one member of a lane (its defaults); member 0 is the lane's policy itself. */
  pickPolicy(index: number, id: string, member = 0): void {
    const info = this.policies.find((p) => p.id === id);
    const lane = this.lanes[index];
    if (!info || !lane || member < 0 || member >= lane.length) return;
    this.editLane(index, replaceMember(lane, member, defaultChoice(info)));
  }

  setParam(index: number, name: string, value: ParamValue, member = 0): void {
    const lane = this.lanes[index];
    if (lane) this.editLane(index, withMemberParam(lane, member, name, value));
  }

  /** A lane may compose policies: "then …" adds a member that runs after the lane's others. */
  addMember(index: number): void {
    const lane = this.lanes[index];
    if (!lane || lane.length >= MAX_PICKED_MEMBERS) return;
    const next = nextMember(lane, this.policies, this.model?.calibration ?? false);
    if (next) this.editLane(index, [...lane, next]);
  }

  removeMember(index: number, member: number): void {
    const lane = this.lanes[index];
    if (lane) this.editLane(index, withoutMember(lane, member));
  }

  /**
   * Takes a typed spec or composition for a lane (it runs from the next Reset). The engine parses
   * it; a spec it refuses is named in laneSpecErrors and leaves the lane as it was.
   */
  setLaneSpec(index: number, text: string): boolean {
    if (!this.lanes[index]) return false;
    try {
      this.editLane(index, choicesFromSpec(text));
      return true;
    } catch (error) {
      this.laneSpecErrors = this.laneSpecErrors.map((e, i) => (i === index ? (error instanceof Error ? error.message : String(error)) : e));
      return false;
    }
  }

  private editLane(index: number, members: PolicyChoice[]): void {
    this.lanes = this.lanes.map((lane, i) => (i === index ? members : lane));
    this.laneSpecErrors = this.laneSpecErrors.map((e, i) => (i === index ? null : e));
  }

  // ---- stepping ----

  /** (Re)starts every lane from the prompt with the current setup (Reset). */
  async start(): Promise<void> {
    if (this.status !== 'ready' || this.activity !== 'idle') return;
    this.activity = 'prefilling';
    this.notice = null;
    this.error = null;
    try {
      const started = await this.client.request<Extract<EngineEvent, { type: 'compare-started' }>>({
        type: 'compare-start',
        prompt: this.prompt,
        sampler: { ...this.sampler },
        // copies: postMessage must not see the runes' proxies
        lanes: this.lanes.map((lane) => lane.map((member) => ({ id: member.id, params: { ...member.params } }))),
        // the engine parses them again and refuses a bad one with its message
        drafters: this.lanes.map((_, i) => (this.drafters[i] ?? '').trim() || null),
        modelsUrl: this.urls.models,
        // static/indexes/ sits next to static/models/
        indexesUrl: indexesUrlOf(this.urls.models),
      });
      this.promptView = started.prompt;
      this.laneStates = started.lanes;
      this.activeSpecs = started.lanes.map((l) => l.policy);
      this.activeDrafters = started.lanes.map((l) => l.drafter ?? null);
      this.steps = [];
      this.selected = null;
      this.lastStop = null;
      this.ranWith = { prompt: this.prompt, sampler: { ...this.sampler } };
      this.appliedSetup = this.setupKey();
    } catch (error) {
      this.fail(error);
    } finally {
      this.activity = 'idle';
    }
  }

  private async advance(steps: number, activity: CompareActivity): Promise<void> {
    if (!this.canStep) return;
    this.activity = activity;
    this.notice = null;
    let buffer: LanesStep[] = [];
    let scheduled = false;
    const flush = () => {
      scheduled = false;
      if (buffer.length) {
        this.steps = this.steps.concat(buffer);
        buffer = [];
      }
    };
    try {
      const done = await this.client.request<Extract<EngineEvent, { type: 'compare-done' }>>({ type: 'compare-step', steps }, (event) => {
        if (event.type !== 'compare-step') return;
        buffer.push(event.view);
        if (!scheduled) {
          scheduled = true;
          setTimeout(flush, 30);
        }
      });
      flush();
      this.laneStates = done.lanes;
      this.lastStop = done.reason;
      if (done.reason === 'context-full') this.notice = done.message ?? 'the context is full';
    } catch (error) {
      flush();
      this.fail(error);
    } finally {
      this.activity = 'idle';
    }
  }

  step(): Promise<void> {
    return this.advance(1, 'stepping');
  }

  run(): Promise<void> {
    return this.advance(Math.max(1, Math.floor(this.runSteps) || 1), 'running');
  }

  pause(): void {
    if (this.activity === 'running') this.client.send({ type: 'pause' });
  }

  toggleRun(): void {
    if (this.activity === 'running') this.pause();
    else void this.run();
  }

  async back(n = 1): Promise<void> {
    if (!this.canStep || this.steps.length === 0) return;
    this.activity = 'rewinding';
    this.notice = null;
    try {
      const rewound = await this.client.request<Extract<EngineEvent, { type: 'compare-rewound' }>>({ type: 'compare-back', steps: n });
      this.steps = this.steps.slice(0, rewound.stepCount);
      if (this.selected !== null && this.selected >= this.steps.length) this.selected = null;
      this.laneStates = rewound.lanes;
      this.lastStop = null;
    } catch (error) {
      this.fail(error);
    } finally {
      this.activity = 'idle';
    }
  }
}
