/**
 * The worker side of /compare and /bench (lab-protocol.ts): lanes of policies stepping together
 * (engine/lanes.ts) and evaluations (engine/eval). EngineHost owns the model and the command
 * queue and hands these commands here; `pause` aborts whatever runs. Framework-free and DOM-free.
 * An evaluation asked to run in parallel spreads its runs over this worker and evaluation workers
 * (eval-pool.ts) that it starts; its report is the same as run here, one run after another.
 *
 * Speculative lanes: a lane with a drafter gets a SpeculativeDecoder (engine/lanes.ts) whose
 * DrafterEnv loads draft models by id from the models index the page names (compare-start's
 * modelsUrl: index.json → the model's directory, read through the Cache API copy like the main
 * model, model-cache.ts), each once per target model; the target itself when the id is its own.
 * A host that already loads draft models can hand its loader in (`draftModelLoader`) so both
 * share them. Token index files (∞-gram / FM-index drafters, loadIndex) come over HTTP from
 * compare-start's indexesUrl (engine/spec/ngram/files.ts indexLoader: `<id>/<file>`, '' = the
 * default that index.json names).
 */
import { ContextFullError, DraftSpecError, ModelError } from '../../../engine/errors.ts';
import { EvalSettingsError, inThreadWorker, planEval, runEval, type EvalWorker } from '../../../engine/eval/index.ts';
import { LaneGroup } from '../../../engine/lanes.ts';
import { loadModel, type LoadedModel } from '../../../engine/model/load.ts';
import type { DrafterEnv } from '../../../engine/spec/drafter.ts';
import { indexLoader } from '../../../engine/spec/ngram/files.ts';
import { formatPolicyChain } from '../../../engine/policies/spec.ts';
import { createEvalWebWorker, EvalWorkerPool, type WorkerLike } from './eval-pool.ts';
import { cachedModelSource, MODEL_CACHE_NAME, type CacheLike } from './model-cache.ts';
import type { LabCommand, LabEvent } from './lab-protocol.ts';
import { policyMembers, type EngineEvent, type PolicyComposition, type SamplerSettings, type StopReason } from './protocol.ts';
import { yieldToEventLoop } from './yield.ts';

export type LabPost = (event: LabEvent | EngineEvent) => void;

export class LabError extends Error {
  constructor(
    readonly kind: 'session' | 'policy' | 'prompt' | 'internal',
    message: string,
  ) {
    super(message);
  }
}

export class LabHost {
  private group: LaneGroup | null = null;
  private groupModel: LoadedModel | null = null;
  private abort: AbortController | null = null;
  private heldout = new Map<string, string[]>();
  private evalPool: EvalWorkerPool | null = null;
  /** draft models by models URL + id, loaded once per target model */
  private draftModels = new Map<string, Promise<LoadedModel>>();
  /**
   * loads a draft model by id for the host's target (set by a host that loads draft models
   * itself, so /compare and the explorer share them); null: LabHost loads them from modelsUrl
   */
  draftModelLoader: ((id: string) => Promise<LoadedModel>) | null = null;

  constructor(
    private readonly post: LabPost,
    private readonly fetchFn: typeof fetch,
    /** starts an evaluation worker; null where this runtime cannot start workers (Node, old Safari) */
    private readonly createEvalWorker: (() => WorkerLike) | null = typeof Worker === 'function' ? createEvalWebWorker : null,
  ) {}

  /** Stops a running compare or evaluation between steps. */
  pause(): void {
    this.abort?.abort();
  }

  /** Runs one lab command; failures come out as LabError (kind + message) or engine errors. */
  async run(command: LabCommand, model: LoadedModel): Promise<void> {
    if (this.groupModel !== model) {
      this.group = null;
      this.groupModel = model;
      this.closeEvalPool();
      this.releaseDraftModels();
    }
    try {
      await this.dispatch(command, model);
    } catch (error) {
      if (error instanceof EvalSettingsError) throw new LabError('session', error.message);
      if (error instanceof DraftSpecError) throw new LabError('policy', `drafter: ${error.message}`);
      throw error;
    }
  }

  private async dispatch(command: LabCommand, model: LoadedModel): Promise<void> {
    switch (command.type) {
      case 'compare-start':
        return this.start(command.id, model, command);
      case 'compare-step':
        return this.step(command.id, command.steps);
      case 'compare-back':
        return this.back(command.id, command.steps);
      case 'eval':
        return this.evaluate(command.id, model, command);
    }
  }

  private requireGroup(): LaneGroup {
    if (!this.group) throw new LabError('session', 'no lanes are running yet: press Reset to start them');
    return this.group;
  }

