/** ∞-gram indexes (engine/spec/ngram/): suffix array and FM-index against brute force, the file format, the held-out split, index loading. */
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Xoshiro128 } from '../../engine/sampling.ts';
import { FmIndex } from '../../engine/spec/ngram/fm-index.ts';
import { indexLoader } from '../../engine/spec/ngram/files.ts';
import { nodeIndexLoader } from '../../engine/spec/ngram/files-node.ts';
import { decodeIndexFile, encodeIndexFile, IndexFormatError, MAX_INDEX_FILE_BYTES, parseIndex, serializeIndex } from '../../engine/spec/ngram/format.ts';
import { splitHeldout } from '../../engine/spec/ngram/heldout-split.ts';
import { buildSuffixArray, SuffixArrayIndex } from '../../engine/spec/ngram/suffix-array.ts';
import { buildCorpus, infiniGram, type TokenCorpus, type TokenIndex } from '../../engine/spec/ngram/token-index.ts';

/** Seeded documents over a small vocabulary, so that patterns repeat. */
function randomDocuments(seed: number, vocab: number, docs = 6, maxLength = 60): number[][] {
  const rng = new Xoshiro128(seed);
  return Array.from({ length: 1 + (rng.nextUint32() % docs) }, () => Array.from({ length: rng.nextUint32() % maxLength }, () => rng.nextUint32() % vocab));
}

function occurrences(corpus: TokenCorpus, pattern: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i + pattern.length <= corpus.length; i++) if (pattern.every((t, j) => corpus[i + j] === t)) out.push(i);
  return out;
}

/** Next tokens after every occurrence (the separator = vocab ends a document: not a continuation). */
function bruteNext(corpus: TokenCorpus, pattern: readonly number[], vocab: number): Map<number, number> {
  const next = new Map<number, number>();
  for (const i of occurrences(corpus, pattern)) {
    const t = corpus[i + pattern.length];
    if (t !== undefined && t !== vocab) next.set(t, (next.get(t) ?? 0) + 1);
  }
  return next;
}

function asMap(index: TokenIndex, pattern: number[]): Map<number, number> {
  const { tokens, counts } = index.nextTokens(pattern);
  return new Map(tokens.map((t, i) => [t, counts[i]]));
}

function patternsOf(corpus: TokenCorpus, vocab: number, rng: Xoshiro128): number[][] {
  const patterns: number[][] = [];
  for (let k = 0; k < 30; k++) {
    const length = 1 + (rng.nextUint32() % 5);
    const start = rng.nextUint32() % corpus.length;
    patterns.push(Array.from(corpus.subarray(start, start + length)).filter((t) => t !== vocab));
    patterns.push(Array.from({ length }, () => rng.nextUint32() % vocab));
  }
  return patterns.filter((p) => p.length > 0);
}

describe('suffix array', () => {
  it('sorts every suffix (prefix doubling vs a comparison sort)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 1, max: 5 }), (seed, vocab) => {
        const corpus = buildCorpus(randomDocuments(seed, vocab), vocab);
        const text = Array.from(corpus);
        const expected = text.map((_, i) => i).sort((a, b) => {
          for (let k = 0; ; k++) {
            if (a + k >= text.length) return -1;
            if (b + k >= text.length) return 1;
            if (text[a + k] !== text[b + k]) return text[a + k] - text[b + k];
          }
        });
        expect(Array.from(buildSuffixArray(corpus, vocab + 1))).toEqual(expected);
      }),
      { seed: 7, numRuns: 60 },
    );
  });

  it('builds a suffix array of a million repetitive tokens in seconds', () => {
    const corpus = buildCorpus([Array.from({ length: 1_000_000 }, (_, i) => (i * 7) % 1000 === 3 ? 5 : i % 97)], 4096);
    const started = performance.now();
    const sa = buildSuffixArray(corpus, 4097);
    expect(performance.now() - started).toBeLessThan(15_000);
    for (let r = 1; r < 2000; r++) expect(corpus[sa[r - 1]]).toBeLessThanOrEqual(corpus[sa[r]]);
  });
});

