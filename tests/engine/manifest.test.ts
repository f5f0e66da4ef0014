/** validateManifest: every malformed field is named exactly. */
import { describe, expect, it } from 'vitest';
import { ModelError } from '../../engine/errors.ts';
import { expectedGraphInputs, expectedGraphOutputs, modelSha256, validateManifest } from '../../engine/model/manifest.ts';

const HASH = 'a'.repeat(64);

// Tests break the manifest JSON at will, so drafts are loosely typed on purpose.
function goodManifest(): Record<string, any> {
  return {
    format: 'kvscope-explorer-graph',
    format_version: 1,
    id: 'm',
    name: 'Model',
    role: 'target',
    architecture: {
      family: 'llama',
      n_layers: 2,
      n_heads: 8,
      n_kv_heads: 2,
      head_dim: 32,
      hidden_size: 256,
      intermediate_size: 768,
      vocab_size: 4096,
      context_length: 1024,
      rms_norm_eps: 1e-5,
      tie_word_embeddings: true,
      parameters: 1000,
    },
    rope: { theta: 10000, dim: 32, style: 'half', scaling: null },
    tokenizer: { file: 'tokenizer.json', bos_id: 1, eos_id: 2, pad_id: 0, add_bos: true },
    graph: { parts: ['model.onnx.part0', 'model.onnx.part1'], opset: 17, inputs: expectedGraphInputs(2), outputs: expectedGraphOutputs(2) },
    files: [
      { path: 'model.onnx.part0', sha256: HASH, bytes: 16 },
      { path: 'model.onnx.part1', sha256: HASH, bytes: 8 },
      { path: 'tokenizer.json', sha256: HASH, bytes: 100 },
    ],
    draft: 'kvscope-draft-2l',
    provenance: { created: 'now' },
  };
}

function expectError(edit: (m: Record<string, any>) => void, message: string): void {
  const manifest = goodManifest();
  edit(manifest);
  expect(() => validateManifest(manifest)).toThrow(new ModelError(message));
}

describe('validateManifest', () => {
  it('accepts the documented example', () => {
    const manifest = validateManifest(goodManifest());
    expect(manifest.architecture.n_kv_heads).toBe(2);
    expect(manifest.graph.parts).toEqual(['model.onnx.part0', 'model.onnx.part1']);
    expect(manifest.tokenizer.pad_id).toBe(0);
    expect(manifest.draft).toBe('kvscope-draft-2l');
  });

  it('names missing fields with their path', () => {
    expectError((m) => delete m.architecture.n_kv_heads, 'manifest.json: architecture.n_kv_heads is missing');
    expectError((m) => delete m.rope, 'manifest.json: rope is missing');
    expectError((m) => delete m.tokenizer.bos_id, 'manifest.json: tokenizer.bos_id is missing');
    expectError((m) => delete m.files, 'manifest.json: files is missing');
    expectError((m) => delete m.graph.parts, 'manifest.json: graph.parts is missing');
  });

  it('names wrong types and values', () => {
    expectError((m) => (m.format = 'onnx'), 'manifest.json: format must be "kvscope-explorer-graph", got "onnx"');
    expectError((m) => (m.format_version = 2), 'manifest.json: format_version must be 1 (the version this kvscope reads), got 2');
    expectError((m) => (m.role = 'teacher'), 'manifest.json: role must be "target" or "draft", got "teacher"');
    expectError((m) => (m.architecture.n_layers = '8'), 'manifest.json: architecture.n_layers must be an integer from 1 to 256, got "8"');
    expectError((m) => (m.architecture.head_dim = 0), 'manifest.json: architecture.head_dim must be an integer from 1 to 1024, got 0');
    expectError((m) => (m.architecture.rms_norm_eps = -1), 'manifest.json: architecture.rms_norm_eps must be a number above 0 and below 1, got -1');
    expectError((m) => (m.architecture.tie_word_embeddings = 'yes'), 'manifest.json: architecture.tie_word_embeddings must be true or false, got "yes"');
    expectError((m) => (m.architecture.n_kv_heads = 3), 'manifest.json: architecture.n_kv_heads (3) must divide n_heads (8)');
    expectError((m) => (m.rope.style = 'interleaved'), 'manifest.json: rope.style must be "half" (rotate-half RoPE), got "interleaved"');
    expectError((m) => (m.rope.dim = 64), 'manifest.json: rope.dim (64) must not exceed architecture.head_dim (32)');
    expectError((m) => (m.rope.scaling = { type: 'yarn' }), 'manifest.json: rope.scaling must be null (RoPE scaling is not supported yet), got an object');
    expectError((m) => (m.tokenizer.eos_id = 5000), 'manifest.json: tokenizer.eos_id (5000) must be < architecture.vocab_size (4096)');
    expectError((m) => (m.files[1].sha256 = 'abc'), 'manifest.json: files[1].sha256 must be 64 hex digits, got "abc"');
    expectError((m) => (m.files[0].bytes = 1.5), 'manifest.json: files[0].bytes must be an integer from 0 to 4294967296, got 1.5');
    expect(() => validateManifest([])).toThrow('manifest.json: must be a JSON object, got an array');
  });

  it('requires the graph I/O lists of the contract', () => {
    expectError(
      (m) => (m.graph.inputs = m.graph.inputs.filter((n: string) => n !== 'past_key_0')),
      'manifest.json: graph.inputs must list past_key_0',
    );
    expectError((m) => (m.graph.outputs = [...m.graph.outputs, 'hidden_0']), 'manifest.json: graph.outputs lists unexpected name(s) hidden_0');
    expectError(
      (m) => (m.graph.inputs = ['position_ids', 'input_ids', ...m.graph.inputs.slice(2)]),
      'manifest.json: graph.inputs must be in contract order: position 0 is position_ids, expected input_ids',
    );
    expectError(
      (m) => (m.architecture.n_layers = 3),
      'manifest.json: graph.inputs must list past_key_2, past_value_2, attn_bias_2',
    );
  });

  it('requires every graph part and the tokenizer to be listed in files, with safe paths', () => {
    expectError((m) => m.files.splice(1, 1), 'manifest.json: files must list model.onnx.part1 (with its sha256 and bytes)');
    expectError((m) => (m.tokenizer.file = '../secret.json'), 'manifest.json: tokenizer.file must be a plain relative path inside the model directory, got "../secret.json" (a ".." segment leaves the directory)');
    expectError((m) => (m.files[2].path = '/etc/passwd'), 'manifest.json: files[2].path must be a plain relative path inside the model directory, got "/etc/passwd" (it is absolute)');
    expectError((m) => m.files.push({ ...m.files[0] }), 'manifest.json: files[3].path lists model.onnx.part0 a second time');
  });
});

