/**
 * Fuzzing loadModel with mutated manifests and tokenizers of the tiny fixture (issue 12 §4).
 *
 * Every mutation below makes the folder invalid by construction (huge, negative, fractional,
 * NaN/Infinity or mistyped numbers, hostile paths and draft ids, dropped required fields,
 * corrupted vocabularies, merges and added tokens, truncated files, stale sha256s), so each case
 * must end, within a second, in exactly one ModelError whose message names the file and, for a
 * manifest field, the field. Mutations stay clear of the graph itself: the graph cross-check needs
 * an onnxruntime session per case (~0.5 s), so untrusted-load.test.ts covers it with targeted cases.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ModelError } from '../../engine/errors.ts';
import { loadModel } from '../../engine/model/load.ts';
import { fixtureFiles, memorySource, mutatedFolder, type Json, type Mutation } from './untrusted-folder.ts';

const RUNS = 1000;
const fixture = await fixtureFiles();
const VOCAB_TOKENS = Object.keys(fixture.tokenizer.model.vocab as Record<string, number>);
const MERGES = (fixture.tokenizer.model.merges as unknown[]).length;
const ADDED = (fixture.tokenizer.added_tokens as unknown[]).length;
const FILES: string[] = fixture.manifest.files.map((f: { path: string }) => f.path);

/** A mutation and what its message must start with. */
interface Case {
  label: string;
  mutation: Mutation;
  /** the message starts with this (a file name, or "manifest.json: <field>") */
  prefix: string | string[];
}

// --- values ---------------------------------------------------------------------------------
/** A raw JSON token written in place of a value (JSON.stringify cannot write NaN or 1e999). */
const RAW = '__raw__';
const raw = (token: string) => `${RAW}${token}${RAW}`;
const writeRaw = (text: string) => text.replace(new RegExp(`"${RAW}(.*?)${RAW}"`, 'g'), '$1');

const badInteger = fc.constantFrom<unknown>(1e15, 2 ** 53, 1e300, -1, -1e9, 0.5, 1.5, -0.5, '8', '', [], {}, true, raw('1e999'), raw('-1e999'), raw('NaN'), raw('Infinity'));
const badPositive = fc.constantFrom<unknown>(-1, 0, -1e-5, 1e300, '1e-5', true, [], {}, raw('1e999'), raw('NaN'), raw('-Infinity'));
const badBoolean = fc.constantFrom<unknown>('true', 1, 0, null, [], {}, 'yes');
const badText = fc.constantFrom<unknown>('', 5, null, [], {}, true, 'x'.repeat(300), 'y'.repeat(100_000));
const hostilePath = fc.constantFrom(
  '../tokenizer.json', '../../etc/passwd', '/etc/passwd', '%2e%2e/tokenizer.json', '%2E%2E%2Fx', 'a/%2e%2e/%2e%2e/x', '.%2e/x', 'tok%65nizer.json', '%zz',
  'C:\\Windows\\win.ini', 'a\\..\\b', 'https://evil.example/t.json', 'file:///etc/passwd', 'tokenizer.json?x', 'tokenizer.json#x', 'tok\u0000.json', 'x\n',
  '', '.', '..', './tokenizer.json', 'a//b', 'dir/', 'z'.repeat(2000),
);
const hostileId = fc.constantFrom('../kvscope-draft-2l', '..', '.', '/abs', 'a/b', '%2e%2e', 'a\\b', 'http://x', '-x', '', 'x'.repeat(200), 'draft?x');

function setAt(root: Json, path: (string | number)[], value: unknown): void {
  let node: Json = root;
  for (const key of path.slice(0, -1)) node = node[key];
  node[path.at(-1)!] = value;
}
function deleteAt(root: Json, path: (string | number)[]): void {
  let node: Json = root;
  for (const key of path.slice(0, -1)) node = node[key];
  delete node[path.at(-1)!];
}
const dotted = (path: (string | number)[]) => path.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? k : `.${k}`)).join('');

