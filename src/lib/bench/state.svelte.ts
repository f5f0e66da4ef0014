/**
 * The /bench page's state (Svelte 5 runes): an evaluation (engine/eval — the same code as
 * `kvscope eval`) run in the engine worker: perplexity of held-out text or passkey retrieval over a
 * depth × length grid, for chosen policies at chosen budgets. With `evalWorkers` > 1 the runs are
 * spread over that many evaluation workers (src/lib/worker/eval-pool.ts), with the same report.
 * Rows arrive as they finish; Cancel stops between steps and keeps what finished. The page only
 * lays the report out.
 *
 * The spec task is `kvscope eval --task spec` (engine/eval/spec.ts): chosen drafters against plain
 * decoding of held-out prompts, on the target's own policy. It always runs in the engine worker,
 * one decode after another, whatever `evalWorkers` says: decodes running side by side would share
 * the cores and distort the wall-clock speed-up it measures.
 */
import { sameChoice, type ModelChoice } from '../models/choice.ts';
import { readModelParam, withModelParam, type LinkedModel } from '../models/link-param.ts';
import { loadChosenModel } from '../models/load.ts';
import { modelMismatch } from '../explorer/open-experiment.ts';
import { EngineClient, EngineFailure } from '../worker/client.ts';
import type { EngineEvent, LoadProgressView, ModelInfo, PolicyInfo } from '../worker/protocol.ts';
import type { EvalConfig, EvalProgress, EvalReport, EvalRow, SpecProgress, SpecReport } from '../worker/lab-protocol.ts';
import { indexesUrlOf } from '../worker/drafter-env.ts';
import { planSpec, planSpecText, type DrafterChoice, type SpecPlan, type SpecTextSet } from './spec.ts';
import { benchDefaults, parseNumberList, type BenchSetup, type EvalTaskName } from './setup.ts';
import { decodeBenchQuery, encodeBenchQuery } from './url.ts';
import { expandRuns, type EvalRun } from '../../../engine/eval/budgets.ts';
import { splitPolicyList } from '../../../engine/policies/spec.ts';
import type { EngineUrls, ShownError } from '../explorer/state.svelte.ts';

export type BenchStatus = 'idle' | 'loading' | 'ready' | 'error' | 'crashed';

/** The model a report ran on: its info (id, sha256: what links name) and the choice that loaded it (where its tokenizer is). */
export interface ReportModel {
  info: ModelInfo;
  choice: ModelChoice | null;
}

/** One colour (and dash) per policy id, stable across charts: Okabe–Ito, dashed past eight. */
export const POLICY_STYLE: Record<string, { color: string; dash: string }> = {
  full: { color: '#000000', dash: '6 3' },
  window: { color: '#E69F00', dash: '' },
  streaming: { color: '#56B4E9', dash: '' },
  h2o: { color: '#009E73', dash: '' },
  tova: { color: '#F0E442', dash: '' },
  snapkv: { color: '#0072B2', dash: '' },
  windowkv: { color: '#D55E00', dash: '' },
  razor: { color: '#CC79A7', dash: '' },
  compresskv: { color: '#0072B2', dash: '4 2' },
  lacache: { color: '#D55E00', dash: '4 2' },
  d2o: { color: '#009E73', dash: '4 2' },
};

export function policyStyle(id: string): { color: string; dash: string } {
  return POLICY_STYLE[id] ?? { color: '#666666', dash: '2 2' };
}

const DEFAULTS: BenchSetup = benchDefaults();

export class BenchState {
  status = $state<BenchStatus>('idle');
  progressLoad = $state.raw<LoadProgressView | null>(null);
  model = $state.raw<ModelInfo | null>(null);
  /** the model to load (src/lib/models/choice.ts); null: the index's default */
  modelChoice = $state.raw<ModelChoice | null>(null);
  /** the model the opened link was made with (its `model=`), if it names one */
  linkedModel: LinkedModel | null = null;

  /** the model links name (`model=`): only once one was chosen (a page on the default model writes its links as before) */
  private linkModel(): LinkedModel | null {
    return this.modelChoice && this.model ? { id: this.model.id, sha256: this.model.sha256 } : null;
  }
  policies = $state.raw<PolicyInfo[]>([]);
  error = $state.raw<ShownError | null>(null);

