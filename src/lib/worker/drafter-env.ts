/**
 * What drafters may load in the browser (engine/spec DrafterEnv), shared by the /compare lanes and
 * the /bench speculative evaluation (lab.ts): draft models by id from the models index the page
 * names (models/index.json → the model's directory, read through the Cache API copy like the main
 * model, model-cache.ts), each loaded once per target model, the target itself when the id is its
 * own; and token index files (∞-gram / FM-index drafters) over HTTP from indexes/
 * (engine/spec/ngram/files.ts indexLoader: `<id>/<file>`, '' = the default that index.json names),
 * each fetched once. The explorer's host (host.ts) uses it too, with its own model loader, Cache API
 * and thread count (BrowserDrafterEnvOptions), and a progress hook per `env()` so that a draft
 * model's download is posted under the command that asked for it. `indexEntry` is the one lookup
 * of a models/index.json entry, its id and path checked; host.ts, eval.worker.ts and
 * bench/cell-inputs.ts use it too. Framework-free and DOM-free.
 */
import { DraftSpecError, ModelError } from '../../../engine/errors.ts';
import { loadModel, type LoadOptions, type LoadProgress, type LoadedModel, type ModelSource } from '../../../engine/model/load.ts';
import { checkModelId, checkModelPath } from '../../../engine/model/paths.ts';
import type { DrafterEnv } from '../../../engine/spec/drafter.ts';
import { indexLoader } from '../../../engine/spec/ngram/files.ts';
import { cachedModelSource, MODEL_CACHE_NAME, type CacheLike, type CachedModelSource } from './model-cache.ts';
import type { LoadProgressView } from './protocol.ts';

type IndexFiles = NonNullable<DrafterEnv['loadIndex']>;

const withSlash = (url: string) => (url.endsWith('/') ? url : `${url}/`);

/** indexes/ next to models/ (static/indexes/ beside static/models/). */
export function indexesUrlOf(modelsUrl: string): string {
  return new URL('../indexes/', withSlash(modelsUrl)).href;
}

/** An entry of models/index.json whose id and path were checked (indexEntry). */
export interface IndexEntry {
  id: string;
  /** the model's directory under models/: a plain relative path (engine/model/paths.ts) */
  path: string;
}

/**
 * The entry of models/index.json (parsed: `index`) for model `id`, or null when it lists none.
 * `id` (from a link, a drafter spec or the index's default) and the entry's path are checked
 * before either becomes a URL: `models/x/` + `%2e%2e/` would fetch outside models/. A bad one is
 * one ModelError naming the field (`idWhere` for the id).
 */
export function indexEntry(index: unknown, id: string, idWhere = 'model id'): IndexEntry | null {
  checkModelId(id, idWhere);
  const models = (index as { models?: unknown } | null)?.models;
  if (models === undefined) return null;
  if (!Array.isArray(models)) throw new ModelError('models/index.json: models must be a list');
  const at = models.findIndex((m) => (m as { id?: unknown } | null)?.id === id);
  if (at < 0) return null;
  const path: unknown = (models[at] as { path?: unknown }).path;
  const where = `models/index.json: models[${at}].path`;
  if (typeof path !== 'string') throw new ModelError(`${where} must be a string`);
  return { id, path: checkModelPath(path, where) };
}

/** The ids models/index.json lists, for a message saying which there are. */
export function indexIds(index: unknown): string {
  const models = (index as { models?: unknown } | null)?.models;
  const ids = Array.isArray(models) ? models.map((m) => String((m as { id?: unknown } | null)?.id)) : [];
  return ids.join(', ') || 'none';
}

/** A model load's progress as the page shows it (protocol.ts LoadProgressView). */
export type ProgressHook = (progress: LoadProgressView) => void;

/**
 * Turns the engine's per-file LoadProgress of `source` into LoadProgressView (overall bytes, cached
 * or not), at most one update per file every 50 ms (a file's last one always).
 */
export function loadProgressReporter(source: Pick<CachedModelSource, 'files' | 'fromCache'>, report: ProgressHook): (p: LoadProgress) => void {
  let last = 0;
  let lastKey = '';
  const done = new Map<string, number>();
  return (p) => {
    const now = performance.now();
    const key = `${p.phase}:${p.file}`;
    const finished = p.total > 0 && p.loaded >= p.total;
    if (key === lastKey && !finished && now - last < 50) return;
    last = now;
    lastKey = key;
    if (p.phase === 'download') done.set(p.file, p.loaded);
    const overallTotal = source.files.reduce((sum, f) => sum + f.bytes, 0);
    let overallLoaded = 0;
    for (const value of done.values()) overallLoaded += value;
    report({
      phase: p.phase,
      file: p.file,
      loaded: p.loaded,
      total: p.total,
      overallLoaded: Math.min(overallLoaded, overallTotal || overallLoaded),
      overallTotal,
      cached: source.fromCache(p.file),
    });
  };
}

