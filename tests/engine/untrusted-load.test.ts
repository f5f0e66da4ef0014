/**
 * loadModel on untrusted folders (issue 12 §4): out-of-range manifests are refused before any file
 * but manifest.json is read, dimensions are checked against the graph before a session decodes,
 * and tokenizer.json is checked against the manifest. Each failure is one ModelError naming the field.
 */
import * as ort from 'onnxruntime-web';
import { describe, expect, it } from 'vitest';
import { ModelError } from '../../engine/errors.ts';
import { checkGraphDims, type GraphSession } from '../../engine/model/graph-check.ts';
import { loadModel } from '../../engine/model/load.ts';
import { validateManifest } from '../../engine/model/manifest.ts';
import { fixtureFiles, memorySource, mutatedFolder, type Json, type Mutation } from './untrusted-folder.ts';

async function loadMutated(mutation: Mutation) {
  const source = memorySource(await mutatedFolder(mutation));
  return { source, loading: loadModel(source, { numThreads: 1 }) };
}

async function expectRefused(mutation: Mutation, message: string): Promise<string[]> {
  const { source, loading } = await loadMutated(mutation);
  await expect(loading).rejects.toThrow(new ModelError(message));
  return source.reads;
}

describe('loadModel refuses out-of-range manifests before reading anything else', () => {
  it('n_heads 1e6 and n_layers 1e9 fail at once, having read only manifest.json', async () => {
    const started = performance.now();
    const heads = await expectRefused(
      { manifest: (m) => (m.architecture.n_heads = 1e6) },
      'manifest.json: architecture.n_heads must be an integer from 1 to 256, got 1000000',
    );
    const layers = await expectRefused(
      { manifest: (m) => (m.architecture.n_layers = 1e9) },
      'manifest.json: architecture.n_layers must be an integer from 1 to 256, got 1000000000',
    );
    expect(heads).toEqual(['manifest.json']);
    expect(layers).toEqual(['manifest.json']);
    expect(performance.now() - started).toBeLessThan(500);
  });

  it('does not trust context_length as written', async () => {
    await expectRefused(
      { manifest: (m) => (m.architecture.context_length = 1e7) },
      'manifest.json: architecture.context_length must be an integer from 1 to 32768, got 10000000',
    );
  });

  it('refuses a manifest.json larger than 1 MiB without parsing it', async () => {
    const { loading } = await loadMutated({ manifestText: (text) => `${text.slice(0, -1)}, "padding": "${'x'.repeat(1024 ** 2)}"}` });
    await expect(loading).rejects.toThrow(/^manifest\.json: file is too large \(\d+ bytes; at most 1048576 expected\)$/);
  });
});

describe('loadModel checks the manifest dimensions against the graph', () => {
  // Each passes validateManifest (the numbers are in range and consistent) but is not the graph's.
  const cases: [string, (m: Json) => void, string][] = [
    ['n_kv_heads', (m) => (m.architecture.n_kv_heads = 4), 'manifest.json: architecture.n_kv_heads (4) does not match the graph (past_key_0 has 2 heads)'],
    ['n_heads', (m) => (m.architecture.n_heads = 8), 'manifest.json: architecture.n_heads (8) does not match the graph (attn_bias_0 has 4 heads)'],
    ['head_dim', (m) => (m.architecture.head_dim = 16), 'manifest.json: architecture.head_dim (16) does not match the graph (past_key_0 has 8 values per head)'],
    ['vocab_size', (m) => (m.architecture.vocab_size = 8192), 'manifest.json: architecture.vocab_size (8192) does not match the graph (logits has 4096 values per token)'],
  ];
  for (const [field, edit, message] of cases) {
    it(`names architecture.${field} when the graph has another`, async () => {
      await expectRefused({ manifest: edit }, message);
    });
  }

  it('falls back on a one-token forward when the graph leaves its dimensions symbolic', async () => {
    const { manifest: fixtureManifest, files } = await fixtureFiles();
    const session = await ort.InferenceSession.create(files.get('model.onnx')!, { executionProviders: ['wasm'] });
    // what an exporter that names every dimension would report
    const symbolic = (list: readonly ort.InferenceSession.ValueMetadata[]) =>
      list.map((v) => (v.isTensor ? { ...v, shape: v.shape.map((_, i) => `d${i}`) } : v));
    const hidden: GraphSession = {
      inputMetadata: symbolic(session.inputMetadata),
      outputMetadata: symbolic(session.outputMetadata),
      run: (feeds, fetches) => session.run(feeds, fetches as string[]),
    };
    const edited = (edit: (m: Json) => void) => {
      const m = structuredClone(fixtureManifest);
      edit(m);
      return validateManifest(m);
    };
    try {
      await checkGraphDims(edited(() => {}), hidden);
      await expect(checkGraphDims(edited((m) => (m.architecture.vocab_size = 8192)), hidden)).rejects.toThrow(
        new ModelError('manifest.json: architecture.vocab_size (8192) does not match the graph (a one-token forward: logits has 4096 values per token)'),
      );
      await expect(checkGraphDims(edited((m) => (m.architecture.n_kv_heads = 4)), hidden)).rejects.toThrow(
        /^manifest\.json: architecture\.n_heads \(4\), n_kv_heads \(4\), head_dim \(8\) or vocab_size \(4096\) does not match the graph: a one-token forward with these shapes failed \(.+\)$/,
      );
    } finally {
      await session.release();
    }
  });
});