  // ---- setup (setup.ts: BenchSetup; the link carries all of it, url.ts) ----
  task = $state<EvalTaskName>(DEFAULTS.task);
  chosen = $state<string[]>([...DEFAULTS.chosen]);
  /** extra policy specs, whitespace-separated (e.g. h2o:accumulate=mean) */
  extra = $state(DEFAULTS.extra);
  budgets = $state(DEFAULTS.budgets);
  seed = $state(DEFAULTS.seed);
  windows = $state(DEFAULTS.windows);
  tokens = $state(DEFAULTS.tokens);
  prefix = $state(DEFAULTS.prefix);
  lengths = $state(DEFAULTS.lengths);
  depths = $state(DEFAULTS.depths);
  trials = $state(DEFAULTS.trials);
  // spec task
  drafters = $state<DrafterChoice[]>(DEFAULTS.drafters.map((d) => ({ ...d })));
  /** the target's KV-cache policy */
  targetPolicy = $state(DEFAULTS.targetPolicy);
  /** γ values each drafter runs at; blank = each spec as given */
  gammas = $state(DEFAULTS.gammas);
  specPrompts = $state(DEFAULTS.specPrompts);
  specPromptTokens = $state(DEFAULTS.specPromptTokens);
  specTokens = $state(DEFAULTS.specTokens);
  temperature = $state(DEFAULTS.temperature);
  texts = $state<SpecTextSet[]>([...DEFAULTS.texts]);
  /** what the opened link had wrong (named fields that fell back to defaults); stays until dismissed */
  linkProblems = $state<string | null>(null);
  /** the page was opened with a link's setup (it says so: a link never starts a run) */
  fromLink = $state(false);

  // ---- run ----
  running = $state(false);
  cancelling = $state(false);
  progress = $state.raw<EvalProgress | SpecProgress | null>(null);
  /** rows that finished (before the report), in run order */
  rows = $state.raw<{ record: number; policy: string; row: EvalRow; run: number }[]>([]);
  report = $state.raw<EvalReport | null>(null);
  /** the spec task's last report */
  specReport = $state.raw<SpecReport | null>(null);
  /** the model each task's last report ran on: its cells' links name it, whatever is loaded since */
  reportModels = $state.raw<{ eval: ReportModel | null; spec: ReportModel | null }>({ eval: null, spec: null });
  /** the link of the setup each task's last report ran with (a notebook cell links the run, not later edits) */
  private ranQueries: { eval: string | null; spec: string | null } = { eval: null, spec: null };

  constructor(
    readonly client: EngineClient,
    readonly urls: EngineUrls & { heldout: string },
    readonly threads = 1,
    /** runs evaluated at once, each in its own worker with its own copy of the model */
    readonly evalWorkers = 1,
  ) {
    client.onCrash = (message) => {
      this.status = 'crashed';
      this.running = false;
      this.error = { kind: 'crash', message, action: 'restart' };
    };
  }

  /** The evaluation the setup describes, or the reason it is not valid. */
  readonly plan = $derived.by((): { config: EvalConfig; runs: EvalRun[] } | { problem: string } => {
    if (this.task === 'spec') return { problem: 'the spec task has its own plan (specPlan)' };
    try {
      const specs = [...this.chosen, ...splitPolicyList(this.extra)];
      if (specs.length === 0) return { problem: 'choose at least one policy' };
      const budgets = parseNumberList(this.budgets, 'budgets');
      const runs = expandRuns(specs, budgets);
      const config: EvalConfig =
        this.task === 'ppl'
          ? { task: 'ppl', policies: specs, budgets, ppl: { windows: this.windows, tokens: this.tokens, prefix: this.prefix, seed: this.seed } }
          : {
              task: 'needle',
              policies: specs,
              budgets,
              needle: { lengths: parseNumberList(this.lengths, 'lengths'), depths: parseNumberList(this.depths, 'depths', false), trials: this.trials, seed: this.seed },
            };
      return { config, runs };
    } catch (error) {
      return { problem: (error as Error).message };
    }
  });

  /** The speculative evaluation the setup describes, or the reason it is not valid. */
  readonly specPlan = $derived.by(
    (): SpecPlan =>
      planSpec({
        drafters: this.drafters,
        policy: this.targetPolicy,
        gammas: this.gammas,
        prompts: this.specPrompts,
        promptTokens: this.specPromptTokens,
        tokens: this.specTokens,
        temperature: this.temperature,
        seed: this.seed,
        texts: this.texts,
      }),
  );

