/**
 * `kvscope index build`: ∞-gram token indexes over a text file for the `infinigram` drafter
 * (docs/cli.md). The text is tokenized with the target model's tokenizer (only tokenizer.json is
 * read, checked against the model's manifest) and indexed as a suffix array and/or an FM-index
 * (engine/spec/ngram/); DIR gets one file per variant and manifest.json. Nothing time-dependent
 * goes into the files, so the same input gives the same bytes (scripts/build-default-index.ts).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, extname, join, resolve } from 'node:path';
import { KvscopeError } from '../errors.ts';
import { loadTokenizer } from '../model/load.ts';
import { directorySource } from '../model/load-node.ts';
import { sha256Hex } from '../model/sha256.ts';
import type { KvTokenizer } from '../model/tokenizer.ts';
import { FmIndex, DEFAULT_SAMPLE_RATE } from '../spec/ngram/fm-index.ts';
import { INDEX_MANIFEST_FILE, INDEX_MANIFEST_FORMAT, isIndexId, VARIANT_FILES, type IndexManifest } from '../spec/ngram/files.ts';
import { serializeIndex } from '../spec/ngram/format.ts';
import { SuffixArrayIndex } from '../spec/ngram/suffix-array.ts';
import { buildCorpus, type IndexVariant, type TokenIndex } from '../spec/ngram/token-index.ts';
import { integerOption, noExtraPositionals, parse, requireFileName, UsageError } from './args.ts';
import { formatBytes, formatCount } from './format.ts';
import type { CliIO } from './io.ts';
import { displayPath, resolveModelDir } from './models.ts';

const INDEX_HELP = `Usage: kvscope index build --input FILE --out DIR [options]

Builds ∞-gram token indexes over FILE for the infinigram drafter (--draft infinigram:index=ID):
a suffix array (corpus + array: fastest lookups) and an FM-index (compact, no corpus kept).
FILE is tokenized with the model's tokenizer. A .json file {"documents": [{"text": …}]} (as
static/data/heldout.json) or a .jsonl file ({"text": …} per line) gives one document per
entry; any other file is one document. Matches never span two documents.

Options:
  --input FILE       text to index (UTF-8)
  --out DIR          directory to write: manifest.json, suffix-array.bin, fm-index.bin
                     (created if missing; the drafter finds static/indexes/<id>/)
  --model DIR        model directory or id from static/models/index.json whose tokenizer
                     is used (default: the index's default model)
  --variant V        both (default), suffix-array or fm-index
  --id ID            index id in manifest.json (default: the name of --out)
  --sample-rate N    FM-index suffix-array sample, every N positions (default ${DEFAULT_SAMPLE_RATE})
  -h, --help         this help

Each file is at most 16 MiB: a suffix array takes 6 bytes per token (about 2.8 M tokens).
`;

const VARIANT_CHOICES = ['both', 'suffix-array', 'fm-index'] as const;

export interface TokenizerOfModel {
  tokenizer: KvTokenizer;
  modelId: string;
  vocabSize: number;
  tokenizerSha256: string;
}

/** The tokenizer of a model directory, without loading its graph. */
export async function loadModelTokenizer(modelDir: string): Promise<TokenizerOfModel> {
  const { manifest, tokenizer, sha256 } = await loadTokenizer(directorySource(modelDir));
  return { tokenizer, modelId: manifest.id, vocabSize: manifest.architecture.vocab_size, tokenizerSha256: sha256 };
}

export interface IndexBuildInput {
  id: string;
  /** what the corpus is, for manifest.json */
  source: string;
  documents: readonly string[];
  model: TokenizerOfModel;
  variants: readonly IndexVariant[];
  sampleRate?: number;
}

export interface BuiltIndexFiles {
  manifest: IndexManifest;
  /** file name → bytes, manifest.json included */
  files: Map<string, Uint8Array>;
  tokenizeMs: number;
  buildMs: Partial<Record<IndexVariant, number>>;
  indexBytes: Partial<Record<IndexVariant, number>>;
}

/** Tokenizes the documents and builds the index files (deterministic: no times in the files). */
export async function buildIndexFiles(input: IndexBuildInput): Promise<BuiltIndexFiles> {
  const { model } = input;
  let started = globalThis.performance.now();
  const corpus = buildCorpus(input.documents.map((text) => model.tokenizer.encode(text)), model.vocabSize);
  const tokenizeMs = globalThis.performance.now() - started;
  const files = new Map<string, Uint8Array>();
  const buildMs: BuiltIndexFiles['buildMs'] = {};
  const indexBytes: BuiltIndexFiles['indexBytes'] = {};
  const entries: IndexManifest['files'] = {};
  for (const variant of input.variants) {
    started = globalThis.performance.now();
    const index: TokenIndex = variant === 'suffix-array' ? SuffixArrayIndex.build(corpus, model.vocabSize) : FmIndex.build(corpus, model.vocabSize, input.sampleRate);
    const bytes = serializeIndex(index);
    buildMs[variant] = globalThis.performance.now() - started;
    indexBytes[variant] = index.bytes;
    files.set(VARIANT_FILES[variant], bytes);
    entries[variant] = { path: VARIANT_FILES[variant], bytes: bytes.length, sha256: await sha256Hex(bytes) };
  }
  const manifest: IndexManifest = {
    format: INDEX_MANIFEST_FORMAT,
    id: input.id,
    source: input.source,
    documents: input.documents.length,
    tokens: corpus.length,
    corpus_bytes: corpus.byteLength,
    vocab_size: model.vocabSize,
    tokenizer_sha256: model.tokenizerSha256,
    files: entries,
  };
  files.set(INDEX_MANIFEST_FILE, new TextEncoder().encode(`${JSON.stringify(manifest, null, 2)}\n`));
  return { manifest, files, tokenizeMs, buildMs, indexBytes };
}