  private async start(id: number, model: LoadedModel, command: LabCommand & { type: 'compare-start' }): Promise<void> {
    const { prompt, sampler, lanes } = command;
    const drafters = command.drafters ?? [];
    if (drafters.length > lanes.length) throw new LabError('session', `${drafters.length} drafters for ${lanes.length} lanes`);
    const context = model.manifest.architecture.context_length;
    const ids = model.tokenizer.encode(prompt);
    if (ids.length > context) {
      throw new LabError('prompt', `The prompt is ${ids.length} tokens long but the model's context holds ${context}. Shorten it by at least ${ids.length - context} tokens.`);
    }
    const specs = lanes.map((lane) => formatPolicyChain(policyMembers(lane)));
    const t0 = performance.now();
    const group = new LaneGroup(model, {
      policies: specs,
      drafters,
      drafterEnv: this.drafterEnv(model, command.modelsUrl, command.indexesUrl),
      sampler: { temperature: sampler.temperature, topK: sampler.topK, topP: sampler.topP, seed: sampler.seed },
    });
    const state = await group.start(ids);
    this.group = group;
    const pieces = ids.map((t) => model.tokenizer.tokenPiece(t));
    this.post({ type: 'compare-started', id, prompt: { ids: [...ids], pieces }, lanes: state, prefillMs: performance.now() - t0 });
  }

  /** What the lanes' drafters may load: draft models (the host's loader, else from the models index). */
  private drafterEnv(target: LoadedModel, modelsUrl: string | undefined, indexesUrl: string | undefined): Omit<DrafterEnv, 'target'> {
    const env: Omit<DrafterEnv, 'target'> = {};
    const external = this.draftModelLoader;
    if (external) env.loadModel = (id) => (id === target.manifest.id ? Promise.resolve(target) : external(id));
    else if (modelsUrl) env.loadModel = (id) => (id === target.manifest.id ? Promise.resolve(target) : this.draftModel(modelsUrl, id));
    if (indexesUrl) env.loadIndex = this.indexFiles(indexesUrl);
    return env;
  }

  private indexLoaders = new Map<string, NonNullable<DrafterEnv['loadIndex']>>();

  /** Token index files under `indexesUrl`, each fetched once (drafters keep what they build from them). */
  private indexFiles(indexesUrl: string): NonNullable<DrafterEnv['loadIndex']> {
    let loader = this.indexLoaders.get(indexesUrl);
    if (!loader) {
      const fetchBytes = async (url: string): Promise<Uint8Array> => {
        let response: Response;
        try {
          response = await this.fetchFn(url);
        } catch (error) {
          throw new DraftSpecError(`index: cannot fetch ${url} (${(error as Error).message})`);
        }
        if (!response.ok) throw new DraftSpecError(`index: ${url}: HTTP ${response.status}`);
        return new Uint8Array(await response.arrayBuffer());
      };
      loader = indexLoader(fetchBytes, indexesUrl);
      this.indexLoaders.set(indexesUrl, loader);
    }
    return loader;
  }

  private draftModel(modelsUrl: string, id: string): Promise<LoadedModel> {
    const base = modelsUrl.endsWith('/') ? modelsUrl : `${modelsUrl}/`;
    const key = `${base}#${id}`;
    let pending = this.draftModels.get(key);
    if (!pending) {
      pending = this.loadDraftModel(base, id);
      // a failed load is not kept: the next Reset tries again
      pending.catch(() => this.draftModels.delete(key));
      this.draftModels.set(key, pending);
    }
    return pending;
  }

  private async loadDraftModel(base: string, id: string): Promise<LoadedModel> {
    const indexUrl = `${base}index.json`;
    let cache: CacheLike | null = null;
    const caches = (globalThis as { caches?: { open(name: string): Promise<CacheLike> } }).caches;
    if (caches && typeof caches.open === 'function') cache = await caches.open(MODEL_CACHE_NAME).catch(() => null);
    let index: { models?: { id?: unknown; path?: unknown }[] };
    try {
      let response: Response | undefined = await this.fetchFn(indexUrl, { cache: 'no-cache' }).catch(() => undefined);
      // offline: the copy the engine's model load kept
      if (!response?.ok) response = (await cache?.match(indexUrl).catch(() => undefined)) ?? response;
      if (!response?.ok) throw new Error(response ? `HTTP ${response.status}` : 'offline');
      index = (await response.json()) as typeof index;
    } catch (error) {
      throw new DraftSpecError(`model: cannot read ${indexUrl} (${(error as Error).message})`);
    }
    const entry = (index.models ?? []).find((m) => m.id === id);
    if (!entry || typeof entry.path !== 'string') {
      const known = (index.models ?? []).map((m) => String(m.id)).join(', ');
      throw new DraftSpecError(`model: no model ${JSON.stringify(id)} in models/index.json (has ${known || 'none'})`);
    }
    try {
      return await loadModel(cachedModelSource(`${base}${entry.path}/`, cache, this.fetchFn), { calibration: false });
    } catch (error) {
      if (error instanceof ModelError) throw new DraftSpecError(`model: the draft model ${id} did not load: ${error.message}`);
      throw error;
    }
  }