/** The manifest's value at `path` replaced; the message names that field. */
function manifestValue(paths: (string | number)[][], values: fc.Arbitrary<unknown>): fc.Arbitrary<Case> {
  return fc.tuple(fc.constantFrom(...paths), values).map(([path, value]) => {
    const field = dotted(path);
    const isRawNonJson = typeof value === 'string' && /^__raw__(NaN|Infinity|-Infinity)__raw__$/.test(value);
    return {
      label: `manifest ${field} = ${String(value).slice(0, 40)}`,
      mutation: { manifest: (m) => setAt(m, path, value), manifestText: writeRaw },
      prefix: isRawNonJson ? 'manifest.json: not valid JSON' : `manifest.json: ${field}`,
    };
  });
}

const fileIndex = (path: string) => FILES.indexOf(path);
const INTEGER_FIELDS: (string | number)[][] = [
  ...['n_layers', 'n_heads', 'n_kv_heads', 'head_dim', 'hidden_size', 'intermediate_size', 'vocab_size', 'context_length', 'parameters', 'macs_per_token'].map((k) => ['architecture', k]),
  ['rope', 'dim'], ['graph', 'opset'], ['tokenizer', 'bos_id'], ['tokenizer', 'eos_id'], ['tokenizer', 'pad_id'], ['format_version'],
  ...FILES.map((_, i) => ['files', i, 'bytes']),
];
const REQUIRED_FIELDS: (string | number)[][] = [
  ['format'], ['format_version'], ['id'], ['name'], ['role'], ['architecture'], ['rope'], ['tokenizer'], ['graph'], ['files'],
  ...['family', 'n_layers', 'n_heads', 'n_kv_heads', 'head_dim', 'hidden_size', 'intermediate_size', 'vocab_size', 'context_length', 'rms_norm_eps', 'tie_word_embeddings'].map((k) => ['architecture', k]),
  ['rope', 'theta'], ['rope', 'dim'], ['rope', 'style'], ['tokenizer', 'file'], ['tokenizer', 'bos_id'], ['tokenizer', 'eos_id'], ['tokenizer', 'add_bos'],
  ['graph', 'parts'], ['graph', 'opset'], ['graph', 'inputs'], ['graph', 'outputs'],
  ...FILES.flatMap((_, i) => ['path', 'sha256', 'bytes'].map((k) => ['files', i, k])),
];

