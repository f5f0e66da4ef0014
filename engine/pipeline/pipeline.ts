/**
 * The method pipeline (docs/architecture.md, "Stages"): turns a method's stages into a Policy.
 *
 * A method file calls `defineMethod` with its citation, parameter schema and a `build` that
 * returns its stages for validated parameters. The pipeline then owns what every method used to
 * hand-write: the layer × KV head loop, when to act (prefill / each step / on attach), ratio
 * budgets resolved against the prompt length, declaring and loading the scorer's store columns,
 * the scores handed to the trace, JSON state for snapshots and what a method says when attached
 * mid-run without history.
 */
import { NO_CHANGE, type Decision, type HeadDecision } from '../cache/decision.ts';
import type { ColumnSpec, PolicyCache } from '../cache/view.ts';
import type { JsonValue } from '../types.ts';
import { indexRange } from '../policies/types.ts';
import type {
  Policy,
  PolicyContext,
  PolicyDefinition,
  PolicyNeeds,
  PolicyParams,
  PrefillObservation,
  ProtectedHeads,
  StateScope,
  StepObservation,
} from '../policies/types.ts';
import type { Allocator, DecisionDraft, HeadBudget, HeadDraft, Phase, Scorer, Selector, StageEnv, StageState, Transform } from './stages.ts';

export interface MethodStages {
  scorer?: Scorer;
  allocator?: Allocator;
  /** default: keep the newest `budget.total` entries */
  selector?: Selector;
  transforms?: readonly Transform[];
  protects?: ProtectedHeads;
  /**
   * the method's own JSON state format, replacing the pipeline's ({promptTokens, stages, columns})
   * — for methods whose state predates the pipeline and is stored in links and notebooks
   */
  state?: StageState;
  /** the trace's one-line note for a decision (default: "<id>: evicted N entries") */
  note?(summary: DecisionDraft['summary'], env: StageEnv, budgets: HeadBudget[][] | null): string | undefined;
}

/** A method: its PolicyDefinition fields (`needs` with default parameters), plus how it runs its stages. */
export interface MethodSpec extends Omit<PolicyDefinition, 'create'> {
  /** hooks at which the method decides (default all); its scorer observes at every hook */
  acts?: { prefill?: boolean; step?: boolean; attach?: boolean };
  /** `always`: every head's decision carries the scores (H2O); `selected`: only heads it selected in */
  reportScores?: 'always' | 'selected';
  /** `params` are complete and validated against the schema */
  build(params: PolicyParams, context: PolicyContext): MethodStages;
}

const UNLIMITED: HeadBudget = { total: Infinity, recent: 0 };

/** Keeps the newest `total` entries: the selector of a method that names none. */
export const newestSelector: Selector = {
  select(_env, head) {
    const keep = Math.max(1, Math.min(head.length, Math.floor(head.budget.total)));
    return indexRange(head.length - keep, head.length);
  },
};

function mergeNeeds(base: PolicyNeeds, parts: readonly (Partial<PolicyNeeds> | undefined)[]): PolicyNeeds {
  const needs: PolicyNeeds = { ...base };
  for (const part of parts) {
    if (!part) continue;
    needs.attention ||= part.attention ?? false;
    needs.queries ||= part.queries ?? false;
    needs.calibration ||= part.calibration ?? false;
    if (part.prefillWindow !== undefined) needs.prefillWindow = Math.max(needs.prefillWindow ?? 0, part.prefillWindow);
  }
  return needs;
}

interface PortableColumns {
  name: string;
  /** [layer·Hkv + kvHead] → values */
  heads: number[][];
}

class PipelinePolicy implements Policy {
  readonly id: string;
  readonly needs: PolicyNeeds;
  readonly protects?: ProtectedHeads;
  readonly withoutHistory: string;
  private promptTokens = 0;
  private pendingColumns: PortableColumns[] | null = null;
  private lastCache: PolicyCache | null = null;
  private readonly stages: MethodStages;
  private readonly stateful: StageState[];
  private readonly acts: Required<NonNullable<MethodSpec['acts']>>;
  private readonly prefix: string;
  /** the scorer's columns under this instance's prefix */
  private readonly columns: readonly ColumnSpec[];

