/**
 * Uploaded models (src/lib/models/): the store over a real Dexie database (fake-indexeddb) with its
 * IndexedDB file backend — listed with sizes, the same model stored once, a failed write leaving
 * nothing behind, deletion; the ModelSource over stored files; folder paths; the pickers' options
 * and the `model=` link parameter.
 */
import { IDBKeyRange, indexedDB } from 'fake-indexeddb';
import { describe, expect, it } from 'vitest';
import { validateManifest, type Manifest } from '../../engine/model/manifest.ts';
import { modelOptions } from '../../src/lib/models/catalog.ts';
import { choiceValue, loadFields, parseChoice } from '../../src/lib/models/choice.ts';
import { openModelDb, type ModelDb } from '../../src/lib/models/db.ts';
import { idbFiles, opfsFiles, type DirectoryLike, type ModelFiles, type WritableLike } from '../../src/lib/models/files.ts';
import { folderFromFiles } from '../../src/lib/models/folder.ts';
import { readModelParam, withModelParam } from '../../src/lib/models/link-param.ts';
import { storedModelSource, uploadedModelSource } from '../../src/lib/models/source.ts';
import { ModelStore, ModelStoreError, QUOTA_MESSAGE, STALE_UPLOAD_MS } from '../../src/lib/models/store.ts';

const SHA = (c: string) => c.repeat(64);

function manifest(id = 'my-model'): Manifest {
  const layers = 1;
  const inputs = ['input_ids', 'position_ids', 'past_key_0', 'past_value_0', 'attn_bias_0'];
  const outputs = ['logits', 'key_0', 'value_0', 'attn_0', 'query_0'];
  return validateManifest({
    format: 'kvscope-explorer-graph',
    format_version: 1,
    id,
    name: `${id} (test)`,
    role: 'draft',
    architecture: { family: 'llama', n_layers: layers, n_heads: 2, n_kv_heads: 1, head_dim: 4, hidden_size: 8, intermediate_size: 16, vocab_size: 32, context_length: 64, rms_norm_eps: 1e-5, tie_word_embeddings: true },
    rope: { theta: 10000, dim: 4, style: 'half', scaling: null },
    tokenizer: { file: 'tokenizer.json', bos_id: 1, eos_id: 2, pad_id: 0, add_bos: true },
    graph: { parts: ['model.onnx'], opset: 17, inputs, outputs },
    files: [
      { path: 'model.onnx', sha256: SHA('a'), bytes: 5 },
      { path: 'tokenizer.json', sha256: SHA('b'), bytes: 3 },
    ],
  });
}

function upload(sha256 = SHA('1'), id = 'my-model', extra: { path: string; blob: Blob }[] = []) {
  const m = manifest(id);
  return {
    manifest: m,
    sha256,
    files: [
      { path: 'manifest.json', blob: new Blob([JSON.stringify(m)]) },
      { path: 'model.onnx', blob: new Blob([new Uint8Array([1, 2, 3, 4, 5])]) },
      { path: 'tokenizer.json', blob: new Blob(['{}\n']) },
      { path: 'MODEL_CARD.md', blob: new Blob(['# card']) },
      ...extra,
    ],
  };
}

function fresh(backend?: (db: ModelDb) => ModelFiles, name = `models-test-${crypto.randomUUID()}`): { db: ModelDb; store: ModelStore } {
  const db = openModelDb({ name, indexedDB, IDBKeyRange });
  const files = backend ? backend(db) : idbFiles(db);
  return { db, store: new ModelStore(db, async () => files) };
}

/** A Blob whose bytes must not be read (its size is all a bounded read may look at). */
function unreadable(size: number): Blob {
  const refuse = () => {
    throw new Error('read in full before its size was checked');
  };
  return { size, type: '', arrayBuffer: refuse, stream: refuse, text: refuse, slice: refuse, bytes: refuse } as unknown as Blob;
}

/** An in-memory OPFS directory (happy-dom and Node have none); `state.failWrite` makes writes fail like a full disk. */
class MemoryDirectory implements DirectoryLike {
  readonly dirs = new Map<string, MemoryDirectory>();
  readonly files = new Map<string, Blob>();
  /** names with a writable still open (OPFS refuses to remove those) */
  readonly locked = new Set<string>();

