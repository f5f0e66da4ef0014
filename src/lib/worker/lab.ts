/**
 * The worker side of /compare and /bench (lab-protocol.ts): lanes of policies stepping together
 * (engine/lanes.ts) and evaluations (engine/eval). EngineHost owns the model and the command
 * queue and hands these commands here; `pause` aborts whatever runs. Framework-free and DOM-free.
 * An evaluation asked to run in parallel spreads its runs over this worker and evaluation workers
 * (eval-pool.ts) that it starts; its report is the same as run here, one run after another.
 *
 * Speculative lanes and the speculative evaluation (eval-spec): their drafters get a DrafterEnv
 * from drafter-env.ts — draft models by id from the models index the page names (modelsUrl), each
 * once per target model, and token index files from indexesUrl. eval-spec runs in this
 * worker only, never spread over evaluation workers: parallel decodes would distort its timings.
 */
import { ContextFullError, DraftSpecError } from '../../../engine/errors.ts';
import { EvalSettingsError, inThreadWorker, planEval, runEval, type EvalWorker } from '../../../engine/eval/index.ts';
import { runSpecEval } from '../../../engine/eval/spec.ts';
import { LaneGroup } from '../../../engine/lanes.ts';
import type { LoadedModel } from '../../../engine/model/load.ts';
import { heldoutDocuments, type HeldoutDocument } from '../../../engine/spec/ngram/heldout-split.ts';
import { formatPolicyChain } from '../../../engine/policies/spec.ts';
import { parseDrafter } from '../../../engine/spec/index.ts';
import { BrowserDrafterEnvs } from './drafter-env.ts';
import { createEvalWebWorker, EvalWorkerPool, type EvalWorkerInit, type WorkerLike } from './eval-pool.ts';
import type { LabCommand, LabEvent } from './lab-protocol.ts';
import { policyMembers, type EngineEvent, type PolicyComposition, type SamplerSettings, type StopReason, type UploadedModelRef } from './protocol.ts';
import { yieldToEventLoop } from './yield.ts';

export type LabPost = (event: LabEvent | EngineEvent) => void;

export class LabError extends Error {
  constructor(
    readonly kind: 'session' | 'policy' | 'drafter' | 'prompt' | 'internal',
    message: string,
  ) {
    super(message);
  }
}

export class LabHost {
  private group: LaneGroup | null = null;
  private groupModel: LoadedModel | null = null;
  private abort: AbortController | null = null;
  private heldout = new Map<string, Promise<unknown>>();
  private evalPool: EvalWorkerPool | null = null;
  /** draft models and token index files for the drafters (drafter-env.ts) */
  private readonly drafterEnvs: BrowserDrafterEnvs;

  constructor(
    private readonly post: LabPost,
    private readonly fetchFn: typeof fetch,
    /** starts an evaluation worker; null where this runtime cannot start workers (Node, old Safari) */
    private readonly createEvalWorker: (() => WorkerLike) | null = typeof Worker === 'function' ? createEvalWebWorker : null,
  ) {
    this.drafterEnvs = new BrowserDrafterEnvs(fetchFn);
  }

  /** the engine worker's model when it was uploaded (its evaluation workers read it from storage too) */
  private modelSource: UploadedModelRef | null = null;