  private releaseDraftModels(): void {
    for (const pending of this.draftModels.values()) void pending.then((m) => m.release()).catch(() => undefined);
    this.draftModels.clear();
  }

  private async step(id: number, steps: number): Promise<void> {
    const group = this.requireGroup();
    this.abort = new AbortController();
    const signal = this.abort.signal;
    let reason: StopReason = 'length';
    let message: string | undefined;
    let count = 0;
    try {
      for (let i = 0; i < steps; i++) {
        if (signal.aborted) {
          reason = 'paused';
          break;
        }
        try {
          const view = await group.step();
          count++;
          this.post({ type: 'compare-step', id, view });
        } catch (error) {
          if (error instanceof ContextFullError) {
            reason = 'context-full';
            message = `${error.message}: step back or reset`;
            break;
          }
          throw error;
        }
        if (steps > 1) await yieldToEventLoop();
      }
    } finally {
      this.abort = null;
    }
    this.post({ type: 'compare-done', id, reason, message, steps: count, stepCount: group.stepCount, lanes: group.state() });
  }

  private async back(id: number, steps: number): Promise<void> {
    const group = this.requireGroup();
    const lanes = await group.rewind(group.stepCount - Math.max(0, Math.floor(steps)));
    this.post({ type: 'compare-rewound', id, stepCount: group.stepCount, lanes });
  }

  private async documents(url: string): Promise<string[]> {
    const cached = this.heldout.get(url);
    if (cached) return cached;
    let json: unknown;
    try {
      const response = await this.fetchFn(url);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      json = await response.json();
    } catch (error) {
      throw new LabError('internal', `cannot load the held-out text ${url}: ${(error as Error).message}`);
    }
    const docs = (json as { documents?: { text?: unknown }[] })?.documents;
    const texts = Array.isArray(docs) ? docs.map((d) => d?.text).filter((t): t is string => typeof t === 'string' && t.length > 0) : [];
    if (texts.length === 0) throw new LabError('internal', `${url}: expected {"documents": [{"text": …}]}`);
    this.heldout.set(url, texts);
    return texts;
  }

  private async evaluate(id: number, model: LoadedModel, command: LabCommand & { type: 'eval' }): Promise<void> {
    const documents = await this.documents(command.heldoutUrl);
    const workers = this.evalWorkers(model, command);
    this.abort = new AbortController();
    let last = 0;
    try {
      const report = await runEval(model, documents, command.config, {
        signal: this.abort.signal,
        yield: yieldToEventLoop,
        workers,
        onProgress: (progress) => {
          const now = performance.now();
          if (now - last < 100 && progress.done < progress.total && progress.done > 0) return;
          last = now;
          this.post({ type: 'eval-progress', id, progress });
        },
        onRow: (record, row, partial, run) => this.post({ type: 'eval-row', id, record, policy: partial.records[record].policy, row, run }),
      });
      this.post({ type: 'eval-done', id, report });
    } catch (error) {
      // a worker that failed (its model did not load …) is not reused
      if (workers) this.closeEvalPool();
      throw error;
    } finally {
      this.abort = null;
    }
  }

  /**
   * The workers of a parallel evaluation of more than one run: this worker (its model is loaded;
   * it yields so that the others' messages and `pause` get through) and evaluation workers for
   * the rest. undefined: run here alone.
   */
  private evalWorkers(model: LoadedModel, command: LabCommand & { type: 'eval' }): EvalWorker[] | undefined {
    const parallel = command.parallel;
    if (!parallel || parallel.workers < 2 || !this.createEvalWorker) return undefined;
    // runEval plans again; a plan that fails fails the same way there
    const count = Math.min(parallel.workers, planEval(model, command.config).runs.length);
    if (count < 2) return undefined;
    const init = { type: 'init' as const, modelsUrl: parallel.modelsUrl, modelId: model.manifest.id, wasmUrl: parallel.wasmUrl };
    if (this.evalPool && JSON.stringify(this.evalPool.init) !== JSON.stringify(init)) this.closeEvalPool();
    this.evalPool ??= new EvalWorkerPool(init, this.createEvalWorker);
    return [inThreadWorker(model, { yield: yieldToEventLoop }), ...this.evalPool.take(count - 1)];
  }

  private closeEvalPool(): void {
    this.evalPool?.close();
    this.evalPool = null;
  }
}
