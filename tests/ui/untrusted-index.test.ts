/**
 * What the browser side takes from outside and turns into URLs or file lookups: the entries of
 * models/index.json (the explorer's load, its cache pruning, a draft model's load, /bench's cell
 * inputs) and the paths of an uploaded folder's files. A bad one is refused with one message naming
 * the field or the file, before anything is fetched from the path it names; a folder's file that no
 * manifest field names is ignored, whatever its name.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DraftSpecError, ModelError } from '../../engine/errors.ts';
import { loadModel, type LoadedModel } from '../../engine/model/load.ts';
import { cellInputs } from '../../src/lib/bench/cell-inputs.ts';
import { folderFromFiles } from '../../src/lib/models/folder.ts';
import { folderSource } from '../../src/lib/models/source.ts';
import { BrowserDrafterEnvs, indexEntry } from '../../src/lib/worker/drafter-env.ts';
import { EngineHost } from '../../src/lib/worker/host.ts';
import type { EngineEvent } from '../../src/lib/worker/protocol.ts';
import { EventLog, fakeServer, MemoryCache, MODELS_URL, type FakeServer } from './helpers.ts';

const TINY = { id: 'tiny-fixture', path: 'tiny' };
const DRAFT = join(process.cwd(), 'static/models/kvscope-draft-2l');

/** The fixture server with models/index.json listing `models`. */
function serverWith(models: unknown[], extra: Record<string, unknown> = {}): FakeServer {
  const server = fakeServer();
  server.faults.set('index.json', new TextEncoder().encode(JSON.stringify({ default: 'tiny-fixture', models, ...extra })));
  return server;
}

/** Requests that left /models/ (what a path escaping the directory would make). */
const outside = (server: FakeServer) => server.requests.filter((path) => !path.startsWith('/models/'));

async function load(server: FakeServer, modelId?: string, cache: MemoryCache | null = null): Promise<EngineEvent> {
  const log = new EventLog();
  const host = new EngineHost(log.post, { loadModel, fetch: server.fetch, caches: cache ? { open: async () => cache } : null });
  host.handle({ type: 'load', id: 1, modelsUrl: MODELS_URL, wasmUrl: '', threads: 1, ...(modelId ? { modelId } : {}) });
  return log.reply(1);
}

