/** Phenomena building blocks without a graph: needle prompts, retrieval scores, acceptance simulation, sink sums. */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { acceptanceFlags, expectedAcceptedLength, simulateGreedyVerification } from '../../engine/metrics/acceptance.ts';
import { encodeBare, fillerSentences, heldoutWindows } from '../../engine/metrics/heldout.ts';
import {
  PASSKEY_INTRO,
  PASSKEY_QUESTION,
  buildNeedlePrompt,
  passkeyNeedle,
  retrievalHits,
  summarizeRetrievalHeads,
  trialDepth,
  type RetrievalObservation,
} from '../../engine/metrics/needle.ts';
import { addSinkMass } from '../../engine/metrics/sinks.ts';
import { validateManifest } from '../../engine/model/manifest.ts';
import { KvTokenizer } from '../../engine/model/tokenizer.ts';
import type { HeadEntries, LayerAttention } from '../../engine/trace/schema.ts';
import { FIXTURE_DIR } from '../engine/helpers/fixture.ts';

async function fixtureTokenizer(): Promise<KvTokenizer> {
  const manifest = validateManifest(JSON.parse(await readFile(`${FIXTURE_DIR}/manifest.json`, 'utf8')));
  return new KvTokenizer(JSON.parse(await readFile(`${FIXTURE_DIR}/tokenizer.json`, 'utf8')), manifest.tokenizer);
}

/** Digit-free filler of varied length (hermetic: no dependence on the held-out file). */
const SENTENCES = Array.from({ length: 40 }, (_, i) => {
  const words = ['river', 'lantern', 'orchard', 'harbor', 'meadow', 'copper', 'violet', 'thunder', 'garden', 'pebble'];
  const n = 4 + (i % 9);
  return `The ${Array.from({ length: n }, (_, k) => words[(i * 3 + k * 7) % words.length]).join(' ')} waited by the road.`;
});

describe('fillerSentences (as training/prepare_corpus.py sentences_of)', () => {
  it('splits after . ! ? and keeps digit-free sentences of 20–200 characters', () => {
    const doc = 'Too short. This sentence is long enough to keep! It has 3 digits in it, so it goes away.\nA line break is just a space here? ' + 'x'.repeat(201) + '. Done and dusted, friends.';
    expect(fillerSentences([doc])).toEqual(['This sentence is long enough to keep!', 'A line break is just a space here?', 'Done and dusted, friends.']);
    expect(fillerSentences(['Arabic digit ٣ counts as a digit too, like Python.'])).toEqual([]);
  });
});

describe('buildNeedlePrompt', () => {
  it('uses the training wording exactly and finds both mentions of the key', async () => {
    const tokenizer = await fixtureTokenizer();
    const prompt = buildNeedlePrompt(tokenizer, SENTENCES, { targetTokens: 300, depth: 0.5, seed: 3 });
    expect(prompt.key).toMatch(/^[1-9]\d{4}$/);
    expect(prompt.text.startsWith(PASSKEY_INTRO)).toBe(true);
    expect(prompt.text.endsWith(PASSKEY_QUESTION)).toBe(true);
    expect(prompt.text).toContain(`\n${passkeyNeedle(prompt.key)}`);
    expect(passkeyNeedle('12345')).toBe('The pass key is 12345. Remember it. 12345 is the pass key.\n');
    expect(prompt.ids).toEqual(tokenizer.encode(prompt.text));
    expect(prompt.keyTokenIndices).toHaveLength(2 * prompt.keyTokens.length);
    const mention = (k: number) => tokenizer.decode(prompt.keyTokenIndices.slice(k * prompt.keyTokens.length, (k + 1) * prompt.keyTokens.length).map((i) => prompt.ids[i]));
    expect(mention(0)).toBe(prompt.key);
    expect(mention(1)).toBe(prompt.key);
    expect(tokenizer.decode(prompt.ids.slice(prompt.needleStart, prompt.needleStart + 4))).toBe('The pass key is');
  });

  it('places the needle at the requested depth', async () => {
    const tokenizer = await fixtureTokenizer();
    const first = buildNeedlePrompt(tokenizer, SENTENCES, { targetTokens: 400, depth: 0, seed: 5 });
    expect(first.text.startsWith(PASSKEY_INTRO + passkeyNeedle(first.key))).toBe(true);
    expect(first.actualDepth).toBe(0);
    const last = buildNeedlePrompt(tokenizer, SENTENCES, { targetTokens: 400, depth: 1, seed: 5 });
    expect(last.text.endsWith(`\n${passkeyNeedle(last.key)}${PASSKEY_QUESTION}`)).toBe(true);
    expect(last.actualDepth).toBeGreaterThan(0.97);
    const longest = Math.max(...SENTENCES.map((s) => encodeBare(tokenizer, ` ${s}`).length));
    const fixed = tokenizer.encode(PASSKEY_INTRO + passkeyNeedle('12345') + PASSKEY_QUESTION).length;
    for (const depth of [0.25, 0.5, 0.75]) {
      for (const seed of [11, 12]) {
        const prompt = buildNeedlePrompt(tokenizer, SENTENCES, { targetTokens: 400, depth, seed });
        // the nearest sentence boundary: within half of the longest sentence (+ a token or two)
        const slack = (longest / 2 + 2) / (prompt.ids.length - fixed);
        expect(Math.abs(prompt.actualDepth - depth)).toBeLessThan(slack);
        const before = prompt.text.slice(PASSKEY_INTRO.length, prompt.text.indexOf(passkeyNeedle(prompt.key)));
        expect(before.endsWith('.\n')).toBe(true); // right after a whole sentence
      }
    }
  });

  it('stays within the token target (and within one sentence of it)', async () => {
    const tokenizer = await fixtureTokenizer();
    const longest = Math.max(...SENTENCES.map((s) => encodeBare(tokenizer, ` ${s}`).length));
    for (const [target, seed] of [
      [120, 1],
      [300, 2],
      [1000, 3],
    ]) {
      const prompt = buildNeedlePrompt(tokenizer, SENTENCES, { targetTokens: target, depth: trialDepth(seed, 4), seed });
      expect(prompt.ids.length).toBeLessThanOrEqual(target);
      expect(prompt.ids.length).toBeGreaterThanOrEqual(target - longest - 2);
    }
    expect(() => buildNeedlePrompt(tokenizer, SENTENCES, { targetTokens: 20, depth: 0.5, seed: 1 })).toThrow(/needs at least \d+ tokens, target is 20/);
  });

  it('is deterministic per seed; another seed gives another key and filler', async () => {
    const tokenizer = await fixtureTokenizer();
    const a = buildNeedlePrompt(tokenizer, SENTENCES, { targetTokens: 250, depth: 0.3, seed: 42 });
    const b = buildNeedlePrompt(tokenizer, SENTENCES, { targetTokens: 250, depth: 0.3, seed: 42 });
    const c = buildNeedlePrompt(tokenizer, SENTENCES, { targetTokens: 250, depth: 0.3, seed: 43 });
    expect(b).toEqual(a);
    expect(c.key).not.toBe(a.key);
    expect(c.text).not.toBe(a.text);
    expect(buildNeedlePrompt(tokenizer, SENTENCES, { targetTokens: 250, depth: 0.3, seed: 1, key: 10000 }).key).toBe('10000');
  });

  it('spreads trial depths over [0, 1] with both ends', () => {
    expect([0, 1, 2, 3, 4].map((i) => trialDepth(i, 5))).toEqual([0, 0.25, 0.5, 0.75, 1]);
  });
});