describe('modelSha256 (what links and notebooks name a model by)', () => {
  it('changes with any file or manifest field, and is the same for the same manifest', async () => {
    const base = await modelSha256(validateManifest(goodManifest()));
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    const file = goodManifest();
    file.files[1].sha256 = 'b'.repeat(64);
    expect(await modelSha256(validateManifest(file))).not.toBe(base);
    const context = goodManifest();
    context.architecture.context_length = 512;
    expect(await modelSha256(validateManifest(context))).not.toBe(base);
    expect(await modelSha256(validateManifest(goodManifest()))).toBe(base);
  });
});

describe('validateManifest bounds every field of an untrusted manifest (issue 12 §4)', () => {
  it('refuses head and layer counts that once hung the loader, at once', () => {
    const started = performance.now();
    expectError((m) => (m.architecture.n_heads = 1e6), 'manifest.json: architecture.n_heads must be an integer from 1 to 256, got 1000000');
    expectError((m) => (m.architecture.n_layers = 1e9), 'manifest.json: architecture.n_layers must be an integer from 1 to 256, got 1000000000');
    expect(performance.now() - started).toBeLessThan(100);
  });

  it('names each architecture field out of its range, NaN and Infinity included', () => {
    expectError((m) => (m.architecture.n_kv_heads = 512), 'manifest.json: architecture.n_kv_heads must be an integer from 1 to 256, got 512');
    expectError((m) => (m.architecture.head_dim = 4096), 'manifest.json: architecture.head_dim must be an integer from 1 to 1024, got 4096');
    expectError((m) => (m.architecture.hidden_size = -256), 'manifest.json: architecture.hidden_size must be an integer from 1 to 65536, got -256');
    expectError((m) => (m.architecture.intermediate_size = 1e7), 'manifest.json: architecture.intermediate_size must be an integer from 1 to 262144, got 10000000');
    expectError((m) => (m.architecture.vocab_size = 2 ** 31), 'manifest.json: architecture.vocab_size must be an integer from 1 to 1048576, got 2147483648');
    expectError((m) => (m.architecture.parameters = 1e15), 'manifest.json: architecture.parameters must be an integer from 0 to 1000000000000, got 1000000000000000');
    expectError((m) => (m.architecture.rms_norm_eps = Number.NaN), 'manifest.json: architecture.rms_norm_eps must be a number above 0 and below 1, got NaN');
    expectError((m) => (m.rope.theta = Number.POSITIVE_INFINITY), 'manifest.json: rope.theta must be a number above 0 and at most 1000000000, got Infinity');
    expectError((m) => (m.rope.dim = 1e6), 'manifest.json: rope.dim must be an integer from 2 to 1024, got 1000000');
    expectError((m) => (m.graph.opset = 1e9), 'manifest.json: graph.opset must be an integer from 1 to 1000, got 1000000000');
    expectError((m) => (m.tokenizer.bos_id = -1), 'manifest.json: tokenizer.bos_id must be an integer from 0 to 1048576, got -1');
  });

  it('bounds context_length, and the KV cache it implies before anything is allocated', () => {
    expectError((m) => (m.architecture.context_length = 1e6), 'manifest.json: architecture.context_length must be an integer from 1 to 32768, got 1000000');
    expectError(
      (m) => {
        Object.assign(m.architecture, { n_layers: 64, n_heads: 64, n_kv_heads: 64, head_dim: 256, context_length: 32768 });
        m.rope.dim = 256;
        m.graph.inputs = expectedGraphInputs(64);
        m.graph.outputs = expectedGraphOutputs(64);
      },
      'manifest.json: architecture.context_length (32768) needs 256 GiB of KV cache (n_layers 64 · 2 · n_kv_heads 64 · head_dim 256 · 32768 positions · 4 bytes), more than the 1 GiB kvscope allows',
    );
  });

  it('cuts long strings in messages and bounds names', () => {
    const long = 'x'.repeat(1_000_000);
    const manifest = goodManifest();
    manifest.name = long;
    const message = (() => {
      try {
        validateManifest(manifest);
      } catch (error) {
        return (error as Error).message;
      }
      return '';
    })();
    expect(message).toBe(`manifest.json: name must be a non-empty string of at most 256 characters, got "${'x'.repeat(80)}…"`);
    expectError((m) => (m.id = 'a/b'), 'manifest.json: id must be a model id (letters, digits, ".", "_", "-"; starting with a letter or digit; at most 128 characters), not a path, got "a/b"');
  });

  it('makes draft a model id, never a path', () => {
    for (const draft of ['../outside', '%2e%2e', 'sub/dir', '/abs', '..', 'C:\\draft', 'x?y']) {
      expectError(
        (m) => (m.draft = draft),
        `manifest.json: draft must be a model id (letters, digits, ".", "_", "-"; starting with a letter or digit; at most 128 characters), not a path, got ${JSON.stringify(draft)}`,
      );
    }
  });

  it('refuses every path that would leave the model directory, percent-escaped ones included', () => {
    const cases: [string, string][] = [
      ['%2e%2e/secret.json', 'it decodes to "../secret.json", which a browser resolves outside the directory'],
      ['a/%2E%2E/%2e%2e/x', 'it decodes to "a/../../x", which a browser resolves outside the directory'],
      ['tok%65nizer.json', 'it holds a percent-escape (a browser decodes it, a disk does not)'],
      ['bad%zz', 'it holds a malformed percent-escape'],
      ['dir\\..\\x', 'it holds a backslash'],
      ['https://evil.example/t.json', 'it holds a colon (a URL scheme or a drive letter)'],
      ['tokenizer.json?x=1', 'it holds a URL query or fragment ("?" or "#")'],
      ['tokenizer.json#frag', 'it holds a URL query or fragment ("?" or "#")'],
      ['tok\u0000enizer.json', 'it holds a control character'],
      ['./tokenizer.json', 'it holds a "." segment'],
      ['a//tokenizer.json', 'it holds an empty segment ("//" or a trailing "/")'],
    ];
    for (const [path, why] of cases) {
      expectError(
        (m) => (m.tokenizer.file = path),
        `manifest.json: tokenizer.file must be a plain relative path inside the model directory, got ${JSON.stringify(path)} (${why})`,
      );
    }
    expectError(
      (m) => (m.graph.parts[1] = '../model.onnx.part1'),
      'manifest.json: graph.parts[1] must be a plain relative path inside the model directory, got "../model.onnx.part1" (a ".." segment leaves the directory)',
    );
    expectError(
      (m) => (m.reference = '%2e%2e/reference.json'),
      'manifest.json: reference must be a plain relative path inside the model directory, got "%2e%2e/reference.json" (it decodes to "../reference.json", which a browser resolves outside the directory)',
    );
  });

  it('bounds the sizes files declare and the nesting of provenance', () => {
    expectError((m) => (m.files[0].bytes = 2 ** 31), 'manifest.json: graph.parts add up to 2.0 GiB; onnxruntime reads at most 2 GiB of graph');
    expectError((m) => (m.files[2].bytes = 100 * 1024 ** 2), 'manifest.json: tokenizer.file (tokenizer.json) is listed with 100 MiB; at most 64 MiB is read');
    expectError((m) => (m.files[0].bytes = 2 ** 53), 'manifest.json: files[0].bytes must be an integer from 0 to 4294967296, got 9007199254740992');
    let deep: Record<string, unknown> = {};
    for (let i = 0; i < 100_000; i++) deep = { inner: deep };
    expectError((m) => (m.provenance = deep), 'manifest.json: provenance must not nest deeper than 32 levels');
  });
});