export async function writeIndexFiles(dir: string, built: BuiltIndexFiles): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
    for (const [name, bytes] of built.files) await writeFile(join(dir, name), bytes);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way' : (error as Error).message;
    throw new KvscopeError(`cannot write --out ${displayPath(dir)}: ${why}`);
  }
}

/** The documents of --input: entries of a .json / .jsonl file, else the whole text. */
function documentsOf(file: string, text: string): string[] {
  const ext = extname(file).toLowerCase();
  const textOf = (value: unknown, where: string): string => {
    const t = typeof value === 'object' && value !== null ? (value as { text?: unknown }).text : undefined;
    if (typeof t !== 'string') throw new KvscopeError(`${file}: ${where} has no string "text"`);
    return t;
  };
  let docs: string[];
  if (ext === '.json') {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new KvscopeError(`${file}: not valid JSON (${(error as Error).message})`);
    }
    const list = typeof json === 'object' && json !== null ? (json as { documents?: unknown }).documents : undefined;
    if (!Array.isArray(list)) throw new KvscopeError(`${file}: expected {"documents": [{"text": …}]}`);
    docs = list.map((d, i) => textOf(d, `document ${i}`));
  } else if (ext === '.jsonl') {
    docs = text.split('\n').flatMap((line, i) => {
      if (line.trim() === '') return [];
      try {
        return [textOf(JSON.parse(line), `line ${i + 1}`)];
      } catch (error) {
        if (error instanceof KvscopeError) throw error;
        throw new KvscopeError(`${file}: line ${i + 1} is not valid JSON`);
      }
    });
  } else {
    docs = [text];
  }
  return docs.filter((d) => d.trim() !== '');
}

const seconds = (ms: number | undefined) => `${((ms ?? 0) / 1000).toFixed(2)} s`;

async function build(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse('index', args, {
    input: { type: 'string' },
    out: { type: 'string' },
    model: { type: 'string' },
    variant: { type: 'string' },
    id: { type: 'string' },
    'sample-rate': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout(INDEX_HELP);
    return 0;
  }
  noExtraPositionals('index', positionals, 0, '--input notes.txt');
  if (values.input === undefined) throw new UsageError('missing --input FILE (the text to index)');
  if (values.out === undefined) throw new UsageError('missing --out DIR (where the index files go)');
  requireFileName('input', values.input);
  requireFileName('out', values.out);
  const variant = values.variant ?? 'both';
  if (!(VARIANT_CHOICES as readonly string[]).includes(variant)) throw new UsageError(`--variant must be ${VARIANT_CHOICES.join(', ')}; got ${JSON.stringify(variant)}`);
  const variants: IndexVariant[] = variant === 'both' ? ['suffix-array', 'fm-index'] : [variant as IndexVariant];
  const sampleRate = integerOption('sample-rate', values['sample-rate'], DEFAULT_SAMPLE_RATE, 1, 1 << 20);
  const out = resolve(values.out);
  const id = values.id ?? basename(out);
  if (!isIndexId(id)) throw new UsageError(`--id ${JSON.stringify(id)} is not an index id (letters, digits, ".", "_", "-"; no slashes)${values.id === undefined ? ': the name of --out is used by default, pass --id' : ''}`);

  let text: string;
  try {
    text = await readFile(values.input, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new KvscopeError(`cannot read --input ${values.input}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : (error as Error).message}`);
  }
  const documents = documentsOf(values.input, text);
  if (documents.length === 0) throw new UsageError(`empty input: ${values.input} has no text to index`);

  const model = await loadModelTokenizer(resolveModelDir(values.model));
  const built = await buildIndexFiles({ id, source: `${basename(values.input)} (${documents.length} document${documents.length === 1 ? '' : 's'})`, documents, model, variants, sampleRate });
  await writeIndexFiles(out, built);

  const { manifest } = built;
  const lines = [
    `index ${id} · ${formatCount(manifest.tokens)} tokens from ${formatCount(documents.length)} document${documents.length === 1 ? '' : 's'} · corpus ${formatBytes(manifest.corpus_bytes)} (${manifest.corpus_bytes} bytes) · tokenized with ${model.modelId} in ${seconds(built.tokenizeMs)}`,
    ...variants.map((v) => {
      const file = manifest.files[v]!;
      const ratio = (file.bytes / manifest.corpus_bytes).toFixed(2);
      return `  ${v.padEnd(12)}  ${file.path.padEnd(16)}  ${formatBytes(file.bytes)} (${file.bytes} bytes, ${ratio}× corpus; ${built.indexBytes[v]} bytes in memory) · built in ${seconds(built.buildMs[v])}`;
    }),
    `→ ${displayPath(join(out, INDEX_MANIFEST_FILE))}`,
  ];
  io.stdout(`${lines.join('\n')}\n`);
  return 0;
}

/** `kvscope index <subcommand>`: only `build` so far. */
export async function indexCommand(args: string[], io: CliIO): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    (sub === undefined ? io.stderr : io.stdout)(INDEX_HELP);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'build') throw new UsageError(`unknown subcommand ${JSON.stringify(sub)} (subcommands: build; see kvscope index --help)`);
  return build(rest, io);
}
