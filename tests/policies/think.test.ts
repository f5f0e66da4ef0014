/** ThinK: exact channel scores and pruned sets by hand, byte accounting, decoding, attach, and tiny-model runs. */
import { describe, expect, it } from 'vitest';
import type { Decision } from '../../engine/cache/decision.ts';
import type { KVCacheStore } from '../../engine/cache/store.ts';
import { parsePolicySpec } from '../../engine/policies/spec.ts';
import { channelSaliency, lowestChannels, meanSquares, thinkGroupId } from '../../engine/policies/think.ts';
import { indexRange, type PrefillObservation, type StepObservation } from '../../engine/policies/types.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { DIMS, integrationRun, policyFor } from './helpers/policy.ts';
import { appendRows, storeOf as storeWithRows } from './helpers/store.ts';

const d = DIMS.headDim; // 4; 4 query heads, 2 KV heads (group 2), 2 layers

/**
 * KV head 0: every key ±1 in every channel (mean k² = 1); KV head 1: keys [1, 1, 0.5, 2] (mean k² =
 * [1, 1, 0.25, 4]). Values: token + 0.5. The same in both layers.
 */
const keyOf = (h: number, i: number) => (h === 0 ? [1, -1, 1, -1].map((x) => (i % 2 ? x : -x)) : [1, 1, 0.5, 2]);
const valueOf = (i: number) => new Array(d).fill(i + 0.5);

const storeOf = (n: number) => storeWithRows(DIMS, n, (_, h, t) => keyOf(h, t), (_, __, t) => valueOf(t));
const appendToken = (store: KVCacheStore) => appendRows(store, 1, (_, h, t) => keyOf(h, t), (_, __, t) => valueOf(t));

/**
 * Window queries [H, 3 rows, d], the same in both layers: row 0 is huge (outside a window of 2);
 * over rows 1–2, q² means are qh0 [4, 2.5, 5, 5], qh1 [0, 2.5, 5, 5], qh2 = qh3 [1, 1, 1, 1].
 */
const ROWS = [
  [[99, 99, 99, 99], [2, 1, 1, 3], [2, 2, 3, 1]],
  [[99, 99, 99, 99], [0, 2, 3, 1], [0, 1, 1, 3]],
  [[99, 99, 99, 99], [1, 1, 1, 1], [1, -1, 1, -1]],
  [[99, 99, 99, 99], [1, 1, 1, 1], [-1, 1, 1, 1]],
];
function prefillWith(n: number): PrefillObservation {
  const windowQueries = Array.from({ length: DIMS.nLayers }, () => Float32Array.from(ROWS.flat(2)));
  return { firstToken: 0, tokenCount: n, attentionSums: null, windowAttention: null, windowQueries, windowRows: 3 };
}
const stepWith = (queries: number[]): StepObservation => ({
  step: 0,
  tokenIndex: 0,
  position: 0,
  attention: null,
  queries: Array.from({ length: DIMS.nLayers }, () => Float32Array.from(queries)),
});

const reencodes = (decision: Decision, l: number, h: number) => decision.layers?.[l]?.[h]?.reencode ?? [];
const row = (store: KVCacheStore, l: number, h: number, i: number) => Array.from(store.keys(l, h).subarray(i * d, (i + 1) * d));