const manifestCases: fc.Arbitrary<Case>[] = [
  manifestValue(INTEGER_FIELDS, badInteger),
  manifestValue([['architecture', 'rms_norm_eps'], ['rope', 'theta']], badPositive),
  manifestValue([['architecture', 'tie_word_embeddings'], ['tokenizer', 'add_bos']], badBoolean),
  manifestValue([['id'], ['name'], ['architecture', 'family'], ['tokenizer', 'file']], badText),
  manifestValue([['format'], ['role'], ['rope', 'style']], fc.constantFrom<unknown>('onnx', 'Target', '', 5, null, 'interleaved')),
  manifestValue([['architecture'], ['rope'], ['tokenizer'], ['graph'], ['files'], ['provenance'], ['rope', 'scaling']], fc.constantFrom<unknown>(5, 'x', [], true)),
  manifestValue([['tokenizer', 'file'], ['graph', 'parts', 0], ['reference'], ...FILES.map((_, i) => ['files', i, 'path'])], hostilePath),
  manifestValue([['draft']], hostileId),
  manifestValue([['graph', 'parts'], ['graph', 'inputs'], ['graph', 'outputs']], fc.constantFrom<unknown>([], 'model.onnx', [5], [''], {})),
  fc.constantFrom(...REQUIRED_FIELDS).map((path) => ({
    label: `manifest drops ${dotted(path)}`,
    mutation: { manifest: (m: Json) => deleteAt(m, path) },
    prefix: `manifest.json: ${dotted(path)} is missing`,
  })),
  // graph I/O lists that contradict the contract: one name dropped, doubled, renamed or moved
  fc.tuple(fc.constantFrom('inputs', 'outputs'), fc.constantFrom('drop', 'double', 'rename', 'swap'), fc.nat(7)).map(([list, how, at]) => ({
    label: `manifest graph.${list} ${how} ${at}`,
    mutation: {
      manifest: (m: Json) => {
        const names: string[] = m.graph[list];
        const i = at % names.length;
        if (how === 'drop') names.splice(i, 1);
        if (how === 'double') names.splice(i, 0, names[i]);
        if (how === 'rename') names[i] = `${names[i]}_x`;
        if (how === 'swap') [names[i], names[(i + 1) % names.length]] = [names[(i + 1) % names.length], names[i]];
      },
    },
    prefix: `manifest.json: graph.${list} `,
  })),
  // the graph part or the tokenizer not listed in files (reference.json may go unlisted)
  fc.constantFrom('model.onnx', 'tokenizer.json').map((path) => ({
    label: `manifest files omits ${path}`,
    mutation: { manifest: (m: Json) => (m.files = m.files.filter((f: { path: string }) => f.path !== path)) },
    prefix: `manifest.json: files must list ${path}`,
  })),
  // a stale or wrong sha256 / byte count: the file's own check names it
  fc.tuple(fc.constantFrom(...FILES), fc.constantFrom('sha', 'bytes+1', 'bytes-1')).map(([path, how]) => ({
    label: `manifest files ${path} ${how}`,
    mutation: {
      manifest: (m: Json) => {
        const entry = m.files[fileIndex(path)];
        if (how === 'sha') entry.sha256 = (entry.sha256[0] === '0' ? '1' : '0') + entry.sha256.slice(1);
        else entry.bytes += how === 'bytes+1' ? 1 : -1;
      },
    },
    prefix: [`${path}: sha256 mismatch`, `${path}: size mismatch`],
  })),
  // manifest.json that is not a manifest object at all
  fc.oneof(
    fc.nat(2600).map((at) => ({ label: `manifest truncated at ${at}`, mutation: { manifestText: (t: string) => t.slice(0, Math.max(1, at % t.length)) }, prefix: 'manifest.json: not valid JSON' })),
    fc.constantFrom('null', '[]', '"manifest"', '42', '').map((text) => ({ label: `manifest is ${text || 'empty'}`, mutation: { manifestText: () => text }, prefix: 'manifest.json: ' })),
  ),
];

// --- tokenizer.json ------------------------------------------------------------------------------
const tokenizerCase = (label: string, edit: (t: Json) => void): Case => ({ label: `tokenizer ${label}`, mutation: { tokenizer: edit }, prefix: 'tokenizer.json: ' });

