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
import { idbFiles, type ModelFiles } from '../../src/lib/models/files.ts';
import { folderFromFiles } from '../../src/lib/models/folder.ts';
import { readModelParam, withModelParam } from '../../src/lib/models/link-param.ts';
import { storedModelSource, uploadedModelSource } from '../../src/lib/models/source.ts';
import { ModelStore, ModelStoreError, QUOTA_MESSAGE } from '../../src/lib/models/store.ts';

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

function upload(sha256 = SHA('1'), id = 'my-model') {
  const m = manifest(id);
  return {
    manifest: m,
    sha256,
    files: [
      { path: 'manifest.json', blob: new Blob([JSON.stringify(m)]) },
      { path: 'model.onnx', blob: new Blob([new Uint8Array([1, 2, 3, 4, 5])]) },
      { path: 'tokenizer.json', blob: new Blob(['{}\n']) },
      { path: 'MODEL_CARD.md', blob: new Blob(['# card']) },
    ],
  };
}

function fresh(backend?: (db: ModelDb) => ModelFiles): { db: ModelDb; store: ModelStore } {
  const db = openModelDb({ name: `models-test-${crypto.randomUUID()}`, indexedDB, IDBKeyRange });
  const files = backend ? backend(db) : idbFiles(db);
  return { db, store: new ModelStore(db, async () => files) };
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

  it('deletes a model and its files; a deleted model names where to get it again', async () => {
    const { db, store } = fresh();
    await store.add(upload(SHA('1')));
    await store.add(upload(SHA('2')));
    await store.remove(SHA('1'));
    expect((await store.list()).map((m) => m.key)).toEqual([SHA('2')]);
    expect(await db.blobs.where('key').equals(SHA('1')).count()).toBe(0);
    expect(await db.blobs.where('key').equals(SHA('2')).count()).toBe(4);
    await expect(uploadedModelSource(store, SHA('1'))).rejects.toThrow(/is not stored in this browser .*upload it again at \/models/);
    const source = await uploadedModelSource(store, SHA('2'));
    expect(source.files.map((f) => f.path)).toEqual(['model.onnx', 'tokenizer.json']);
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