  /** The current task's plan: its problem, or what it will run (one line). */
  readonly planLine = $derived.by((): { problem: string } | { runs: number; text: string } => {
    if (this.task === 'spec') {
      const plan = this.specPlan;
      if ('problem' in plan) return plan;
      const texts = plan.config.settings?.texts ?? [];
      return { runs: plan.runs.length, text: `${plan.runs.map((r) => planSpecText(r.spec)).join(' · ')} on ${texts.join(' + ')}, one at a time` };
    }
    const plan = this.plan;
    if ('problem' in plan) return plan;
    return { runs: plan.runs.length, text: plan.runs.map((r) => (r.budget === null ? r.id : `${r.id}@${r.budget}`)).join(', ') };
  });

  readonly fraction = $derived(this.progress && this.progress.total > 0 ? this.progress.done / this.progress.total : 0);

  async load(): Promise<void> {
    this.status = 'loading';
    this.error = null;
    // until the new model is ready nothing may name the old one (links, the cells' inputs)
    this.model = null;
    try {
      const ready = await loadChosenModel(this.client, this.urls, this.threads, this.modelChoice, (progress) => (this.progressLoad = progress));
      this.model = ready.model;
      const mismatch = this.linkedModel ? modelMismatch(ready.model, this.linkedModel) : null;
      if (mismatch) this.linkProblems = [this.linkProblems, `this link ${mismatch}`].filter(Boolean).join('; ');
      this.policies = ready.policies;
      if (!ready.model.calibration) this.chosen = this.chosen.filter((id) => !ready.policies.find((p) => p.id === id)?.needs.calibration);
      this.status = 'ready';
    } catch (error) {
      if ((this.status as BenchStatus) === 'crashed') return;
      const failure = EngineFailure.from(error);
      this.status = 'error';
      this.error = { kind: failure.kind, message: failure.message, action: 'retry' };
    }
  }

  async restart(): Promise<void> {
    this.client.restart();
    await this.load();
  }

  /** Loads another model (the picker); reports of the old one stay until the next evaluation. */
  async chooseModel(choice: ModelChoice): Promise<void> {
    if (sameChoice(choice, this.modelChoice) && this.status === 'ready') return;
    this.modelChoice = choice;
    await this.load();
  }

  dismissError(): void {
    this.error = null;
  }

  toggle(id: string, on: boolean): void {
    this.chosen = on ? [...this.chosen.filter((c) => c !== id), id] : this.chosen.filter((c) => c !== id);
  }

  /** Turns a drafter of the picker on or off. */
  toggleDrafter(id: string, on: boolean): void {
    this.drafters = this.drafters.map((d) => (d.id === id ? { ...d, on } : d));
  }

  /** Edits a drafter's spec (typing a spec turns it on). */
  setDrafterSpec(id: string, spec: string): void {
    this.drafters = this.drafters.map((d) => (d.id === id ? { ...d, spec, on: d.on || spec.trim() !== '' } : d));
  }

  toggleText(text: SpecTextSet, on: boolean): void {
    this.texts = on ? [...this.texts.filter((t) => t !== text), text] : this.texts.filter((t) => t !== text);
  }

  async run(): Promise<void> {
    if (this.task === 'spec') return this.runSpec();
    const plan = this.plan;
    if (this.status !== 'ready' || this.running || 'problem' in plan) return;
    this.report = null;
    this.rows = [];
    this.ranQueries.eval = this.query();
    this.reportModels = { ...this.reportModels, eval: this.ranOn() };
    await this.evaluate({ done: 0, total: 1, run: 0, runs: plan.runs.length, spec: '', message: 'starting…' }, async () => {
      const parallel = this.evalWorkers > 1 ? { workers: this.evalWorkers, modelsUrl: this.urls.models, wasmUrl: this.urls.wasm } : undefined;
      const command = { type: 'eval' as const, config: plan.config, heldoutUrl: this.urls.heldout, parallel };
      const done = await this.client.request<Extract<EngineEvent, { type: 'eval-done' }>>(command, (event) => {
        if (event.type === 'eval-progress') this.progress = event.progress;
        // in parallel, rows finish out of order: keep them in run order, as the report has them
        else if (event.type === 'eval-row') this.rows = [...this.rows, { record: event.record, policy: event.policy, row: event.row, run: event.run }].sort((a, b) => a.run - b.run);
      });
      this.report = done.report;
      return done.report.cancelled;
    });
  }