  constructor(readonly state = { failWrite: false, aborted: 0 }) {}

  async getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<MemoryDirectory> {
    let dir = this.dirs.get(name);
    if (!dir && !options?.create) throw Object.assign(new Error(name), { name: 'NotFoundError' });
    if (!dir) this.dirs.set(name, (dir = new MemoryDirectory(this.state)));
    return dir;
  }

  async getFileHandle(name: string, options?: { create?: boolean }) {
    if (!this.files.has(name) && !options?.create) throw Object.assign(new Error(name), { name: 'NotFoundError' });
    return {
      getFile: async () => this.files.get(name) ?? new Blob([]),
      createWritable: async (): Promise<WritableLike> => {
        this.locked.add(name);
        return {
          write: async (data: Blob) => {
            if (this.state.failWrite) throw Object.assign(new Error('quota'), { name: 'QuotaExceededError' });
            this.files.set(name, data);
          },
          close: async () => void this.locked.delete(name),
          abort: async () => {
            this.locked.delete(name);
            this.state.aborted++;
          },
        };
      },
    };
  }

  private isLocked(): boolean {
    return this.locked.size > 0 || [...this.dirs.values()].some((d) => d.isLocked());
  }

  async removeEntry(name: string): Promise<void> {
    const dir = this.dirs.get(name);
    if (!dir && !this.files.has(name)) throw Object.assign(new Error(name), { name: 'NotFoundError' });
    if (dir?.isLocked() || this.locked.has(name)) throw Object.assign(new Error(`${name} is locked`), { name: 'NoModificationAllowedError' });
    this.dirs.delete(name);
    this.files.delete(name);
  }

  async *keys(): AsyncIterable<string> {
    yield* [...this.dirs.keys(), ...this.files.keys()];
  }
}