describe('heldoutWindows', () => {
  it('gives windows of exactly the requested length that start with BOS, deterministic per seed', async () => {
    const tokenizer = await fixtureTokenizer();
    const docs = SENTENCES.map((s, i) => `${s} ${SENTENCES[(i + 1) % SENTENCES.length]}`);
    const a = heldoutWindows(tokenizer, docs, { windows: 3, tokens: 100, seed: 9 });
    expect(a.map((w) => w.length)).toEqual([100, 100, 100]);
    expect(a.every((w) => w[0] === tokenizer.bosId && !w.slice(1).includes(tokenizer.bosId))).toBe(true);
    expect(heldoutWindows(tokenizer, docs, { windows: 3, tokens: 100, seed: 9 })).toEqual(a);
  });
});

// ---------------------------------------------------------------------------------------------

/** One layer of hand-made attention: 2 KV heads holding tokens 0..n-1, 4 query heads with given argmax entries. */
function layer(n: number, argmaxOf: number[]): LayerAttention {
  const entries: HeadEntries[] = [0, 1].map(() => ({
    tokens: Int32Array.from({ length: n }, (_, i) => i),
    positions: Int32Array.from({ length: n }, (_, i) => i),
    counts: null,
    origins: null,
  }));
  const weights = argmaxOf.map((j) => {
    const w = new Float32Array(n).fill(0.5 / n);
    w[j] += 0.5;
    return w;
  });
  return { entries, weights };
}

