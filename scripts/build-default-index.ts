/**
 * Rebuilds the shipped default token index, byte for byte: static/indexes/<id>/ and
 * static/indexes/index.json. The corpus is the index half of static/data/heldout.json
 * (engine/spec/ngram/heldout-split.ts: per source, documents at even positions): text the models
 * never trained on, and none of the documents the benchmark evaluates n-gram drafters on.
 *
 *   npx tsx scripts/build-default-index.ts [--check]
 *
 * --check writes nothing and fails when the committed files differ from a fresh build.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildIndexFiles, loadModelTokenizer, writeIndexFiles } from '../engine/cli/index-build.ts';
import { PACKAGE_ROOT, resolveModelDir } from '../engine/cli/models.ts';
import { INDEX_LIST_FILE, type IndexList } from '../engine/spec/ngram/files.ts';
import { heldoutDocuments, splitHeldout } from '../engine/spec/ngram/heldout-split.ts';

const ID = 'heldout-even';
const INDEXES = join(PACKAGE_ROOT, 'static', 'indexes');

const check = process.argv.includes('--check');
const heldout = heldoutDocuments(JSON.parse(await readFile(join(PACKAGE_ROOT, 'static', 'data', 'heldout.json'), 'utf8')));
const { index: documents } = splitHeldout(heldout);
const model = await loadModelTokenizer(resolveModelDir(undefined));
const built = await buildIndexFiles({
  id: ID,
  source: `static/data/heldout.json, documents at even positions of each source (engine/spec/ngram/heldout-split.ts): ${[...new Set(documents.map((d) => d.src))].join(', ')}`,
  documents: documents.map((d) => d.text),
  model,
  variants: ['suffix-array', 'fm-index'],
});
const list: IndexList = { default: ID, indexes: [{ id: ID, description: 'held-out text the models never trained on (index half of the held-out split)', tokens: built.manifest.tokens }] };
const files = new Map<string, Uint8Array>([...built.files].map(([name, bytes]) => [join(ID, name), bytes]));
files.set(INDEX_LIST_FILE, new TextEncoder().encode(`${JSON.stringify(list, null, 2)}\n`));

if (check) {
  const stale: string[] = [];
  for (const [name, bytes] of files) {
    const committed = await readFile(join(INDEXES, name)).catch(() => null);
    if (!committed || !Buffer.from(bytes).equals(committed)) stale.push(name);
  }
  if (stale.length) {
    console.error(`static/indexes differs from a fresh build: ${stale.join(', ')} (run npx tsx scripts/build-default-index.ts)`);
    process.exit(1);
  }
  console.log(`static/indexes/${ID} is up to date`);
} else {
  await writeIndexFiles(join(INDEXES, ID), built);
  await writeFile(join(INDEXES, INDEX_LIST_FILE), files.get(INDEX_LIST_FILE)!);
  const { manifest } = built;
  console.log(`${ID}: ${manifest.documents} documents, ${manifest.tokens} tokens, corpus ${manifest.corpus_bytes} bytes; tokenized in ${built.tokenizeMs.toFixed(0)} ms`);
  for (const [variant, file] of Object.entries(manifest.files)) {
    console.log(`  ${variant}: ${file.bytes} bytes on disk, ${built.indexBytes[variant as keyof typeof built.indexBytes]} in memory, built in ${built.buildMs[variant as keyof typeof built.buildMs]?.toFixed(1)} ms`);
  }
}
