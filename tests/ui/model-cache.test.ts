/** The sha256-keyed model file cache: stores only verified files, falls back offline, prunes old versions. */
import { describe, expect, it } from 'vitest';
import { blobKey, cachedModelSource, pruneModelCache } from '../../src/lib/worker/model-cache.ts';
import { fakeServer, MemoryCache, MODELS_URL, ORIGIN } from './helpers.ts';

const BASE = `${MODELS_URL}tiny/`;

describe('cachedModelSource', () => {
  it('downloads once, then serves every listed file from the cache by its sha256', async () => {
    const server = fakeServer();
    const cache = new MemoryCache();
    const first = cachedModelSource(BASE, cache, server.fetch);
    const manifest = JSON.parse(new TextDecoder().decode(await first.read('manifest.json')));
    for (const f of manifest.files) await first.read(f.path);
    expect(first.stats).toEqual({ hits: 0, misses: manifest.files.length });
    for (const f of manifest.files) expect(cache.entries.has(blobKey(ORIGIN, f.sha256))).toBe(true);

    server.requests.length = 0;
    const second = cachedModelSource(BASE, cache, server.fetch);
    await second.read('manifest.json');
    const progress: number[] = [];
    const bytes = await second.read('model.onnx', (loaded) => progress.push(loaded));
    expect(bytes.length).toBe(manifest.files.find((f: { path: string }) => f.path === 'model.onnx').bytes);
    expect(second.fromCache('model.onnx')).toBe(true);
    expect(progress.at(-1)).toBe(bytes.length);
    expect(server.requests).toEqual(['/models/tiny/manifest.json']);
  });

  it('never stores a file whose bytes do not match the manifest', async () => {
    const server = fakeServer();
    server.faults.set('tiny/tokenizer.json', new TextEncoder().encode('{"not":"the tokenizer"}'));
    const cache = new MemoryCache();
    const source = cachedModelSource(BASE, cache, server.fetch);
    await source.read('manifest.json');
    await source.read('tokenizer.json');
    expect([...cache.entries.keys()].filter((k) => k.includes('/sha256/'))).toHaveLength(0);
  });

  it('uses the stored manifest only when the network is unreachable, not on HTTP errors', async () => {
    const server = fakeServer();
    const cache = new MemoryCache();
    await cachedModelSource(BASE, cache, server.fetch).read('manifest.json');
    server.offline = true;
    const offline = cachedModelSource(BASE, cache, server.fetch);
    expect((await offline.read('manifest.json')).length).toBeGreaterThan(100);
    server.offline = false;
    server.faults.set('tiny/manifest.json', 404);
    await expect(cachedModelSource(BASE, cache, server.fetch).read('manifest.json')).rejects.toThrow(/file is missing/);
  });

  it('prunes files no current manifest lists', async () => {
    const cache = new MemoryCache();
    cache.entries.set(blobKey(ORIGIN, 'a'.repeat(64)), new Uint8Array(1));
    cache.entries.set(blobKey(ORIGIN, 'b'.repeat(64)), new Uint8Array(1));
    cache.entries.set(`${ORIGIN}/models/index.json`, new Uint8Array(1));
    expect(await pruneModelCache(cache, new Set(['a'.repeat(64)]))).toBe(1);
    expect([...cache.entries.keys()].sort()).toEqual([blobKey(ORIGIN, 'a'.repeat(64)), `${ORIGIN}/models/index.json`].sort());
  });
});