  /** The spec task: in the engine worker only, never spread over evaluation workers (see the header). */
  private async runSpec(): Promise<void> {
    const plan = this.specPlan;
    if (this.status !== 'ready' || this.running || 'problem' in plan) return;
    this.specReport = null;
    this.ranQueries.spec = this.query();
    this.reportModels = { ...this.reportModels, spec: this.ranOn() };
    await this.evaluate({ done: 0, total: 1, message: 'starting…' }, async () => {
      const command = { type: 'eval-spec' as const, config: plan.config, heldoutUrl: this.urls.heldout, modelsUrl: this.urls.models, indexesUrl: indexesUrlOf(this.urls.models) };
      const done = await this.client.request<Extract<EngineEvent, { type: 'eval-spec-done' }>>(command, (event) => {
        if (event.type === 'eval-spec-progress') this.progress = event.progress;
      });
      this.specReport = done.report;
      return done.report.cancelled;
    });
  }

  /** The model an evaluation starting now runs on (status 'ready': one is loaded). */
  private ranOn(): ReportModel | null {
    return this.model ? { info: this.model, choice: this.modelChoice } : null;
  }

  /** One evaluation of either task: the running flags, the error shown, the closing progress line. `work` says whether it was cancelled. */
  private async evaluate(start: EvalProgress | SpecProgress, work: () => Promise<boolean>): Promise<void> {
    this.running = true;
    this.cancelling = false;
    this.error = null;
    this.progress = start;
    try {
      const cancelled = await work();
      const last = this.progress;
      if (last) this.progress = { ...last, done: cancelled ? last.done : last.total, message: cancelled ? 'cancelled' : 'done' };
    } catch (error) {
      const failure = EngineFailure.from(error);
      if (failure.kind !== 'crash') this.error = { kind: failure.kind, message: failure.message, action: 'dismiss' };
    } finally {
      this.running = false;
      this.cancelling = false;
    }
  }

  cancel(): void {
    if (!this.running) return;
    this.cancelling = true;
    this.client.send({ type: 'pause' });
  }

  /** The setup as the form holds it (copies: a link or a cell must not see the runes' proxies). */
  setup(): BenchSetup {
    return {
      task: this.task,
      chosen: [...this.chosen],
      extra: this.extra,
      budgets: this.budgets,
      seed: this.seed,
      windows: this.windows,
      tokens: this.tokens,
      prefix: this.prefix,
      lengths: this.lengths,
      depths: this.depths,
      trials: this.trials,
      drafters: this.drafters.map((d) => ({ ...d })),
      targetPolicy: this.targetPolicy,
      gammas: this.gammas,
      specPrompts: this.specPrompts,
      specPromptTokens: this.specPromptTokens,
      specTokens: this.specTokens,
      temperature: this.temperature,
      texts: [...this.texts],
    };
  }

  /** The setup as a link query (url.ts). */
  query(): string {
    return withModelParam(encodeBenchQuery(this.setup()), this.linkModel());
  }

  /** The link query of the setup the shown task's report ran with (the form now before any report). */
  reportQuery(): string {
    return (this.task === 'spec' ? this.ranQueries.spec : this.ranQueries.eval) ?? this.query();
  }

  /**
   * Takes the setup from a link's query string (setup only: a link never starts an evaluation);
   * returns the problems found, kept on screen until dismissed.
   */
  /** Takes the setup from a link's query string (`fromLink`: it carried one); returns the problems it named. */
  applyQuery(search: string): string[] {
    const { setup, problems, present } = decodeBenchQuery(search, DEFAULTS);
    Object.assign(this, setup);
    this.linkProblems = problems.length ? problems.join('; ') : null;
    this.linkedModel = readModelParam(search);
    this.fromLink = present;
    return problems;
  }

  /** The report as a JSON file name + text. */
  reportJson(): { fileName: string; json: string } | null {
    const r = this.task === 'spec' ? this.specReport : this.report;
    if (!r) return null;
    const safe = (s: string) => s.replace(/[^A-Za-z0-9_.-]+/g, '_');
    return { fileName: `kvscope-eval-${r.task}-${safe(r.model.id)}.json`, json: `${JSON.stringify(r, null, 2)}\n` };
  }
}