  constructor(
    private readonly spec: MethodSpec,
    readonly params: PolicyParams,
    private readonly context: PolicyContext,
  ) {
    this.id = spec.id;
    this.stages = spec.build(params, context);
    const { scorer, allocator, selector, transforms = [] } = this.stages;
    this.needs = mergeNeeds(spec.needs, [scorer?.needs, allocator?.needs, ...transforms.map((t) => t.needs)]);
    if (this.stages.protects) this.protects = this.stages.protects;
    this.stateful = [scorer?.state, allocator?.state, selector?.state, ...transforms.map((t) => t.state)].filter((s): s is StageState => s !== undefined);
    this.acts = { prefill: true, step: true, attach: true, ...spec.acts };
    this.prefix = context.columnPrefix ?? `${spec.id}.`;
    this.columns = (scorer?.columns ?? []).map((c) => ({ ...c, name: this.prefix + c.name }));
    this.withoutHistory = this.acts.attach
      ? (scorer?.withoutHistory ?? 'needs no history: it decides from the cache as it is')
      : `acts ${this.acts.prefill ? 'once after prefill' : 'never on attach'}: attached mid-run it keeps the cache as it is and new tokens are appended`;
  }

  private env(cache: PolicyCache, phase: Phase, prefill: PrefillObservation | null, step: StepObservation | null): StageEnv {
    return {
      cache,
      dims: this.context.dims,
      rope: this.context.rope,
      calibration: this.context.calibration ?? null,
      phase,
      promptTokens: this.promptTokens,
      column: (name) => this.prefix + name,
      prefill,
      step,
      shared: new Map(),
    };
  }

  /** Declares the scorer's columns on the cache and fills them from a restored portable state. */
  private attachColumns(cache: PolicyCache): void {
    this.lastCache = cache;
    if (this.columns.length === 0) return;
    cache.declareColumns(this.columns);
    const pending = this.pendingColumns;
    if (!pending) return;
    this.pendingColumns = null;
    for (const { name, heads } of pending) {
      if (!cache.hasColumn(name)) continue;
      for (let l = 0; l < cache.nLayers; l++) {
        for (let h = 0; h < cache.nKvHeads; h++) {
          const target = cache.writeColumn(l, h, name);
          const values = heads[l * cache.nKvHeads + h] ?? [];
          if (values.length !== target.length) {
            throw new RangeError(`${this.id}: restored state has ${values.length} values for column ${name} of layer ${l} head ${h}, the cache ${target.length}`);
          }
          target.set(values);
        }
      }
    }
  }

  onAttach(cache: PolicyCache): Decision {
    this.reset();
    this.attachColumns(cache);
    this.promptTokens = cache.tokenCount;
    const env = this.env(cache, 'attach', null, null);
    this.stages.allocator?.observe?.(env);
    return this.acts.attach ? this.decide(env) : NO_CHANGE;
  }

  afterPrefill(cache: PolicyCache, observation: PrefillObservation): Decision {
    this.attachColumns(cache);
    this.promptTokens = cache.tokenCount;
    const env = this.env(cache, 'prefill', observation, null);
    this.stages.scorer?.observe?.(env);
    this.stages.allocator?.observe?.(env);
    return this.acts.prefill ? this.decide(env) : NO_CHANGE;
  }

  afterStep(cache: PolicyCache, observation: StepObservation): Decision {
    this.attachColumns(cache);
    if (this.promptTokens === 0) this.promptTokens = cache.tokenCount;
    const env = this.env(cache, 'step', null, observation);
    this.stages.scorer?.observe?.(env);
    this.stages.allocator?.observe?.(env);
    return this.acts.step ? this.decide(env) : NO_CHANGE;
  }