describe.each([
  ['suffix-array', (c: TokenCorpus, v: number) => SuffixArrayIndex.build(c, v)],
  ['fm-index', (c: TokenCorpus, v: number) => FmIndex.build(c, v, 4)],
] as const)('%s index vs brute force', (_, build) => {
  it('counts, continuation counts, next tokens and positions equal brute force on random corpora', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 1, max: 6 }), (seed, vocab) => {
        const corpus = buildCorpus(randomDocuments(seed, vocab), vocab);
        const index = build(corpus, vocab);
        for (const pattern of patternsOf(corpus, vocab, new Xoshiro128(seed ^ 0x9e3779b9))) {
          const found = occurrences(corpus, pattern);
          const next = bruteNext(corpus, pattern, vocab);
          expect(index.count(pattern)).toBe(found.length);
          expect(index.continuationCount(pattern)).toBe([...next.values()].reduce((a, b) => a + b, 0));
          expect(asMap(index, pattern)).toEqual(next);
          expect(index.locate(pattern, found.length + 1)).toEqual(found);
        }
        expect(index.count([vocab + 7])).toBe(0);
      }),
      { seed: 11, numRuns: 60 },
    );
  });

  it('∞-gram: the longest suffix with a continuation, and its next-token counts', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 1, max: 2 }), (seed, minCount) => {
        const vocab = 4;
        const corpus = buildCorpus(randomDocuments(seed, vocab), vocab);
        const index = build(corpus, vocab);
        const rng = new Xoshiro128(seed);
        const context = Array.from({ length: 1 + (rng.nextUint32() % 12) }, () => rng.nextUint32() % vocab);
        let expected = 0;
        for (let m = 1; m <= context.length; m++) {
          const next = bruteNext(corpus, context.slice(context.length - m), vocab);
          if ([...next.values()].reduce((a, b) => a + b, 0) >= minCount) expected = m;
        }
        const match = infiniGram(index, context, { minCount });
        expect(match?.suffixLength ?? 0).toBe(expected);
        if (match) expect(asMap(index, context.slice(context.length - expected))).toEqual(bruteNext(corpus, context.slice(context.length - expected), vocab));
      }),
      { seed: 13, numRuns: 80 },
    );
  });
});

describe('FM-index', () => {
  it('is more compact than corpus + suffix array and agrees with it on a larger corpus', () => {
    const corpus = buildCorpus(randomDocuments(3, 3000, 40, 5000), 4096);
    const sa = SuffixArrayIndex.build(corpus, 4096);
    const fm = FmIndex.build(corpus, 4096);
    expect(fm.bytes).toBeLessThan(sa.bytes / 2);
    expect(serializeIndex(fm).length).toBeLessThan(corpus.byteLength + sa.suffixArray.byteLength);
    for (const pattern of patternsOf(corpus, 4096, new Xoshiro128(5))) {
      expect(fm.count(pattern)).toBe(sa.count(pattern));
      expect(fm.nextTokens(pattern)).toEqual(sa.nextTokens(pattern));
    }
  });
});

