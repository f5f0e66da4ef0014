/**
 * What drafters may load in the browser (engine/spec DrafterEnv), shared by the /compare lanes and
 * the /bench speculative evaluation (lab.ts): draft models by id from the models index the page
 * names (models/index.json → the model's directory, read through the Cache API copy like the main
 * model, model-cache.ts), each loaded once per target model, the target itself when the id is its
 * own; and token index files (∞-gram / FM-index drafters) over HTTP from indexes/
 * (engine/spec/ngram/files.ts indexLoader: `<id>/<file>`, '' = the default that index.json names),
 * each fetched once. A host that already loads draft models can hand its own loader in.
 * Framework-free and DOM-free.
 */
import { DraftSpecError, ModelError } from '../../../engine/errors.ts';
import { loadModel, type LoadedModel } from '../../../engine/model/load.ts';
import type { DrafterEnv } from '../../../engine/spec/drafter.ts';
import { indexLoader } from '../../../engine/spec/ngram/files.ts';
import { cachedModelSource, MODEL_CACHE_NAME, type CacheLike } from './model-cache.ts';

type IndexFiles = NonNullable<DrafterEnv['loadIndex']>;

const withSlash = (url: string) => (url.endsWith('/') ? url : `${url}/`);

/** indexes/ next to models/ (static/indexes/ beside static/models/). */
export function indexesUrlOf(modelsUrl: string): string {
  return new URL('../indexes/', withSlash(modelsUrl)).href;
}

export class BrowserDrafterEnvs {
  /** draft models by models URL + id, loaded once per target model (release() drops them) */
  private draftModels = new Map<string, Promise<LoadedModel>>();
  private indexLoaders = new Map<string, IndexFiles>();

  constructor(
    private readonly fetchFn: typeof fetch,
    /** loads a draft model by id itself (a host that shares its draft models); null: from modelsUrl */
    private readonly external: () => ((id: string) => Promise<LoadedModel>) | null = () => null,
  ) {}

  /** The env of drafters drafting for `target`: draft models from `modelsUrl`, index files from `indexesUrl`. */
  env(target: LoadedModel, modelsUrl: string | undefined, indexesUrl: string | undefined): DrafterEnv {
    const env: DrafterEnv = { target };
    const external = this.external();
    if (external) env.loadModel = (id) => (id === target.manifest.id ? Promise.resolve(target) : external(id));
    else if (modelsUrl) env.loadModel = (id) => (id === target.manifest.id ? Promise.resolve(target) : this.draftModel(modelsUrl, id));
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

  private draftModel(modelsUrl: string, id: string): Promise<LoadedModel> {
    const base = withSlash(modelsUrl);
    const key = `${base}#${id}`;
    let pending = this.draftModels.get(key);
    if (!pending) {
      pending = this.loadDraftModel(base, id);
      // a failed load is not kept: the next try loads again
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

  /** Releases the draft models loaded so far (the target model changed). */
  release(): void {
    for (const pending of this.draftModels.values()) void pending.then((m) => m.release()).catch(() => undefined);
    this.draftModels.clear();
  }
}