  private decide(env: StageEnv): Decision {
    return decideWithStages(this.stages, env, { id: this.id, reportScores: this.spec.reportScores ?? 'selected' });
  }

  reset(): void {
    this.promptTokens = 0;
    this.pendingColumns = null;
    for (const s of this.stateful) s.reset();
    this.stages.state?.reset();
  }

  getState(scope: StateScope = 'portable'): JsonValue {
    if (this.stages.state) return this.stages.state.get();
    const state: { [key: string]: JsonValue } = { promptTokens: this.promptTokens, stages: this.stateful.map((s) => s.get()) };
    const cache = this.lastCache;
    if (scope === 'portable' && cache && this.columns.length > 0) {
      state.columns = this.columns.map(({ name }) => {
        const heads: number[][] = [];
        for (let l = 0; l < cache.nLayers; l++) for (let h = 0; h < cache.nKvHeads; h++) heads.push(cache.hasColumn(name) ? Array.from(cache.column(l, h, name)) : []);
        return { name, heads };
      });
    }
    return state;
  }

  setState(state: JsonValue): void {
    this.reset();
    if (this.stages.state) {
      this.stages.state.set(state);
      return;
    }
    if (state === null || typeof state !== 'object' || Array.isArray(state)) return;
    const promptTokens = state.promptTokens;
    this.promptTokens = typeof promptTokens === 'number' ? promptTokens : 0;
    const stages = Array.isArray(state.stages) ? state.stages : [];
    this.stateful.forEach((s, i) => s.set(stages[i] ?? null));
    if (Array.isArray(state.columns)) this.pendingColumns = state.columns as unknown as PortableColumns[];
  }
}

/** A PolicyDefinition whose instances run the method's stages through the pipeline. */
export function defineMethod(spec: MethodSpec): PolicyDefinition {
  const { acts: _acts, reportScores: _reportScores, build: _build, ...definition } = spec;
  return { ...definition, create: (params, context) => new PipelinePolicy(spec, params, context) };
}

export interface DecideOptions {
  id: string;
  reportScores: 'always' | 'selected';
}

/**
 * An environment for running stages on a cache outside a policy (the methods' exported pure
 * decision functions and their tests): dims from the cache, no prompt length unless given.
 */
export function standaloneEnv(
  cache: PolicyCache & { nHeads?: number },
  phase: Phase,
  parts: { prefill?: PrefillObservation; step?: StepObservation; promptTokens?: number; prefix?: string } = {},
): StageEnv {
  const nHeads = cache.nHeads ?? cache.nKvHeads;
  return {
    cache,
    dims: { nLayers: cache.nLayers, nHeads, nKvHeads: cache.nKvHeads, headDim: cache.headDim, groupSize: nHeads / cache.nKvHeads, vocabSize: 0, contextLength: Infinity },
    rope: null,
    calibration: null,
    phase,
    promptTokens: parts.promptTokens ?? cache.tokenCount,
    column: (name) => (parts.prefix ?? '') + name,
    prefill: parts.prefill ?? null,
    step: parts.step ?? null,
    shared: new Map(),
  };
}