describe('think policy', () => {
  it('parses its spec with the reference defaults', () => {
    expect(parsePolicySpec('think').params).toEqual({ ratio: 0.4, window: 32, recent: 32, block: 32, gqa: 'mean', decode: 'keep' });
    const policy = policyFor('think:window=8');
    expect(policy.needs).toMatchObject({ queries: true, prefillWindow: 8 });
    expect(policy.withoutHistory).toMatch(/gathers the next 8 decode queries/);
  });

  it('scores channels by mean q² over the last W queries times mean k² over the keys', () => {
    expect(Array.from(meanSquares([1, 2, 3, -1, 0, 1], 0, 2, 3))).toEqual([1, 2, 5]);
    const kMean = Float64Array.from([1, 1, 0.25, 4]);
    const q = [Float64Array.from([4, 2.5, 5, 5]), Float64Array.from([0, 2.5, 5, 5])];
    expect(Array.from(channelSaliency(q, kMean, 'mean'))).toEqual([2, 2.5, 1.25, 20]);
    expect(Array.from(channelSaliency(q, kMean, 'max'))).toEqual([4, 2.5, 1.25, 20]);
    expect(lowestChannels([2, 2.5, 1.25, 20], 2)).toEqual([0, 2]);
    expect(lowestChannels([1, 1, 1, 1], 3)).toEqual([0, 1, 2]); // ties: the lower channel
  });

  it('prunes the ⌊ratio·d⌋ lowest channels per head (GQA mean vs max), saliency and sets as head measures', () => {
    const mean = policyFor('think:ratio=0.25,window=2,recent=2').afterPrefill(storeOf(6), prefillWith(6));
    // KV head 0 (k² = 1): mean [2, 2.5, 5, 5] → channel 0; KV head 1: [1, 1, 0.25, 4] → channel 2
    expect(mean.headMeasures!.channel_saliency[0]).toEqual([[2, 2.5, 5, 5], [1, 1, 0.25, 4]]);
    expect(mean.headMeasures!.pruned_channels).toEqual([[[0], [2]], [[0], [2]]]);
    const max = policyFor('think:ratio=0.25,window=2,recent=2,gqa=max').afterPrefill(storeOf(6), prefillWith(6));
    expect(max.headMeasures!.channel_saliency[1][0]).toEqual([4, 2.5, 5, 5]);
    expect(max.headMeasures!.pruned_channels[1]).toEqual([[1], [2]]);
    // a window of 3 takes the huge first row in: head 0's mean becomes ≈ [3268.3, 3268.7, 3270.3, 3270.3]
    const wide = policyFor('think:ratio=0.5,window=3,recent=2').afterPrefill(storeOf(6), prefillWith(6));
    expect(wide.headMeasures!.pruned_channels[0]).toEqual([[0, 1], [0, 2]]);
  });

  it('zeroes the pruned channels of all but the newest `recent` keys; values untouched; exact bytes', () => {
    const store = storeOf(6);
    const before = store.memory();
    const valuesBefore = Array.from(store.values(0, 1));
    const decision = policyFor('think:ratio=0.5,window=2,recent=2').afterPrefill(store, prefillWith(6));
    // head 0: mean [2, 2.5, 5, 5] → channels 0, 1; head 1: [1, 1, 0.25, 4] → 2, then 0 (tie with 1)
    expect(reencodes(decision, 0, 1).map((r) => r.index)).toEqual([0, 1, 2, 3]);
    expect(reencodes(decision, 0, 1)[0].codec).toMatchObject({ name: 'think', kElements: 2, vElements: 4, kPruned: [0, 2], group: thinkGroupId('think.', 0, 1) });
    expect(reencodes(decision, 0, 1)[0].kError).toBeCloseTo(Math.sqrt(1.25 / 6.25), 6);
    expect(decision.measures!.pruned_fraction).toEqual([(2 * 4 * 2) / (2 * 6 * 4), (2 * 4 * 2) / (2 * 6 * 4)]);
    store.apply(decision);
    expect(row(store, 0, 0, 0)).toEqual([0, 0, -1, 1]);
    expect(row(store, 1, 1, 3)).toEqual([0, 1, 0, 2]);
    expect(row(store, 0, 1, 4)).toEqual([1, 1, 0.5, 2]); // recent: whole
    expect(row(store, 0, 0, 5)).toEqual([1, -1, 1, -1]);
    expect(store.codec(0, 0, 4)).toBeNull();
    expect(Array.from(store.values(0, 1))).toEqual(valuesBefore);
    expect(Array.from(store.exact(0, 0, 0)!.keys)).toEqual([-1, 1, -1, 1]);
    const after = store.memory();
    // 4 heads × 4 pruned keys × 2 channels × 4 bytes fewer, plus one 4-bit mask (1 byte) per head
    expect(after.kBytes).toBe(before.kBytes - 4 * 4 * 2 * 4 + 4);
    expect(after.groupBytes).toBe(4);
    expect(after.vBytes).toBe(before.vBytes);
    expect(after.heldEntries).toBe(before.heldEntries);
  });

  it('pruning 0 channels is the identity (saliency still reported)', () => {
    const store = storeOf(6);
    const keys = Array.from(store.keys(1, 0));
    const before = store.memory();
    const decision = policyFor('think:ratio=0.2,window=2,recent=2').afterPrefill(store, prefillWith(6));
    expect(decision.layers).toBeNull();
    expect(decision.groups).toBeUndefined();
    expect(decision.headMeasures!.pruned_channels).toEqual([[[], []], [[], []]]);
    store.apply(decision);
    expect(Array.from(store.keys(1, 0))).toEqual(keys);
    expect(store.memory()).toEqual(before);
  });

  it('decoding: keep appends whole keys (the reference); prune, block 1: the key leaving the window', () => {
    for (const mode of ['keep', 'prune']) {
      const store = storeOf(6);
      const policy = policyFor(`think:ratio=0.5,window=2,recent=2,block=1,decode=${mode}`);
      store.apply(policy.afterPrefill(store, prefillWith(6)));
      const afterPrefill = store.memory();
      appendToken(store);
      const step = policy.afterStep(store, stepWith(new Array(16).fill(1)));
      if (mode === 'keep') {
        expect(step.layers).toBeNull();
        continue;
      }
      expect(reencodes(step, 0, 0).map((r) => r.index)).toEqual([4]);
      expect(reencodes(step, 1, 1).map((r) => r.index)).toEqual([4]);
      expect(step.headMeasures).toBeUndefined();
      store.apply(step);
      expect(row(store, 0, 0, 4)).toEqual([0, 0, -1, 1]);
      expect(store.codec(0, 0, 5)).toBeNull();
      // one more fp32 entry per head, one more pruned: the group is charged once
      expect(store.memory().kBytes).toBe(afterPrefill.kBytes + 4 * (d * 4) - 4 * 2 * 4);
    }
  });

  it('decode=prune in blocks: waits until `block` keys have left the window, then prunes them', () => {
    const store = storeOf(6);
    const policy = policyFor('think:ratio=0.5,window=2,recent=2,block=2,decode=prune');
    store.apply(policy.afterPrefill(store, prefillWith(6)));
    appendToken(store);
    const first = policy.afterStep(store, stepWith(new Array(16).fill(1)));
    expect(first.layers).toBeNull();
    store.apply(first);
    appendToken(store);
    const second = policy.afterStep(store, stepWith(new Array(16).fill(1)));
    expect(reencodes(second, 1, 0).map((r) => r.index)).toEqual([4, 5]);
    store.apply(second);
    expect(store.codec(1, 0, 6)).toBeNull();
  });

  it('a later member: entries under another codec are left as they are', () => {
    const store = storeOf(6);
    const other = { name: 'other', kBits: 8, vBits: 8, kElements: d, vElements: d, kMetaBytes: 0, vMetaBytes: 0 };
    store.apply({ layers: [[{ keep: indexRange(0, 6), reencode: [{ index: 1, codec: other }] }, null], null] });
    const decision = policyFor('think:ratio=0.5,window=2,recent=2').afterPrefill(store, prefillWith(6));
    expect(reencodes(decision, 0, 0).map((r) => r.index)).toEqual([0, 2, 3]);
  });

  it('attached without a prefill window: gathers W decode queries, then prunes once', () => {
    const store = storeOf(6);
    const policy = policyFor('think:ratio=0.25,window=2,recent=2');
    expect(policy.onAttach!(store).layers).toBeNull();
    appendToken(store);
    // KV head 0's query heads: q² = [1, 0, 4, 9] and [1, 4, 0, 9] → mean [1, 2, 2, 9]; a second step the same
    const q = [1, 0, 2, 3, 1, 2, 0, 3, 1, 1, 1, 1, 1, 1, 1, 1];
    expect(policy.afterStep(store, stepWith(q)).layers).toBeNull();
    appendToken(store);
    // the queries gathered so far travel in the policy's state
    const restored = policyFor('think:ratio=0.25,window=2,recent=2');
    restored.setState(JSON.parse(JSON.stringify(policy.getState())));
    const decision = policy.afterStep(store, stepWith(q));
    expect(restored.afterStep(store, stepWith(q))).toEqual(decision);
    expect(decision.headMeasures!.channel_saliency[0]).toEqual([[1, 2, 2, 9], [1, 1, 0.25, 4]]);
    expect(decision.headMeasures!.pruned_channels[0]).toEqual([[0], [2]]);
    expect(reencodes(decision, 0, 0).map((r) => r.index)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('snapkv + think on the tiny model: SnapKV evicts, ThinK prunes channels, logits finite', async () => {
    const model = await fixtureModel();
    const session = new Session(model, { policy: 'snapkv:budget=24,window=4 + think:ratio=0.4,window=8,recent=8', sampler: { seed: 7, temperature: 1 } });
    const prompt = [1, ...tokenSequence(79, 5)];
    await session.prefill(prompt);
    const D = session.dims.headDim; // 8: ⌊0.4·8⌋ = 3 channels
    for (let l = 0; l < session.dims.nLayers; l++) {
      for (let h = 0; h < session.dims.nKvHeads; h++) {
        expect(session.cache.length(l, h)).toBe(24);
        for (let i = 0; i < 24; i++) {
          const codec = session.cache.codec(l, h, i);
          if (i < 16) expect(codec).toMatchObject({ name: 'think', kElements: D - 3, group: thinkGroupId('1.think.', l, h) });
          else expect(codec).toBeNull();
          for (const c of codec?.kPruned ?? []) expect(session.cache.keys(l, h)[i * D + c]).toBe(0);
        }
      }
    }
    const memory = session.cache.memory();
    const heads = session.dims.nLayers * session.dims.nKvHeads;
    expect(memory.vBytes).toBe(heads * 24 * D * 4);
    expect(memory.kBytes).toBe(heads * (24 * D * 4 - 16 * 3 * 4 + 1));
    const event = session.trace.all()[0];
    expect(event.decision.headMeasures?.pruned_channels[0][0]).toHaveLength(3);
    for (const x of session.nextTokenLogits!) expect(Number.isFinite(x)).toBe(true);
    for (let s = 0; s < 4; s++) await session.step();
    for (const x of session.nextTokenLogits!) expect(Number.isFinite(x)).toBe(true);
    expect(session.cache.codec(0, 0, 16)).toBeNull(); // decode=keep: the window stays whole
  });

  it('integration: alone and composed, decode=prune; restore reproduces', async () => {
    await integrationRun('think:ratio=0.4,window=8,recent=8,block=1,decode=prune', (s) => 100 + s + 1);
    await integrationRun('snapkv:budget=40,window=8 + think:ratio=0.5,recent=4,block=3,decode=prune', (s) => 40 + s + 1);
  });
});