describe('loadModel checks tokenizer.json against the manifest', () => {
  const cases: [string, (t: Json) => void, string][] = [
    ['an empty vocabulary', (t) => (t.model.vocab = {}), 'tokenizer.json: model.vocab is empty (every prompt would encode to no tokens)'],
    ['a vocabulary that is no object', (t) => (t.model.vocab = 'abc'), 'tokenizer.json: model.vocab must be an object of token → id (or Unigram [piece, score] pairs), got "abc"'],
    ['an id past vocab_size', (t) => (t.model.vocab.the = 4096), 'tokenizer.json: model.vocab gives "the" the id 4096, outside manifest.json\'s architecture.vocab_size (4096)'],
    ['a negative id', (t) => (t.model.vocab.the = -1), 'tokenizer.json: model.vocab gives "the" the id -1, not an integer ≥ 0'],
    ['two tokens with one id', (t) => (t.model.vocab.the = t.model.vocab['!']), 'tokenizer.json: model.vocab gives the id 3 to both "!" and "the"'],
    ['a merge that is no pair', (t) => (t.model.merges[5] = 'a b c'), 'tokenizer.json: model.merges[5] must be "left right" or ["left", "right"], got "a b c"'],
    ['merges that are no array', (t) => (t.model.merges = { a: 'b' }), 'tokenizer.json: model.merges must be an array, got an object'],
    ['an added token past vocab_size', (t) => (t.added_tokens[1].id = 5000), 'tokenizer.json: added_tokens[1].id must be an integer from 0 to 4095 (architecture.vocab_size − 1), got 5000'],
    ['an added token that renames a vocab token', (t) => (t.added_tokens[0].id = 3), 'tokenizer.json: added_tokens[0] gives the id 3 to "<|pad|>", which model.vocab gives to "!"'],
    ['an unknown model type', (t) => (t.model.type = 'Magic'), 'tokenizer.json: model.type must be one of BPE, WordPiece, WordLevel, Unigram, got "Magic"'],
    ['no bos token', (t) => {
      delete t.model.vocab['<|bos|>'];
      t.added_tokens = t.added_tokens.filter((a: Json) => a.id !== 1);
    }, "tokenizer.json: has no token with manifest.json's tokenizer.bos_id (1)"],
    ['no decoder (the probe text does not come back)', (t) => (t.decoder = null), 'tokenizer.json: the probe text "the quick brown fox, 42 times." encodes to 11 tokens that decode to "the Ġquick Ġbrown Ġf ox , Ġ 4 2 Ġtimes .", not back to it'],
  ];
  for (const [what, edit, message] of cases) {
    it(`refuses ${what}`, async () => {
      const reads = await expectRefused({ tokenizer: edit }, message);
      expect(reads).not.toContain('calibration.json');
    });
  }

  it('refuses a tokenizer whose probe text encodes to no tokens', async () => {
    // a vocabulary of the special tokens only: tokenizers.js drops every byte it has no token for
    const { loading } = await loadMutated({
      tokenizer: (t) => {
        t.model.vocab = { '<|pad|>': 0, '<|bos|>': 1, '<|eos|>': 2 };
        t.model.merges = [];
      },
    });
    await expect(loading).rejects.toThrow(/^tokenizer\.json: (encodes the probe text "the quick brown fox, 42 times\." to no tokens|the probe text .* not back to it)$/);
  });

  it('still loads the fixture through an in-memory source', async () => {
    const { loading } = await loadMutated({});
    const model = await loading;
    expect(model.tokenizer.encode('the').length).toBeGreaterThan(1);
    await model.release();
  });
});