describe('ModelStore', () => {
  it('stores a model with its files, lists it with its size, and reads its files back', async () => {
    const { db, store } = fresh();
    const { model, duplicate } = await store.add(upload());
    expect(duplicate).toBe(false);
    expect(model).toMatchObject({ key: SHA('1'), id: 'my-model', name: 'my-model (test)', role: 'draft', sha256: SHA('1'), storage: 'idb' });
    const json = JSON.stringify(manifest());
    expect(model.bytes).toBe(new Blob([json]).size + 5 + 3 + 6);
    expect(model.files.map((f) => [f.path, f.sha256 ?? null])).toEqual([
      ['manifest.json', null],
      ['model.onnx', SHA('a')],
      ['tokenizer.json', SHA('b')],
      ['MODEL_CARD.md', null],
    ]);
    expect((await store.list()).map((m) => m.key)).toEqual([SHA('1')]);
    expect(await db.blobs.count()).toBe(4);
    const source = storedModelSource(store, model);
    expect([...(await source.read('model.onnx'))]).toEqual([1, 2, 3, 4, 5]);
    await expect(source.read('calibration.json')).rejects.toThrow(/^calibration\.json: file is missing \(not stored with the uploaded model my-model\)/);
  });

  it('keeps the same model (same sha256) once, and a model with a shipped or repeated id under its own key', async () => {
    const { db, store } = fresh();
    await store.add(upload(SHA('1')));
    const again = await store.add(upload(SHA('1')));
    expect(again.duplicate).toBe(true);
    expect(await db.models.count()).toBe(1);
    expect(await db.blobs.count()).toBe(4);
    // another version under the same id: a second row, apart
    await store.add(upload(SHA('2')));
    expect((await store.list()).map((m) => m.key).sort()).toEqual([SHA('1'), SHA('2')]);
    expect(await store.find('my-model', SHA('2'))).toMatchObject({ key: SHA('2') });
    expect(await store.find('other-id', SHA('2'))).toBeUndefined();
  });

  it('a write that fails (a full disk) leaves nothing stored, with one message', async () => {
    let writes = 0;
    const { db, store } = fresh((d) => {
      const real = idbFiles(d);
      return {
        ...real,
        async write(key, path, blob) {
          if (++writes === 3) throw Object.assign(new Error('quota'), { name: 'QuotaExceededError' });
          return real.write(key, path, blob);
        },
      };
    });
    const failure = await store.add(upload()).then(
      () => null,
      (e: unknown) => e,
    );
    expect(failure).toBeInstanceOf(ModelStoreError);
    expect((failure as Error).message).toBe(QUOTA_MESSAGE);
    expect(await db.models.count()).toBe(0);
    expect(await db.blobs.count()).toBe(0);
  });

  it('two uploads of one model at once (two tabs): one stores it, the other says so and removes none of its files', async () => {
    const name = `models-test-${crypto.randomUUID()}`;
    // both tabs pass their get() before either row is written: each write waits until both are writing
    let arrived = 0;
    let release = () => {};
    const bothWriting = new Promise<void>((resolve) => (release = resolve));
    const gated = (d: ModelDb): ModelFiles => {
      const real = idbFiles(d);
      let first = true;
      return {
        ...real,
        async write(key, path, blob) {
          if (first) {
            first = false;
            if (++arrived === 2) release();
            await bothWriting;
          }
          return real.write(key, path, blob);
        },
      };
    };
    const a = fresh(gated, name);
    const b = fresh(gated, name);
    const results = await Promise.all([a.store.add(upload()), b.store.add(upload())]);
    expect(results.map((r) => r.duplicate).sort()).toEqual([false, true]);
    expect(await a.db.models.count()).toBe(1);
    const [row] = await a.store.list();
    expect(await a.db.blobs.count()).toBe(4);
    for (const f of row.files) expect(await a.store.read(row, f.path), f.path).not.toBeNull();
    expect([...(await storedModelSource(a.store, row).read('model.onnx'))]).toEqual([1, 2, 3, 4, 5]);
  });

  it('sweeps the files no row lists once their upload is older than any still being written', async () => {
    const { db, store } = fresh();
    const { model } = await store.add(upload(SHA('1')));
    const files = idbFiles(db);
    const now = Date.now();
    const closedTab = `${SHA('2')}.${now - STALE_UPLOAD_MS - 1}.deadbeef`;
    const writing = `${SHA('3')}.${now - 1000}.cafef00d`;
    const legacy = SHA('4');
    for (const key of [closedTab, writing, legacy]) await files.write(key, 'model.onnx', new Blob(['x']));
    expect((await store.sweep(now)).sort()).toEqual([closedTab, legacy].sort());
    expect((await files.keys()).sort()).toEqual([model.storageKey, writing].sort());
    expect(await store.read(model, 'model.onnx')).not.toBeNull();
  });

  it('an upload of a stored model with a corrected calibration.json replaces that file and nothing else', async () => {
    const { db, store } = fresh();
    const first = await store.add(upload(SHA('1'), 'my-model', [{ path: 'calibration.json', blob: new Blob(['{"old":1}']) }]));
    expect(first.updated).toEqual([]);
    // the same files again: nothing written
    const same = await store.add(upload(SHA('1'), 'my-model', [{ path: 'calibration.json', blob: new Blob(['{"old":1}']) }]));
    expect(same).toMatchObject({ duplicate: true, updated: [] });
    const fixed = await store.add(upload(SHA('1'), 'my-model', [{ path: 'calibration.json', blob: new Blob(['{"new":22}']) }]));
    expect(fixed).toMatchObject({ duplicate: true, updated: ['calibration.json'] });
    const [row] = await store.list();
    expect(await (await store.read(row, 'calibration.json'))!.text()).toBe('{"new":22}');
    expect(row.files.find((f) => f.path === 'calibration.json')?.bytes).toBe(10);
    expect(row.bytes).toBe(first.model.bytes + 1);
    expect(row.added).toBe(first.model.added);
    expect(await db.blobs.count()).toBe(5);
    // an optional file the stored model lacks is added
    const card = await store.add({ ...upload(SHA('1')), files: [...upload(SHA('1')).files, { path: 'reference.json', blob: new Blob(['[]']) }] });
    expect(card.updated).toEqual(['reference.json']);
    expect((await store.list())[0].files.map((f) => f.path)).toContain('reference.json');
  });

  it('a stored file is not read in full when it is larger than the loader asks for', async () => {
    const { store } = fresh((d) => ({ ...idbFiles(d), read: async () => unreadable(3e9) }));
    const { model } = await store.add(upload());
    await expect(storedModelSource(store, model).read('tokenizer.json', undefined, 3)).rejects.toThrow(/^tokenizer\.json: file is too large \(3000000000 bytes; at most 3 expected\)$/);
  });

  it('deletes a model and its files; a deleted model names where to get it again', async () => {
    const { db, store } = fresh();
    const one = (await store.add(upload(SHA('1')))).model;
    const two = (await store.add(upload(SHA('2')))).model;
    await store.remove(SHA('1'));
    expect((await store.list()).map((m) => m.key)).toEqual([SHA('2')]);
    expect(await db.blobs.where('key').equals(one.storageKey!).count()).toBe(0);
    expect(await db.blobs.where('key').equals(two.storageKey!).count()).toBe(4);
    await expect(uploadedModelSource(store, SHA('1'))).rejects.toThrow(/is not stored in this browser .*upload it again at \/models/);
    const source = await uploadedModelSource(store, SHA('2'));
    expect(source.files.map((f) => f.path)).toEqual(['model.onnx', 'tokenizer.json']);
  });
});