const tokenizerCases: fc.Arbitrary<Case>[] = [
  fc.constantFrom<unknown>({}, [], 'abc', 5, null, [['a', 'b']]).map((vocab) => tokenizerCase(`vocab = ${JSON.stringify(vocab)}`, (t) => (t.model.vocab = vocab))),
  fc.tuple(fc.nat(VOCAB_TOKENS.length - 1), fc.constantFrom<unknown>(-1, 0.5, '3', 4096, 1e9, 2 ** 53, null, [], true)).map(([i, id]) =>
    tokenizerCase(`vocab[${VOCAB_TOKENS[i]}] = ${JSON.stringify(id)}`, (t) => (t.model.vocab[VOCAB_TOKENS[i]] = id)),
  ),
  fc.tuple(fc.nat(VOCAB_TOKENS.length - 1), fc.nat(VOCAB_TOKENS.length - 2)).map(([i, j]) => {
    const other = VOCAB_TOKENS[(i + 1 + j) % VOCAB_TOKENS.length];
    return tokenizerCase(`vocab[${VOCAB_TOKENS[i]}] takes the id of ${other}`, (t) => (t.model.vocab[VOCAB_TOKENS[i]] = t.model.vocab[other]));
  }),
  fc.constantFrom<unknown>('x', 5, {}, true).map((merges) => tokenizerCase(`merges = ${JSON.stringify(merges)}`, (t) => (t.model.merges = merges))),
  fc.tuple(fc.nat(MERGES - 1), fc.constantFrom<unknown>(5, 'a', 'a b c', ['a'], ['', 'b'], ['a', 'b', 'c'], null, {}, [1, 2])).map(([i, merge]) =>
    tokenizerCase(`merges[${i}] = ${JSON.stringify(merge)}`, (t) => (t.model.merges[i] = merge)),
  ),
  fc.constantFrom<unknown>('x', 5, {}, true).map((added) => tokenizerCase(`added_tokens = ${JSON.stringify(added)}`, (t) => (t.added_tokens = added))),
  fc.tuple(fc.nat(ADDED - 1), fc.constantFrom('id', 'content', 'entry', 'rename'), fc.constantFrom<unknown>(5000, -1, '1', 1.5, null, '', 5, [])).map(([i, what, value]) =>
    tokenizerCase(`added_tokens[${i}].${what} = ${JSON.stringify(value)}`, (t) => {
      if (what === 'id') t.added_tokens[i].id = typeof value === 'number' && value === 5 ? 4096 : value;
      if (what === 'content') t.added_tokens[i].content = typeof value === 'string' ? '' : value;
      if (what === 'entry') t.added_tokens[i] = typeof value === 'number' || value === null ? value : 'token';
      if (what === 'rename') t.added_tokens[i].id = 3 + i; // a vocab token's id ("!" …)
    }),
  ),
  fc.constantFrom<[string, (t: Json) => void]>(
    ['no model', (t) => delete t.model],
    ['model = 5', (t) => (t.model = 5)],
    ['model = []', (t) => (t.model = [])],
    ['model.type = Magic', (t) => (t.model.type = 'Magic')],
    ['model.type = 5', (t) => (t.model.type = 5)],
    ['model.type = Unigram', (t) => (t.model.type = 'Unigram')],
    ['model.type = WordPiece', (t) => (t.model.type = 'WordPiece')],
    ['decoder = null', (t) => (t.decoder = null)],
    ['decoder = Nope', (t) => (t.decoder = { type: 'Nope' })],
    ['pre_tokenizer = Nope', (t) => (t.pre_tokenizer = { type: 'Nope' })],
    ['pre_tokenizer = null', (t) => (t.pre_tokenizer = null)],
    ['normalizer replaces e', (t) => (t.normalizer = { type: 'Replace', pattern: { String: 'e' }, content: 'x' })],
    ['normalizer type 5', (t) => (t.normalizer = { type: 5 })],
    ['post_processor = Nope', (t) => (t.post_processor = { type: 'Nope' })],
    ['no bos token', (t) => {
      delete t.model.vocab['<|bos|>'];
      t.added_tokens = t.added_tokens.filter((a: Json) => a.id !== 1);
    }],
    ['only special tokens', (t) => {
      t.model.vocab = { '<|pad|>': 0, '<|bos|>': 1, '<|eos|>': 2 };
      t.model.merges = [];
    }],
  ).map(([label, edit]) => tokenizerCase(label, edit)),
  // nesting deeper than tokenizers.js can recurse (written as text: JSON.stringify would overflow too)
  fc.constantFrom(20_000, 200_000).map((depth) => ({
    label: `tokenizer pre_tokenizer nested ${depth} deep`,
    mutation: {
      tokenizer: (t: Json) => (t.pre_tokenizer = '__deep__'),
      tokenizerBytes: (b: Uint8Array) => {
        const deep = `${'{"type":"Sequence","pretokenizers":['.repeat(depth)}{"type":"ByteLevel"}${']}'.repeat(depth)}`;
        return new TextEncoder().encode(new TextDecoder().decode(b).replace('"__deep__"', deep));
      },
    },
    prefix: 'tokenizer.json: ',
  })),
  // tokenizer.json that is not JSON, rehashed (its own check fails) or not (the sha256 check fails)
  fc.tuple(fc.nat(300_000), fc.boolean()).map(([at, rehash]) => ({
    label: `tokenizer truncated at ${at}${rehash ? '' : ' (stale sha256)'}`,
    // at least the last two bytes go ("}\n"), so what is left never closes the object
    mutation: { tokenizerBytes: (b: Uint8Array) => b.subarray(0, Math.max(1, at % (b.length - 2))), rehash },
    prefix: rehash ? 'tokenizer.json: not valid JSON' : 'tokenizer.json: size mismatch',
  })),
  fc.constantFrom<unknown>([], 'tokenizer', null, 5, { model: null }).map((whole) => ({
    label: `tokenizer is ${JSON.stringify(whole)}`,
    mutation: { tokenizerBytes: () => new TextEncoder().encode(JSON.stringify(whole)) },
    prefix: 'tokenizer.json: not a Hugging Face tokenizer.json',
  })),
];

