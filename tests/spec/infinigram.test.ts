/** The ∞-gram drafter (engine/spec/drafters/infinigram.ts) on a hand-made corpus, and on the shipped default index. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { validateManifest } from '../../engine/model/manifest.ts';
import { Xoshiro128 } from '../../engine/sampling.ts';
import type { EngineModel } from '../../engine/session.ts';
import type { DrafterEnv, DraftRequest } from '../../engine/spec/drafter.ts';
import { infinigramDrafter } from '../../engine/spec/drafters/infinigram.ts';
import { INDEX_MANIFEST_FORMAT, type IndexManifest } from '../../engine/spec/ngram/files.ts';
import { loadIndexFile } from '../../engine/spec/ngram/files-node.ts';
import { FmIndex } from '../../engine/spec/ngram/fm-index.ts';
import { parseIndex, serializeIndex } from '../../engine/spec/ngram/format.ts';
import { SuffixArrayIndex } from '../../engine/spec/ngram/suffix-array.ts';
import { buildCorpus } from '../../engine/spec/ngram/token-index.ts';
import { parseDraftSpec } from '../../engine/spec/spec.ts';
import { FIXTURE_DIR } from '../engine/helpers/fixture.ts';


const manifest = validateManifest(JSON.parse(await readFile(join(FIXTURE_DIR, 'manifest.json'), 'utf8')));
const target = { manifest, forward: {} as EngineModel['forward'], tokenizer: null } satisfies EngineModel;
const VOCAB = manifest.architecture.vocab_size;
const TOKENIZER_SHA = manifest.files.find((f) => f.path === manifest.tokenizer.file)!.sha256;

// after 10: 11 twice; after 10 11: 12 once, 14 once; 13 and 14 end their documents
const DOCUMENTS = [
  [1, 10, 11, 12, 13],
  [1, 10, 11, 14],
  [1, 20, 21],
];

function handMadeEnv(overrides: Partial<IndexManifest> = {}): DrafterEnv {
  const corpus = buildCorpus(DOCUMENTS, VOCAB);
  const files = new Map<string, Uint8Array>([
    ['suffix-array.bin', serializeIndex(SuffixArrayIndex.build(corpus, VOCAB))],
    ['fm-index.bin', serializeIndex(FmIndex.build(corpus, VOCAB, 4))],
  ]);
  const m: IndexManifest = {
    format: INDEX_MANIFEST_FORMAT,
    id: 'hand',
    source: 'test',
    documents: DOCUMENTS.length,
    tokens: corpus.length,
    corpus_bytes: corpus.byteLength,
    vocab_size: VOCAB,
    tokenizer_sha256: TOKENIZER_SHA,
    files: {
      'suffix-array': { path: 'suffix-array.bin', bytes: files.get('suffix-array.bin')!.length, sha256: '' },
      'fm-index': { path: 'fm-index.bin', bytes: files.get('fm-index.bin')!.length, sha256: '' },
    },
    ...overrides,
  };
  files.set('manifest.json', new TextEncoder().encode(JSON.stringify(m)));
  return {
    target,
    loadIndex: async (id, file) => {
      const bytes = id === 'hand' || id === '' ? files.get(file) : undefined;
      if (!bytes) throw new Error(`no ${id}/${file}`);
      return bytes;
    },
  };
}

async function drafter(spec: string, env: DrafterEnv = handMadeEnv()) {
  const parsed = parseDraftSpec(spec, [infinigramDrafter])!;
  return infinigramDrafter.create(parsed.params, env);
}

function request(tokens: number[], temperature = 0, seed = 1, maxTokens = 8): DraftRequest {
  return { tokens, maxTokens, sampler: { temperature, topK: 0, topP: 1, seed }, rng: new Xoshiro128(seed) };
}

describe('infinigram drafter', () => {
  it('parses and writes its spec canonically; refuses ids that are not one path segment', () => {
    expect(parseDraftSpec('infinigram', [infinigramDrafter])).toEqual({ id: 'infinigram', params: { gamma: 4, index: '', variant: 'suffix-array', min_count: 1, context: true } });
    expect(() => parseDraftSpec('infinigram:index=../x', [infinigramDrafter])).toThrow(/index must be an index id/);
    expect(() => parseDraftSpec('infinigram:variant=trie', [infinigramDrafter])).toThrow(/variant/);
  });

  it.each(['suffix-array', 'fm-index'])('%s: greedy drafts follow the longest match and stop where nothing continues', async (variant) => {
    const d = await drafter(`infinigram:index=hand,variant=${variant},gamma=8`);
    expect(d.spec).toBe(`infinigram:gamma=8,index=hand,variant=${variant},min_count=1,context=true`);
    const proposal = await d.propose(request([1, 5, 10]));
    // 10 → 11 (2 of 2); 10 11 → 12 or 14 (1 each: the smaller id); 11 12 → 13; 13 ends a document
    expect(proposal.tokens).toEqual([11, 12, 13]);
    expect(proposal.q).toEqual([null, null, null]);
    expect(proposal.confidence).toEqual([1, 0.5, 1]);
    expect((await d.propose(request([1, 5, 10], 0, 1, 2))).tokens).toEqual([11, 12]);
    expect((await d.propose(request([999, 3000])))).toEqual({ tokens: [], q: [], confidence: [] });
    const described = d.describe!();
    expect(described).toMatchObject({ index: 'hand', variant, corpus_tokens: 15, corpus_bytes: 30 });
    expect(Number(described.lookups)).toBe(7);
    expect(Number(described.mean_lookup_us)).toBeGreaterThan(0);
  });

  it('at temperature > 0 draws from q, a distribution over the whole vocabulary with mass on the draft', async () => {
    const d = await drafter('infinigram:index=hand,variant=fm-index');
    const seen = new Set<number>();
    for (let seed = 0; seed < 40; seed++) {
      const proposal = await d.propose(request([1, 10, 11], 0.8, seed));
      const [first] = proposal.tokens;
      const q = proposal.q[0]!;
      expect(q).toBeInstanceOf(Float64Array);
      expect(q.length).toBe(VOCAB);
      expect(q.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
      expect(q[12]).toBe(0.5);
      expect(q[14]).toBe(0.5);
      expect(q[first]).toBeGreaterThan(0);
      expect(proposal.confidence[0]).toBe(q[first]);
      seen.add(first);
      expect(await d.propose(request([1, 10, 11], 0.8, seed))).toEqual(proposal); // seeded
    }
    expect([...seen].sort()).toEqual([12, 14]);
  });

  it('context: the text so far is one more document, its counts added to the corpus\'s', async () => {
    // 100 200 300 400 is not in the corpus; the context repeats it
    const repeated = [1, 100, 200, 300, 400, 100, 200];
    expect((await (await drafter('infinigram:index=hand,context=true')).propose(request(repeated))).tokens).toEqual([300, 400, 100, 200]);
    expect((await (await drafter('infinigram:index=hand,context=false')).propose(request(repeated))).tokens).toEqual([]);
    // the suffix 10 is in the corpus (→ 11, twice) and in the context (→ 77, once): the counts add up
    const both = await (await drafter('infinigram:index=hand,context=true,gamma=1')).propose(request([10, 77, 3000, 10], 0.8, 3));
    expect([...both.q[0]!.entries()].filter(([, p]) => p > 0)).toEqual([[11, 2 / 3], [77, 1 / 3]]);
  });

  it('min_count: a suffix needs that many continuations', async () => {
    const d = await drafter('infinigram:index=hand,min_count=2');
    expect((await d.propose(request([1, 10]))).tokens).toEqual([11, 12]); // 10 11 has 2 continuations, 11 12 only 1
  });

  it('refuses an index of another tokenizer, a missing variant, a host without indexes', async () => {
    await expect(drafter('infinigram:index=hand', handMadeEnv({ tokenizer_sha256: 'ab'.repeat(32) }))).rejects.toThrow(/built with another tokenizer/);
    await expect(drafter('infinigram:index=hand,variant=fm-index', handMadeEnv({ files: {} }))).rejects.toThrow(/has no fm-index file/);
    await expect(drafter('infinigram:index=hand', { target })).rejects.toThrow(/no token index can be loaded here/);
  });

  it.each(['suffix-array', 'fm-index'])('the shipped default index (%s) loads and continues text it holds', async (variant) => {
    const d = await drafter(`infinigram:variant=${variant}`, { target, loadIndex: loadIndexFile });
    const described = d.describe!();
    expect(described.index).toBe('heldout-even');
    const sa = parseIndex(await loadIndexFile('', 'suffix-array.bin')) as SuffixArrayIndex;
    const context = Array.from(sa.corpus.subarray(200, 240));
    const proposal = await d.propose(request(context));
    expect(proposal.tokens.length).toBeGreaterThan(0);
    expect(proposal.tokens[0]).toBe(sa.corpus[240]);
    expect(Number(described.index_file_bytes)).toBeLessThanOrEqual(16 * 1024 * 1024);
  });
});