describe('OPFS files', () => {
  it('a failed write (quota full) aborts its writable, so the model folder can be removed', async () => {
    const root = new MemoryDirectory();
    const files = opfsFiles(root);
    await files.write('k', 'a.json', new Blob(['{}']));
    root.state.failWrite = true;
    await expect(files.write('k', 'b.json', new Blob(['{}']))).rejects.toThrow('quota');
    expect(root.state.aborted).toBe(1);
    await files.remove('k');
    expect(await files.keys()).toEqual([]);
  });
});

describe('model folders, choices and links', () => {
  const file = (relative: string, text = 'x') => Object.assign(new File([text], relative.split('/').pop()!), { webkitRelativePath: relative });

  it('takes paths relative to the picked folder', () => {
    const folder = folderFromFiles([file('kvscope-draft-2l/manifest.json'), file('kvscope-draft-2l/model.onnx'), file('kvscope-draft-2l/sub/notes.md')]);
    expect(folder.name).toBe('kvscope-draft-2l');
    expect(folder.files.map((f) => f.path)).toEqual(['manifest.json', 'model.onnx', 'sub/notes.md']);
    // files of two folders keep their folder names (the check then names what it misses)
    expect(folderFromFiles([file('a/manifest.json'), file('b/model.onnx')]).files.map((f) => f.path)).toEqual(['a/manifest.json', 'b/model.onnx']);
  });

  it('lists shipped models first (the default first of all), uploads apart with a sha256 prefix', () => {
    const options = modelOptions(
      [
        { id: 'draft', role: 'draft' },
        { id: 'big', role: 'target' },
      ],
      'big',
      [{ key: SHA('c'), id: 'big', name: 'Big retrained', role: 'target', sha256: SHA('c'), bytes: 1, files: [], added: 1, storage: 'opfs' }],
    );
    expect(options.map((o) => o.label)).toEqual(['big · default', 'draft (draft)', 'big · uploaded · cccccccc']);
    expect(options.map((o) => o.value)).toEqual(['shipped:big', 'shipped:draft', `uploaded:${SHA('c')}`]);
    expect(parseChoice(options[2].value)).toEqual({ kind: 'uploaded', key: SHA('c') });
    expect(loadFields(parseChoice(options[2].value))).toEqual({ modelSource: { kind: 'uploaded', key: SHA('c') } });
    expect(loadFields({ kind: 'shipped', id: 'draft' })).toEqual({ modelId: 'draft' });
    expect(choiceValue({ kind: 'shipped', id: 'x' })).toBe('shipped:x');
    expect(parseChoice('nonsense')).toBeNull();
  });

  it('names the model in /compare and /bench links, and reads it back', () => {
    const query = withModelParam('v=1&lane=full', { id: 'my-model', sha256: SHA('d') });
    expect(query).toBe(`v=1&lane=full&model=my-model%7E${SHA('d')}`);
    expect(readModelParam(`?${query}`)).toEqual({ id: 'my-model', sha256: SHA('d') });
    expect(withModelParam('v=1', null)).toBe('v=1');
    expect(readModelParam('v=1&model=broken')).toBeNull();
  });
});