// a corrupted tokenizer that the manifest still lists with the old sha256: caught before parsing
const staleTokenizer = fc.constantFrom<Case>({
  label: 'tokenizer vocab emptied, sha256 not updated',
  mutation: { tokenizer: (t) => (t.model.vocab = {}), rehash: false },
  prefix: 'tokenizer.json: size mismatch',
});

// two mutations at once: only "one ModelError" is promised, not which field wins
const combined = fc.tuple(fc.oneof(...manifestCases), fc.oneof(...tokenizerCases)).map(([a, b]) => ({
  label: `${a.label} + ${b.label}`,
  mutation: {
    tokenizer: b.mutation.tokenizer,
    tokenizerBytes: b.mutation.tokenizerBytes,
    rehash: b.mutation.rehash,
    manifest: a.mutation.manifest,
    manifestText: a.mutation.manifestText,
  },
  prefix: ['manifest.json: ', 'tokenizer.json: ', 'model.onnx: ', 'reference.json: '],
}));

const anyCase = fc.oneof(
  { arbitrary: fc.oneof(...manifestCases), weight: 6 },
  { arbitrary: fc.oneof(...tokenizerCases), weight: 4 },
  { arbitrary: staleTokenizer, weight: 1 },
  { arbitrary: combined, weight: 2 },
);

describe('loadModel under fuzzed manifests and tokenizers', () => {
  it(`ends every one of ${RUNS} mutated folders in one clean ModelError within a second`, async () => {
    let cases = 0;
    let slowest = { ms: 0, label: '' };
    const started = performance.now();
    await fc.assert(
      fc.asyncProperty(anyCase, async ({ label, mutation, prefix }) => {
        const source = memorySource(await mutatedFolder(mutation));
        const t0 = performance.now();
        let outcome: unknown = null;
        try {
          const model = await loadModel(source, { numThreads: 1 });
          await model.release();
        } catch (error) {
          outcome = error;
        }
        const ms = performance.now() - t0;
        cases++;
        if (ms > slowest.ms) slowest = { ms, label };
        expect(outcome, `${label}: loaded, but the folder is invalid`).toBeInstanceOf(ModelError);
        const message = (outcome as ModelError).message;
        expect(message, label).toMatch(/^[^\n]{1,2000}$/);
        const prefixes = Array.isArray(prefix) ? prefix : [prefix];
        expect(prefixes.some((p) => message.startsWith(p)), `${label}: "${message.slice(0, 300)}" should start with ${prefixes.join(' or ')}`).toBe(true);
        expect(ms, `${label} took ${ms.toFixed(0)} ms`).toBeLessThan(1000);
      }),
      { numRuns: RUNS, seed: 12_04, endOnFailure: true },
    );
    const seconds = (performance.now() - started) / 1000;
    console.log(`fuzz: ${cases} cases in ${seconds.toFixed(1)} s; slowest ${slowest.ms.toFixed(0)} ms (${slowest.label})`);
    expect(cases).toBe(RUNS);
  }, 120_000);
});