/** The one layer × KV head loop: budgets → scores → selection → transforms → Decision. */
export function decideWithStages(stages: MethodStages, env: StageEnv, options: DecideOptions): Decision {
  const { cache } = env;
  const { scorer, allocator, transforms = [] } = stages;
  // a method without stages (the full cache) never changes anything
  if (!scorer && !allocator && !stages.selector && transforms.length === 0) return NO_CHANGE;
  const selector = stages.selector ?? newestSelector;
  const budgets = allocator ? allocator.allocate(env) : null;
  const reportAlways = options.reportScores === 'always';
  const draft: DecisionDraft = { layers: [], summary: { evicted: 0, merged: 0, repositioned: 0 }, notes: [], measures: {}, headMeasures: {}, groups: [] };
  for (let l = 0; l < cache.nLayers; l++) {
    const heads: HeadDraft[] = [];
    for (let h = 0; h < cache.nKvHeads; h++) {
      const length = cache.length(l, h);
      const budget = budgets?.[l][h] ?? UNLIMITED;
      const over = length > budget.total;
      const scores = scorer && (over || reportAlways) ? scorer.headScores(env, l, h) : null;
      const draft: HeadDraft = { layer: l, kvHead: h, length, budget, scores, keep: null, merge: [], reencode: [], reposition: [], hide: [] };
      if (over) draft.keep = selector.select(env, draft);
      heads.push(draft);
    }
    for (const transform of transforms) transform.layer?.(env, l, heads);
    draft.layers.push(heads);
  }
  for (const transform of transforms) transform.finish?.(env, draft);
  return toDecision(stages, draft, env, budgets, reportAlways, options);
}

function toDecision(stages: MethodStages, draft: DecisionDraft, env: StageEnv, budgets: HeadBudget[][] | null, reportAlways: boolean, options: DecideOptions): Decision {
  let changed = false;
  const layers = draft.layers.map((heads) =>
    heads.map((head): HeadDecision | null => {
      const selected = head.keep !== null;
      const edits = head.merge.length + head.reencode.length + head.reposition.length + head.hide.length > 0;
      const report = head.scores !== null && (reportAlways || selected);
      if (!selected && !edits && !report) return null;
      changed = true;
      const keep = head.keep ?? indexRange(0, head.length);
      let dropped = head.length - keep.length;
      for (const group of head.merge) dropped -= group.members.length;
      draft.summary.evicted += dropped;
      draft.summary.merged += head.merge.reduce((s, g) => s + g.members.length - 1, 0);
      draft.summary.repositioned += head.reposition.length;
      const decision: HeadDecision = { keep };
      if (head.merge.length > 0) decision.merge = head.merge;
      if (head.reencode.length > 0) decision.reencode = head.reencode;
      if (head.reposition.length > 0) decision.reposition = head.reposition;
      if (head.hide.length > 0) decision.hide = head.hide;
      if (report) decision.scores = Float32Array.from(head.scores!);
      return decision;
    }),
  );
  const base = stages.note
    ? stages.note(draft.summary, env, budgets)
    : draft.summary.evicted > 0
      ? `${options.id}: evicted ${draft.summary.evicted} entries`
      : undefined;
  const parts = [base, ...draft.notes].filter((s): s is string => Boolean(s));
  const note = parts.length > 0 ? parts.join('; ') : undefined;
  const measured = Object.keys(draft.measures).length > 0;
  const headMeasured = Object.keys(draft.headMeasures).length > 0;
  if (!changed && draft.nextPosition === undefined && note === undefined && !measured && !headMeasured) return NO_CHANGE;
  const decision: Decision = { layers: changed ? layers : null };
  if (draft.nextPosition !== undefined) decision.nextPosition = draft.nextPosition;
  if (measured) decision.measures = draft.measures;
  if (headMeasured) decision.headMeasures = draft.headMeasures;
  if (draft.groups.length > 0) decision.groups = draft.groups;
  if (note !== undefined) decision.note = note;
  if (budgets && changed) decision.budgets = totals(budgets, env.cache.tokenCount);
  return decision;
}

/** The budgets as entries per head for the trace (unlimited = every token fed); reused while unchanged. */
const totalsCache = new WeakMap<HeadBudget[][], { tokens: number; totals: number[][] }>();
function totals(budgets: HeadBudget[][], tokens: number): number[][] {
  const cached = totalsCache.get(budgets);
  const unlimited = budgets.some((row) => row.some((b) => !Number.isFinite(b.total)));
  if (cached && (!unlimited || cached.tokens === tokens)) return cached.totals;
  const out = budgets.map((row) => row.map((b) => (Number.isFinite(b.total) ? b.total : tokens)));
  totalsCache.set(budgets, { tokens, totals: out });
  return out;
}