describe('index files', () => {
  const corpus = buildCorpus(randomDocuments(21, 5, 8, 200), 5);
  const indexes = [SuffixArrayIndex.build(corpus, 5), FmIndex.build(corpus, 5, 8)];

  it.each(indexes.map((i) => [i.variant, i] as const))('%s: parse(serialize) answers the same, and serializes to the same bytes', (_, index) => {
    const bytes = serializeIndex(index);
    const parsed = parseIndex(bytes, 'x.bin');
    expect(parsed.variant).toBe(index.variant);
    expect(parsed.tokenCount).toBe(corpus.length);
    expect(serializeIndex(parsed)).toEqual(bytes);
    for (const pattern of patternsOf(corpus, 5, new Xoshiro128(1))) {
      expect(parsed.nextTokens(pattern)).toEqual(index.nextTokens(pattern));
      expect(parsed.locate(pattern, 100)).toEqual(index.locate(pattern, 100));
    }
  });

  it('names each problem: truncated, wrong magic, future version, checksum mismatch, missing section, too large', () => {
    const bytes = serializeIndex(indexes[0]);
    const fails = (b: Uint8Array, message: RegExp) => expect(() => parseIndex(b, 'sa.bin')).toThrow(message);
    fails(bytes.slice(0, 20), /^sa\.bin: truncated: 20 bytes/);
    fails(bytes.slice(0, bytes.length - 9), /^sa\.bin: truncated: section "sa" ends/);
    const magic = bytes.slice();
    magic[0] = 0x58;
    fails(magic, /wrong magic "XVSNGRAM"/);
    const future = bytes.slice();
    new DataView(future.buffer).setUint32(8, 9, true);
    fails(future, /format version 9 is newer than this kvscope reads \(1\)/);
    const corrupt = bytes.slice();
    corrupt[corrupt.length - 1] ^= 0xff;
    fails(corrupt, /checksum mismatch/);
    const contents = decodeIndexFile(bytes);
    contents.sections.delete('sa');
    fails(encodeIndexFile(contents), /section "sa" is missing/);
    expect(() => parseIndex(bytes, 'sa.bin')).not.toThrow();
    try {
      parseIndex(magic, 'sa.bin');
    } catch (error) {
      expect(error).toBeInstanceOf(IndexFormatError);
    }
    expect(() => encodeIndexFile({ variant: 'suffix-array', vocabSize: 5, tokenCount: 1, sections: new Map([['sa', new Uint8Array(MAX_INDEX_FILE_BYTES)]]) })).toThrow(/over the 16777216-byte limit/);
  });
});

describe('held-out split', () => {
  it('puts even positions of each source in the index and odd ones in the evaluation, deterministically', () => {
    const docs = ['a', 'b', 'a', 'a', 'b', 'c'].map((src, i) => ({ src, text: `${src}${i}` }));
    const split = splitHeldout(docs);
    expect(split.index.map((d) => d.text)).toEqual(['a0', 'b1', 'a3', 'c5']);
    expect(split.evaluation.map((d) => d.text)).toEqual(['a2', 'b4']);
    expect(splitHeldout(docs)).toEqual(split);
  });
});

describe('index loading', () => {
  it('Node: resolves "" through index.json, reads <id>/<file>, refuses path traversal', async () => {
    const root = await mkdtemp(join(tmpdir(), 'kvscope-indexes-'));
    await mkdir(join(root, 'mine'));
    await writeFile(join(root, 'mine', 'manifest.json'), '{"x":1}');
    await writeFile(join(root, 'index.json'), JSON.stringify({ default: 'mine', indexes: [{ id: 'mine' }] }));
    const load = nodeIndexLoader(root);
    expect(new TextDecoder().decode(await load('', 'manifest.json'))).toBe('{"x":1}');
    expect(new TextDecoder().decode(await load('mine', 'manifest.json'))).toBe('{"x":1}');
    await expect(load('..', 'manifest.json')).rejects.toThrow(/not an index id/);
    await expect(load('mine', '../index.json')).rejects.toThrow(/not an index file name/);
    await expect(load('other', 'manifest.json')).rejects.toThrow(/token index "other": no such file/);
  });

  it('browser: fetches base/<id>/<file>, "" through base/index.json', async () => {
    const urls: string[] = [];
    const load = indexLoader(async (url) => {
      urls.push(url);
      return new TextEncoder().encode(url.endsWith('index.json') ? '{"default": "d", "indexes": []}' : 'bytes');
    }, '/indexes/');
    await load('', 'fm-index.bin');
    await load('x', 'manifest.json');
    await expect(load('a/b', 'manifest.json')).rejects.toThrow(/not an index id/);
    expect(urls).toEqual(['/indexes/index.json', '/indexes/d/fm-index.bin', '/indexes/x/manifest.json']);
  });
});
