/**
 * The pickers' lists and the model a page opens with (src/lib/models/catalog.ts): the shipped list
 * offline from the worker's cached index.json, links without `model=` on the default, the
 * default's load never waiting for IndexedDB, a deleted model's placeholder.
 */
import { describe, expect, it } from 'vitest';
import { INDEX_CACHE_NAME, modelOptions, pickerOptions, pickInitialChoice, readShipped, type ShippedModel } from '../../src/lib/models/catalog.ts';
import type { StoredModel } from '../../src/lib/models/db.ts';
import { MODEL_CACHE_NAME } from '../../src/lib/worker/model-cache.ts';
import { MemoryCache, MODELS_URL } from './helpers.ts';

const INDEX = JSON.stringify({ default: 'a', models: [{ id: 'a', path: 'a' }, { id: 'd', path: 'd', role: 'draft' }] });
const SHIPPED: ShippedModel[] = [{ id: 'a', role: 'target' }];
const UPLOAD = { key: 'u1', id: 'mine', role: 'target', sha256: 'ab'.repeat(32) } as StoredModel;
const never = <T>() => new Promise<T>(() => undefined);

describe('readShipped', () => {
  it('reads index.json from the network, else (offline) from the copy the worker host cached', async () => {
    const cache = new MemoryCache();
    const caches = { open: async (name: string) => (name === MODEL_CACHE_NAME ? cache : new MemoryCache()) };
    const online = (async () => new Response(INDEX)) as unknown as typeof fetch;
    const offline = (async () => {
      throw new TypeError('Failed to fetch');
    }) as unknown as typeof fetch;
    expect(await readShipped(MODELS_URL, online, caches)).toEqual({ defaultId: 'a', models: [{ id: 'a', role: 'target' }, { id: 'd', role: 'draft' }] });
    await expect(readShipped(MODELS_URL, offline, caches)).rejects.toThrow(/index.json: cannot fetch \(Failed to fetch\) and no copy is cached/);
    // the host keeps its copy under the index's own URL (host.ts readJson)
    await cache.put(`${MODELS_URL}index.json`, new Response(INDEX));
    expect((await readShipped(MODELS_URL, offline, caches)).models.map((m) => m.id)).toEqual(['a', 'd']);
    // the server's own refusal is reported, not hidden behind the old copy
    const refused = (async () => new Response('gone', { status: 404 })) as unknown as typeof fetch;
    await expect(readShipped(MODELS_URL, refused, caches)).rejects.toThrow('models/index.json: HTTP 404');
    expect(INDEX_CACHE_NAME).toBe(MODEL_CACHE_NAME);
  });
});

describe('pickInitialChoice', () => {
  const shipped = async () => SHIPPED;
  const uploads = async () => [UPLOAD];

  it('a link without model= is the default (it was made on it); only a bare address takes the saved choice', async () => {
    const saved = { kind: 'uploaded', key: 'u1' } as const;
    expect(await pickInitialChoice({ linked: null, fromLink: true }, saved, shipped, uploads)).toBeNull();
    expect(await pickInitialChoice({ linked: null, fromLink: false }, saved, shipped, uploads)).toEqual(saved);
    // a saved model that is gone: the default
    expect(await pickInitialChoice({ linked: null, fromLink: false }, { kind: 'uploaded', key: 'gone' }, shipped, uploads)).toBeNull();
    expect(await pickInitialChoice({ linked: null, fromLink: false }, { kind: 'shipped', id: 'gone' }, shipped, uploads)).toBeNull();
  });

  it('a linked model: the upload with its id and sha256, else the shipped id, else the default', async () => {
    const saved = { kind: 'shipped', id: 'a' } as const;
    expect(await pickInitialChoice({ linked: { id: 'mine', sha256: UPLOAD.sha256 }, fromLink: true }, saved, shipped, uploads)).toEqual({ kind: 'uploaded', key: 'u1' });
    expect(await pickInitialChoice({ linked: { id: 'a', sha256: 'cd'.repeat(32) }, fromLink: true }, null, shipped, uploads)).toEqual({ kind: 'shipped', id: 'a' });
    expect(await pickInitialChoice({ linked: { id: 'mine', sha256: 'cd'.repeat(32) }, fromLink: true }, saved, shipped, uploads)).toBeNull();
  });

  it('asks IndexedDB only for a saved or linked upload', async () => {
    expect(await pickInitialChoice({ linked: null, fromLink: false }, null, never, never)).toBeNull();
    expect(await pickInitialChoice({ linked: null, fromLink: true }, { kind: 'uploaded', key: 'u1' }, never, never)).toBeNull();
    expect(await pickInitialChoice({ linked: null, fromLink: false }, { kind: 'shipped', id: 'a' }, shipped, never)).toEqual({ kind: 'shipped', id: 'a' });
  });
});

describe('pickerOptions', () => {
  it('adds "(deleted) <id>" for a current choice the lists no longer have, and nothing otherwise', () => {
    const options = modelOptions(SHIPPED, 'a', [UPLOAD]);
    expect(pickerOptions(options, { kind: 'uploaded', key: 'u1' }, new Map())).toEqual(options);
    expect(pickerOptions(options, null, new Map())).toEqual(options);
    const without = modelOptions(SHIPPED, 'a', []);
    const known = new Map([['uploaded:u1', { id: 'mine', role: 'draft' as const }]]);
    expect(pickerOptions(without, { kind: 'uploaded', key: 'u1' }, known).at(-1)).toEqual({
      choice: { kind: 'uploaded', key: 'u1' },
      value: 'uploaded:u1',
      label: '(deleted) mine',
      id: 'mine',
      role: 'draft',
      uploaded: true,
    });
    // never listed on this page: what the choice names
    expect(pickerOptions(without, { kind: 'shipped', id: 'old' }, new Map()).at(-1)?.label).toBe('(deleted) old');
  });
});
