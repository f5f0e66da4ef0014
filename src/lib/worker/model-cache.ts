/**
 * Model files cached for later visits with the Cache API, keyed by their sha256 (from the
 * manifest), so a retrained model with the same id is fetched again and an unchanged one never is.
 *
 * `cachedModelSource` is a ModelSource (engine/model/load.ts) over HTTP:
 *  - manifest.json always comes from the network (no-cache) so new versions are seen; a copy is
 *    kept and used only when the network is unreachable (offline). Files the manifest does not
 *    list (the optional calibration.json) are handled the same way;
 *  - every other file is looked up by the sha256 the manifest gives it; a miss is downloaded
 *    (with progress), checked against its sha256 and size, and only then stored.
 * loadModel verifies every file again, so a damaged cache entry is caught there: the caller
 * deletes it (`forget`) and retries from the network.
 * `pruneModelCache` deletes entries whose hash no current manifest lists (old versions).
 */
import { fetchSource, type ModelSource } from '../../../engine/model/load.ts';
import { ModelError } from '../../../engine/errors.ts';
import { sha256Hex } from '../../../engine/model/sha256.ts';

export const MODEL_CACHE_NAME = 'kvscope-models-v1';
const PREFIX = '__kvscope__';

/** The part of the Cache API this module uses (a fake in tests). */
export interface CacheLike {
  match(request: string): Promise<Response | undefined>;
  put(request: string, response: Response): Promise<void>;
  delete(request: string): Promise<boolean>;
  keys(): Promise<readonly { url: string }[]>;
}

export interface ManifestFileInfo {
  path: string;
  sha256: string;
  bytes: number;
}

export interface CachedSourceStats {
  hits: number;
  misses: number;
}

export interface CachedModelSource extends ModelSource {
  readonly stats: CachedSourceStats;
  /** files listed by the manifest read so far (empty before manifest.json was read) */
  readonly files: readonly ManifestFileInfo[];
  /** true when the last read of `path` came from the cache */
  fromCache(path: string): boolean;
  /** drops the cached copy of `path` (after loadModel found it damaged) */
  forget(path: string): Promise<void>;
}

export function blobKey(origin: string, sha256: string): string {
  return new URL(`/${PREFIX}/sha256/${sha256}`, origin).href;
}

/** Cache key of an unlisted file (manifest.json, calibration.json) of the model at `baseUrl`. */
function copyKey(baseUrl: string, path: string): string {
  const base = new URL(baseUrl);
  return new URL(`/${PREFIX}/copy${base.pathname}${path}`, base.origin).href;
}

function isNetworkFailure(error: unknown): boolean {
  return error instanceof ModelError && /cannot fetch/.test(error.message) && !/HTTP \d/.test(error.message);
}

function parseFiles(bytes: Uint8Array): ManifestFileInfo[] {
  try {
    const json = JSON.parse(new TextDecoder().decode(bytes)) as { files?: unknown };
    if (!Array.isArray(json.files)) return [];
    return json.files.filter(
      (f): f is ManifestFileInfo =>
        typeof f === 'object' && f !== null && typeof f.path === 'string' && typeof f.sha256 === 'string' && typeof f.bytes === 'number',
    );
  } catch {
    return []; // loadModel reports the invalid manifest with its own message
  }
}

async function responseBytes(response: Response): Promise<Uint8Array> {
  return new Uint8Array(await response.arrayBuffer());
}

export function cachedModelSource(
  baseUrl: string,
  cache: CacheLike | null,
  fetchImpl: typeof fetch = globalThis.fetch.bind(globalThis),
): CachedModelSource {
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  const origin = new URL(base).origin;
  const network = fetchSource(base, (input, init) => fetchImpl(input, { ...init, cache: 'no-cache' }));
  let files: ManifestFileInfo[] = [];
  const stats: CachedSourceStats = { hits: 0, misses: 0 };
  const cachedPaths = new Set<string>();

  /** Network first; the stored copy only when the network is unreachable. */
  async function readUnlisted(path: string, onBytes?: (loaded: number, total: number) => void): Promise<Uint8Array> {
    const key = copyKey(base, path);
    try {
      const bytes = await network.read(path, onBytes);
      if (cache) await cache.put(key, new Response(bytes.slice())).catch(() => undefined);
      return bytes;
    } catch (error) {
      const copy = cache && isNetworkFailure(error) ? await cache.match(key).catch(() => undefined) : undefined;
      if (!copy) {
        if (cache && error instanceof ModelError && /file is missing/.test(error.message)) await cache.delete(key).catch(() => false);
        throw error;
      }
      cachedPaths.add(path);
      return responseBytes(copy);
    }
  }

  async function readManifest(onBytes?: (loaded: number, total: number) => void): Promise<Uint8Array> {
    const bytes = await readUnlisted('manifest.json', onBytes);
    files = parseFiles(bytes);
    return bytes;
  }

  return {
    location: base,
    stats,
    get files() {
      return files;
    },
    fromCache: (path) => cachedPaths.has(path),
    async forget(path) {
      const entry = files.find((f) => f.path === path);
      if (cache && entry) await cache.delete(blobKey(origin, entry.sha256));
    },
    async read(path, onBytes) {
      if (path === 'manifest.json') return readManifest(onBytes);
      const entry = files.find((f) => f.path === path);
      if (!entry) return readUnlisted(path, onBytes);
      const key = blobKey(origin, entry.sha256);
      if (cache) {
        const hit = await cache.match(key).catch(() => undefined);
        if (hit) {
          const bytes = await responseBytes(hit);
          stats.hits++;
          cachedPaths.add(path);
          onBytes?.(bytes.length, bytes.length);
          return bytes;
        }
      }
      cachedPaths.delete(path);
      const bytes = await network.read(path, onBytes);
      stats.misses++;
      if (cache && bytes.length === entry.bytes && (await sha256Hex(bytes)) === entry.sha256) {
        await cache.put(key, new Response(bytes.slice(), { headers: { 'content-type': 'application/octet-stream' } })).catch(() => undefined);
      }
      return bytes;
    },
  };
}

/** Deletes cached files whose sha256 is not in `keep` (every file of every current manifest). */
export async function pruneModelCache(cache: CacheLike, keep: ReadonlySet<string>): Promise<number> {
  let removed = 0;
  const marker = `/${PREFIX}/sha256/`;
  for (const request of await cache.keys()) {
    const at = request.url.indexOf(marker);
    if (at < 0) continue;
    const hash = request.url.slice(at + marker.length);
    if (!keep.has(hash)) {
      if (await cache.delete(request.url)) removed++;
    }
  }
  return removed;
}