  /** Says where the engine worker's model came from (EngineHost calls this after every load). */
  useModelSource(source: UploadedModelRef | null): void {
    this.modelSource = source;
  }

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
      this.drafterEnvs.release();
    }
    try {
      await this.dispatch(command, model);
    } catch (error) {
      if (error instanceof EvalSettingsError) throw new LabError('session', error.message);
      if (error instanceof DraftSpecError) throw new LabError('drafter', `drafter: ${error.message}`);
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
      case 'eval-spec':
        return this.evaluateSpec(command.id, model, command);
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
    let group: LaneGroup;
    let state: Awaited<ReturnType<LaneGroup['start']>>;
    try {
      group = new LaneGroup(model, {
        policies: specs,
        drafters,
        drafterEnv: this.drafterEnvs.env(model, command.modelsUrl, command.indexesUrl),
        sampler: { temperature: sampler.temperature, topK: sampler.topK, topP: sampler.topP, seed: sampler.seed },
      });
      state = await group.start(ids);
    } catch (error) {
      if (error instanceof DraftSpecError) throw new LabError('drafter', `${drafterLanes(drafters)} drafter: ${error.message}`);
      throw error;
    }
    this.group = group;
    const pieces = ids.map((t) => model.tokenizer.tokenPiece(t));
    this.post({ type: 'compare-started', id, prompt: { ids: [...ids], pieces }, lanes: state, prefillMs: performance.now() - t0 });
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

  /** The held-out file's JSON, fetched once per URL. */
  private heldoutJson(url: string): Promise<unknown> {
    let pending = this.heldout.get(url);
    if (!pending) {
      pending = (async () => {
        try {
          const response = await this.fetchFn(url);
          if (!response.ok) throw new Error(`HTTP ${response.status}`);
          return (await response.json()) as unknown;
        } catch (error) {
          throw new LabError('internal', `cannot load the held-out text ${url}: ${(error as Error).message}`);
        }
      })();
      pending.catch(() => this.heldout.delete(url));
      this.heldout.set(url, pending);
    }
    return pending;
  }

  private async documents(url: string): Promise<string[]> {
    const json = await this.heldoutJson(url);
    const docs = (json as { documents?: { text?: unknown }[] })?.documents;
    const texts = Array.isArray(docs) ? docs.map((d) => d?.text).filter((t): t is string => typeof t === 'string' && t.length > 0) : [];
    if (texts.length === 0) throw new LabError('internal', `${url}: expected {"documents": [{"text": …}]}`);
    return texts;
  }

  /** The held-out documents with their sources (the speculative evaluation's text sets tell them apart). */
  private async sourcedDocuments(url: string): Promise<HeldoutDocument[]> {
    try {
      const documents = heldoutDocuments(await this.heldoutJson(url)).filter((d) => d.text.length > 0);
      if (documents.length === 0) throw new TypeError('no documents');
      return documents;
    } catch (error) {
      if (error instanceof TypeError) throw new LabError('internal', `${url}: ${error.message.replace(/^held-out file: /, '')}`);
      throw error;
    }
  }

  /**
   * The speculative evaluation (engine/eval/spec.ts, as `kvscope eval --task spec`): in this
   * worker only, one decode after another, since decodes running side by side would share the
   * cores and distort the wall-clock speed-up it measures.
   */
  private async evaluateSpec(id: number, model: LoadedModel, command: LabCommand & { type: 'eval-spec' }): Promise<void> {
    const documents = await this.sourcedDocuments(command.heldoutUrl);
    const env = this.drafterEnvs.env(model, command.modelsUrl, command.indexesUrl);
    this.abort = new AbortController();
    let last = 0;
    try {
      const report = await runSpecEval(env, documents, command.config, {
        signal: this.abort.signal,
        yield: yieldToEventLoop,
        onProgress: (progress) => {
          const now = performance.now();
          if (now - last < 100 && progress.done < progress.total && progress.done > 0) return;
          last = now;
          this.post({ type: 'eval-spec-progress', id, progress });
        },
      });
      this.post({ type: 'eval-spec-done', id, report });
    } finally {
      this.abort = null;
    }
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
    const init: EvalWorkerInit = {
      type: 'init',
      modelsUrl: parallel.modelsUrl,
      modelId: model.manifest.id,
      ...(this.modelSource ? { modelSource: this.modelSource } : {}),
      wasmUrl: parallel.wasmUrl,
    };
    if (this.evalPool && JSON.stringify(this.evalPool.init) !== JSON.stringify(init)) this.closeEvalPool();
    this.evalPool ??= new EvalWorkerPool(init, this.createEvalWorker);
    return [inThreadWorker(model, { yield: yieldToEventLoop }), ...this.evalPool.take(count - 1)];
  }

  private closeEvalPool(): void {
    this.evalPool?.close();
    this.evalPool = null;
  }
}

/**
 * Which lane's drafter a DraftSpecError is about, for its message ("lane 2"): the lanes whose spec
 * does not parse, else (a drafter that failed to start, e.g. a draft model not in the index) the
 * lanes that have a drafter.
 */
function drafterLanes(drafters: readonly (string | null)[]): string {
  const given = drafters.flatMap((d, i) => ((d ?? '').trim() && (d ?? '').trim() !== 'none' ? [i] : []));
  const bad = given.filter((i) => {
    try {
      parseDrafter(drafters[i] ?? '');
      return false;
    } catch {
      return true;
    }
  });
  const lanes = (bad.length > 0 ? bad : given).map((i) => i + 1);
  return lanes.length === 1 ? `lane ${lanes[0]}` : lanes.length > 1 ? `lanes ${lanes.join(', ')}` : 'a lane';
}
