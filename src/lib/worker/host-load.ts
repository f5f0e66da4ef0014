/**
 * The engine worker's model loading (EngineHost.load): a shipped model through models/index.json
 * and the Cache API copy of its files (refetched once when a cached copy is damaged; files no
 * current manifest lists are pruned), or an uploaded one from this browser's storage
 * (HostDeps.uploadedSource). Progress is posted under the load command's id.
 */
import { ModelError } from '../../../engine/errors.ts';
import type { LoadedModel } from '../../../engine/model/load.ts';
import { checkModelPath } from '../../../engine/model/paths.ts';
import { indexEntry, indexIds, loadProgressReporter, type IndexEntry } from './drafter-env.ts';
import { HostError } from './host-error.ts';
import type { HostDeps, Post } from './host.ts';
import { cachedModelSource, pruneModelCache, MODEL_CACHE_NAME, type CacheLike, type CachedModelSource } from './model-cache.ts';
import type { CacheStats, LoadCommand, LoadProgressView } from './protocol.ts';

/** models/index.json as written; indexEntry checks the entry a load uses, pruneCache each path it reads */
interface IndexJson {
  default?: unknown;
  models?: { id: unknown; path: unknown }[];
}

/** The command's model, loaded and checked, with where its files came from. */
export async function loadModelFiles(command: LoadCommand, deps: HostDeps, post: Post): Promise<{ model: LoadedModel; stats: CacheStats }> {
  if (command.modelSource) {
    const model = await loadUploaded(command, command.modelSource.key, deps, post);
    // every file came from this browser's storage, none over the network
    return { model, stats: { hits: model.manifest.files.length, misses: 0, removed: 0, available: true } };
  }
  const { source, cache, index, modelsUrl, entry, model } = await loadFromIndex(command, deps, post);
  const stats: CacheStats = { hits: source.stats.hits, misses: source.stats.misses, removed: 0, available: cache !== null };
  if (cache) stats.removed = await pruneCache(deps.fetch, cache, modelsUrl, index, entry.id, source).catch(() => 0);
  return { model, stats };
}

/** A load-progress event for command `id`, the fields not given zero. */
export function postProgress(post: Post, id: number, p: Partial<LoadProgressView> & Pick<LoadProgressView, 'phase'>): void {
  post({ type: 'progress', id, progress: { file: '', loaded: 0, total: 0, overallLoaded: 0, overallTotal: 0, cached: false, ...p } });
}

/** Loads the model the command names (default: the index's default) through the Cache API, posting progress under the command. */
async function loadFromIndex(command: LoadCommand, deps: HostDeps, post: Post) {
  const progressId = command.id;
  let cache: CacheLike | null = null;
  if (command.cache !== false && deps.caches) {
    cache = await deps.caches.open(MODEL_CACHE_NAME).catch(() => null);
  }
  const modelsUrl = command.modelsUrl.endsWith('/') ? command.modelsUrl : `${command.modelsUrl}/`;
  postProgress(post, progressId, { phase: 'manifest', file: 'index.json' });
  const index = (await readJson(deps.fetch, `${modelsUrl}index.json`, cache)) as IndexJson;
  const wanted: unknown = command.modelId ?? index.default;
  if (typeof wanted !== 'string') throw new HostError('model', 'models/index.json: default must name a model (no model id was asked for)');
  // the id and the entry's path become the model's URL: both are checked first (a bad one: ModelError)
  const entry: IndexEntry | null = indexEntry(index, wanted, command.modelId === undefined ? 'models/index.json: default' : 'model id');
  if (!entry) throw new HostError('model', `models/index.json: no model ${JSON.stringify(wanted)} (has ${indexIds(index)})`);

  const tryLoad = async (): Promise<{ model: LoadedModel; source: CachedModelSource }> => {
    const source = cachedModelSource(`${modelsUrl}${entry.path}/`, cache, deps.fetch);
    const onProgress = loadProgressReporter(source, (progress) => post({ type: 'progress', id: progressId, progress }));
    const model = await deps.loadModel(source, { onProgress, numThreads: command.threads, calibration: true });
    return { model, source };
  };

  let loaded: { model: LoadedModel; source: CachedModelSource };
  try {
    loaded = await tryLoad();
  } catch (error) {
    // A damaged cached copy fails its sha256/size check: drop every cached file and refetch once.
    const damaged = error instanceof ModelError && /(sha256|size) mismatch/.test(error.message);
    if (!damaged || !cache) throw error;
    await cache.keys().then((keys) => Promise.all(keys.map((k) => cache!.delete(k.url)))).catch(() => undefined);
    loaded = await tryLoad();
  }
  return { ...loaded, cache, index, modelsUrl, entry };
}

/** Loads a model the user uploaded (src/lib/models/), from this browser's storage: nothing is fetched or cached. */
async function loadUploaded(command: LoadCommand, key: string, deps: HostDeps, post: Post): Promise<LoadedModel> {
  if (!deps.uploadedSource) throw new HostError('model', 'uploaded models cannot be loaded here (this worker has no model storage)');
  postProgress(post, command.id, { phase: 'manifest', file: 'manifest.json' });
  const source = await deps.uploadedSource(key);
  const onProgress = loadProgressReporter({ files: source.files, fromCache: () => true }, (progress) => post({ type: 'progress', id: command.id, progress }));
  return deps.loadModel(source, { onProgress, numThreads: command.threads, calibration: true });
}

/** Deletes cached files that no current manifest lists; keeps everything if a manifest is unreachable. */
async function pruneCache(fetchImpl: HostDeps['fetch'], cache: CacheLike, modelsUrl: string, index: IndexJson, loadedId: string, source: CachedModelSource): Promise<number> {
  const keep = new Set(source.files.map((f) => f.sha256));
  for (const [at, other] of (index.models ?? []).entries()) {
    if (other.id === loadedId) continue;
    // a bad path throws: nothing is pruned (the caller keeps every file)
    const path = checkModelPath(String(other.path), `models/index.json: models[${at}].path`);
    const manifest = (await readJson(fetchImpl, `${modelsUrl}${path}/manifest.json`, null)) as { files?: { sha256?: string }[] };
    for (const f of manifest.files ?? []) if (typeof f.sha256 === 'string') keep.add(f.sha256);
  }
  return pruneModelCache(cache, keep);
}

async function readJson(fetchImpl: HostDeps['fetch'], url: string, cache: CacheLike | null): Promise<unknown> {
  let text: string;
  try {
    const response = await fetchImpl(url, { cache: 'no-cache' });
    if (!response.ok) throw new HostError('model', `${url}: HTTP ${response.status}`);
    text = await response.text();
    await cache?.put(url, new Response(text)).catch(() => undefined);
  } catch (error) {
    const copy = error instanceof HostError ? undefined : await cache?.match(url).catch(() => undefined);
    if (!copy) {
      if (error instanceof HostError) throw error;
      throw new HostError('model', `${url}: cannot fetch (${(error as Error).message})`);
    }
    text = await copy.text();
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new HostError('model', `${url}: not valid JSON (${(error as Error).message})`);
  }
}