describe('retrieval-head score', () => {
  // sequence: filler 7,8,9, key digits at 3..4 (tokens 51, 52), filler, key again at 6..7
  const sequence = [1, 7, 9, 51, 52, 9, 51, 52, 8];
  const keyIdx = [3, 4, 6, 7];

  it('scores a head when its top-1 entry is a key token equal to the generated token', () => {
    const observations: RetrievalObservation[] = [
      // generating 51: head 0 looks at token 3 (51) ✓, head 1 at token 4 (52) ✗ token differs,
      // head 2 at token 1 (outside the key) ✗, head 3 at token 6 (51, second mention) ✓
      { token: 51, attention: [layer(9, [3, 4, 1, 6]), layer(9, [8, 8, 8, 3])] },
      // generating 52: head 0 at 4 ✓, head 1 at 7 ✓, head 2 at 2 ✗, head 3 at 3 ✗ (51 ≠ 52)
      { token: 52, attention: [layer(9, [4, 7, 2, 3]), layer(9, [0, 0, 0, 7])] },
    ];
    const hits = retrievalHits(observations, sequence, keyIdx, 4);
    expect(Array.from(hits)).toEqual([2, 1, 0, 1, 0, 0, 0, 2]);
    // per trial: hits / |answer tokens| (2 here); averaged over trials
    const trialA = hits.map((h) => h / 2);
    const trialB = new Float64Array(8).fill(0);
    const summary = summarizeRetrievalHeads([trialA, trialB], 2, 4, 0.1);
    expect(summary.trials).toBe(2);
    expect(summary.scores[0]).toEqual([0.5, 0.25, 0, 0.25]);
    expect(summary.scores[1]).toEqual([0, 0, 0, 0.5]);
    expect(summary.heads).toEqual([
      { layer: 0, head: 0, score: 0.5 },
      { layer: 1, head: 3, score: 0.5 },
      { layer: 0, head: 1, score: 0.25 },
      { layer: 0, head: 3, score: 0.25 },
    ]);
  });

  it('maps query heads to their KV head and merged entries to their origins', () => {
    const base = layer(5, [0, 0, 0, 0]);
    // KV head 1 has a merged entry 2 standing for tokens 2..3; query heads 2 and 3 read KV head 1
    base.entries[1] = {
      tokens: Int32Array.from([0, 1, 2, 4]),
      positions: Int32Array.from([0, 1, 2, 4]),
      counts: Int32Array.from([1, 1, 2, 1]),
      origins: [null, null, [2, 3], null],
    };
    base.weights[2] = Float32Array.from([0.1, 0.1, 0.7, 0.1]);
    base.weights[3] = Float32Array.from([0.1, 0.1, 0.1, 0.7]);
    const hits = retrievalHits([{ token: 60, attention: [base] }], [1, 5, 5, 60, 5], [3], 4);
    expect(Array.from(hits)).toEqual([0, 0, 1, 0]);
  });
});

describe('greedy verification simulation', () => {
  const T = true;
  const F = false;

  it('accepts runs of agreeing draft tokens, at most γ per block, plus one target token', () => {
    const stats = simulateGreedyVerification([[T, T, F, T, T, T, T, T, F, F]], 4);
    // blocks: [T T F] → 3 tokens; [T T T T] + bonus → 5; [F] → 1; [F] → 1
    expect(stats).toMatchObject({ blocks: 4, tokens: 10, accepted: 6, proposed: 16, tailDropped: 0 });
    expect(stats.meanAcceptedLength).toBe(2.5);
    expect(stats.targetCallsPerToken).toBe(0.4);
  });

  it('handles all-accepted, all-rejected and an undecided tail', () => {
    expect(simulateGreedyVerification([Array(10).fill(T)], 4)).toMatchObject({ blocks: 2, tokens: 10, meanAcceptedLength: 5, tailDropped: 0 });
    expect(simulateGreedyVerification([Array(6).fill(F)], 4)).toMatchObject({ blocks: 6, tokens: 6, meanAcceptedLength: 1 });
    // [T T T] at the end: fewer than γ flags and no rejection seen → not counted
    expect(simulateGreedyVerification([[F, T, T, T]], 4)).toMatchObject({ blocks: 1, tokens: 1, tailDropped: 3 });
    // several sequences pool their blocks
    const pooled = simulateGreedyVerification([[T, F], [T, T, T, T, F]], 4);
    expect(pooled).toMatchObject({ blocks: 2, tokens: 7, meanAcceptedLength: 3.5, tailDropped: 0 });
    expect(() => simulateGreedyVerification([[T]], 0)).toThrow(/gamma/);
  });

  it('acceptance flags compare draft argmax with target tokens; the i.i.d. formula', () => {
    expect(acceptanceFlags([5, 6, 7], [5, 0, 7])).toEqual([T, F, T]);
    expect(() => acceptanceFlags([1], [1, 2])).toThrow(/as many/);
    expect(expectedAcceptedLength(0.5, 4)).toBeCloseTo(1.9375, 12);
    expect(expectedAcceptedLength(0, 4)).toBe(1);
    expect(expectedAcceptedLength(1, 4)).toBe(5);
  });
});

describe('attention-sink sums', () => {
  it('adds the attention on token 0 of rows at positions ≥ the minimum', () => {
    // H = 2, q = 3 new rows, 2 cache slots: rows are [slot0, slot1, new0, new1, new2]
    const attn = Float32Array.from([
      // head 0
      0.5, 0.1, 0.4, 0, 0, 0.6, 0.1, 0.1, 0.2, 0, 0.7, 0.1, 0.1, 0.05, 0.05,
      // head 1
      0.2, 0.3, 0.5, 0, 0, 0.1, 0.2, 0.3, 0.4, 0, 0.3, 0.3, 0.2, 0.1, 0.1,
    ]);
    const sums = new Float64Array(2);
    const rows = addSinkMass(attn, 2, 3, 2, 2, 3, sums); // positions 2, 3, 4; count ≥ 3
    expect(rows).toBe(2);
    expect(sums[0]).toBeCloseTo(0.6 + 0.7, 6);
    expect(sums[1]).toBeCloseTo(0.1 + 0.3, 6);
  });
});