describe('models/index.json entries', () => {
  it('checks the id asked for and the entry path before either becomes a URL', () => {
    const index = { models: [TINY, { id: 'up', path: '%2e%2e/secret' }, { id: 'num', path: 7 }] };
    expect(indexEntry(index, 'tiny-fixture')).toEqual(TINY);
    expect(indexEntry(index, 'absent')).toBeNull();
    expect(() => indexEntry(index, 'up')).toThrow(ModelError);
    expect(() => indexEntry(index, 'up')).toThrow(/^models\/index\.json: models\[1\]\.path must be a plain relative path .*"%2e%2e\/secret" \(it decodes to "\.\.\/secret"/);
    expect(() => indexEntry(index, 'num')).toThrow(/^models\/index\.json: models\[2\]\.path must be a string$/);
    expect(() => indexEntry(index, '../tiny', 'model id')).toThrow(/^model id must be a model id .*not a path, got "\.\.\/tiny"$/);
    expect(() => indexEntry({ models: {} }, 'tiny-fixture')).toThrow(/^models\/index\.json: models must be a list$/);
  });

  it('the explorer refuses a bad entry or id by its field and fetches nothing outside models/', async () => {
    for (const path of ['%2e%2e/tiny', '../tiny', '/tiny', 'tiny?x', 'https://elsewhere.test/tiny']) {
      const server = serverWith([{ id: 'tiny-fixture', path }]);
      const reply = await load(server);
      expect(reply, path).toMatchObject({ type: 'error', kind: 'model' });
      expect((reply as { message: string }).message, path).toMatch(/^models\/index\.json: models\[0\]\.path must be a plain relative path inside the model directory/);
      expect(server.requests, path).toEqual(['/models/index.json']);
    }
    const byId = await load(serverWith([TINY]), '../tiny');
    expect(byId).toMatchObject({ type: 'error', kind: 'model' });
    expect((byId as { message: string }).message).toMatch(/^model id must be a model id .*got "\.\.\/tiny"/);
    const byDefault = await load(serverWith([TINY], { default: 'a/b' }));
    expect((byDefault as { message: string }).message).toMatch(/^models\/index\.json: default must be a model id .*got "a\/b"/);
  });

  it('the cache pruning reads no manifest through another entry whose path escapes', async () => {
    const server = serverWith([TINY, { id: 'other', path: '%2e%2e/elsewhere' }]);
    const cache = new MemoryCache();
    const reply = await load(server, undefined, cache);
    expect(reply).toMatchObject({ type: 'ready', cache: { removed: 0 } });
    expect(outside(server)).toEqual([]);
    expect(server.requests.some((r) => r.includes('elsewhere'))).toBe(false);
  });

  it('a draft model: a bad entry path or id is a drafter error naming it, nothing fetched from it', async () => {
    const server = serverWith([TINY, { id: 'draft', path: '..%2f..%2fdraft' }]);
    const envs = new BrowserDrafterEnvs(server.fetch, { caches: null });
    const env = envs.env({ manifest: { id: 'tiny-fixture' } } as LoadedModel, MODELS_URL, undefined);
    await expect(env.loadModel!('draft')).rejects.toThrow(DraftSpecError);
    await expect(env.loadModel!('draft')).rejects.toThrow(/^model: models\/index\.json: models\[1\]\.path must be a plain relative path .*it decodes to "\.\.\/\.\.\/draft"/);
    await expect(env.loadModel!('../draft')).rejects.toThrow(/^model: the draft model must be a model id .*got "\.\.\/draft"/);
    expect(server.requests.every((r) => r === '/models/index.json')).toBe(true);
  });
});

describe("/bench's cell inputs", () => {
  afterEach(() => vi.unstubAllGlobals());

  it('refuse an index entry whose path escapes models/, naming the field', async () => {
    const server = serverWith([{ id: 'tiny-fixture', path: '../../tiny' }]);
    vi.stubGlobal('fetch', server.fetch);
    await expect(cellInputs(MODELS_URL, `${MODELS_URL}tiny/manifest.json`, 'tiny-fixture')).rejects.toThrow(/^models\/index\.json: models\[0\]\.path .*a "\.\." segment leaves the directory/);
    expect(outside(server)).toEqual([]);
  });
});

describe('uploaded folders', () => {
  const blob = new Blob(['{}']);

  const ODD = ['../secret.json', 'sub/../../x', 'a//b', '%2e%2e/x', 'Icon\r', 'notes #1.md', 'c:\\x'];

  it('ignore a file the manifest does not list, whatever its name (it is never read)', async () => {
    for (const path of ODD) {
      const files = new Map([
        ['manifest.json', blob],
        [path, blob],
      ]);
      const source = folderSource(files, 'copy');
      await expect(source.read('manifest.json').then((b) => b.length), JSON.stringify(path)).resolves.toBe(2);
      // asked for by that name, it is still refused before any lookup
      await expect(source.read(path), JSON.stringify(path)).rejects.toThrow(new RegExp(`^${escape(JSON.stringify(path))} must be a plain relative path inside the model directory`));
    }
  });

  it('refuse a manifest that lists a path that is not plain, naming the field', async () => {
    for (const path of ODD) {
      const manifest = { ...JSON.parse(readFileSync(join(DRAFT, 'manifest.json'), 'utf8')) };
      manifest.files = [...manifest.files, { path, sha256: 'a'.repeat(64), bytes: 2 }];
      const files = new Map([
        ['manifest.json', new Blob([JSON.stringify(manifest)])],
        [path, blob],
      ]);
      const at = manifest.files.length - 1;
      await expect(loadModel(folderSource(files, 'copy'), { numThreads: 1 }), JSON.stringify(path)).rejects.toThrow(
        new RegExp(`^manifest\\.json: files\\[${at}\\]\\.path must be a plain relative path inside the model directory, got ${escape(JSON.stringify(path))}`),
      );
    }
  });

  it('read only plain paths (a name the folder does not hold cannot reach outside it)', async () => {
    const source = folderSource(new Map([['manifest.json', blob]]), 'copy');
    await expect(source.read('../manifest.json')).rejects.toThrow(/^"\.\.\/manifest\.json" must be a plain relative path .*a "\.\." segment/);
    await expect(source.read('manifest.json').then((b) => b.length)).resolves.toBe(2);
  });

  it('keep a picked path as the browser gave it: a leading "/" is not re-rooted (manifest.json is then missing)', async () => {
    const file = (relative: string) => Object.assign(new File(['{}'], relative.split('/').pop()!), { webkitRelativePath: relative });
    const picked = folderFromFiles([file('/copy/manifest.json')]);
    expect(picked.files.map((f) => f.path)).toEqual(['/copy/manifest.json']);
    const files = new Map(picked.files.map((f) => [f.path, f.file as Blob]));
    await expect(folderSource(files, picked.name || 'picked').read('manifest.json')).rejects.toThrow(/^manifest\.json: file is missing \(not in the folder picked\)/);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