export interface BrowserDrafterEnvOptions {
  /** loads a model from its source (default: engine/model/load.ts loadModel) */
  loadModel?: (source: ModelSource, options: LoadOptions) => Promise<LoadedModel>;
  /** the Cache API the model files are kept in (default: globalThis.caches); null: no caching */
  caches?: { open(name: string): Promise<CacheLike> } | null;
  /** wasm threads for the draft model's runtime */
  numThreads?: number;
}

export class BrowserDrafterEnvs {
  /** draft models by models URL + id, loaded once per target model (release() drops them) */
  private draftModels = new Map<string, Promise<LoadedModel>>();
  private indexLoaders = new Map<string, IndexFiles>();

  constructor(
    private readonly fetchFn: typeof fetch,
    private readonly options: BrowserDrafterEnvOptions = {},
  ) {}

  /**
   * The env of drafters drafting for `target`: draft models from `modelsUrl`, index files from
   * `indexesUrl`; a draft model this env starts loading reports its progress to `onProgress`.
   */
  env(target: LoadedModel, modelsUrl: string | undefined, indexesUrl: string | undefined, onProgress?: ProgressHook): DrafterEnv {
    const env: DrafterEnv = { target };
    if (modelsUrl) env.loadModel = (id) => (id === target.manifest.id ? Promise.resolve(target) : this.draftModel(modelsUrl, id, onProgress));
    if (indexesUrl) env.loadIndex = this.indexFiles(indexesUrl);
    return env;
  }

  /** Token index files under `indexesUrl`, each fetched once (drafters keep what they build from them). */
  private indexFiles(indexesUrl: string): IndexFiles {
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

  private draftModel(modelsUrl: string, id: string, onProgress: ProgressHook | undefined): Promise<LoadedModel> {
    const base = withSlash(modelsUrl);
    const key = `${base}#${id}`;
    let pending = this.draftModels.get(key);
    if (!pending) {
      pending = this.loadDraftModel(base, id, onProgress);
      // a failed load is not kept: the next try loads again
      pending.catch(() => this.draftModels.delete(key));
      this.draftModels.set(key, pending);
    }
    return pending;
  }

  private async loadDraftModel(base: string, id: string, onProgress: ProgressHook | undefined): Promise<LoadedModel> {
    const indexUrl = `${base}index.json`;
    let cache: CacheLike | null = null;
    const caches = this.options.caches === undefined ? (globalThis as { caches?: { open(name: string): Promise<CacheLike> } }).caches : this.options.caches;
    if (caches && typeof caches.open === 'function') cache = await caches.open(MODEL_CACHE_NAME).catch(() => null);
    onProgress?.({ phase: 'manifest', file: 'index.json', loaded: 0, total: 0, overallLoaded: 0, overallTotal: 0, cached: false });
    let index: unknown;
    try {
      let response: Response | undefined = await this.fetchFn(indexUrl, { cache: 'no-cache' }).catch(() => undefined);
      // offline: the copy the engine's model load kept
      if (!response?.ok) response = (await cache?.match(indexUrl).catch(() => undefined)) ?? response;
      if (!response?.ok) throw new Error(response ? `HTTP ${response.status}` : 'offline');
      index = await response.json();
    } catch (error) {
      throw new DraftSpecError(`model: cannot read ${indexUrl} (${(error as Error).message})`);
    }
    let entry: IndexEntry | null;
    try {
      entry = indexEntry(index, id, 'the draft model');
    } catch (error) {
      if (error instanceof ModelError) throw new DraftSpecError(`model: ${error.message}`);
      throw error;
    }
    if (!entry) throw new DraftSpecError(`model: no model ${JSON.stringify(id)} in models/index.json (has ${indexIds(index)})`);
    const source = cachedModelSource(`${base}${entry.path}/`, cache, this.fetchFn);
    const load = this.options.loadModel ?? loadModel;
    try {
      return await load(source, {
        calibration: false,
        ...(onProgress ? { onProgress: loadProgressReporter(source, onProgress) } : {}),
        ...(this.options.numThreads !== undefined ? { numThreads: this.options.numThreads } : {}),
      });
    } catch (error) {
      if (error instanceof ModelError) throw new DraftSpecError(`model: the draft model ${id} did not load: ${error.message}`);
      throw error;
    }
  }

  /** Releases the draft models loaded so far (the target model changed). */
  release(): void {
    for (const pending of this.draftModels.values()) void pending.then((m) => m.release()).catch(() => undefined);
    this.draftModels.clear();
  }
}
