/** KIVI: key runs per channel, the residual's block flushes, the value window, bytes — by hand — and tiny-model runs. */
import { describe, expect, it } from 'vitest';
import type { Decision, Reencode } from '../../engine/cache/decision.ts';
import { KVCacheStore } from '../../engine/cache/store.ts';
import { PolicySpecError } from '../../engine/errors.ts';
import { kiviGroupId } from '../../engine/policies/kivi.ts';
import { indexRange } from '../../engine/policies/types.ts';
import { metadataBytes, packedBytes, quantizeBlock, relativeL2 } from '../../engine/quant/quantize.ts';
import { appendRows, storeOf as storeWithRows } from './helpers/store.ts';
import { DIMS, integrationRun, sessionAfter, policyFor, prefillObservation, stepObservation } from './helpers/policy.ts';

const d = DIMS.headDim;
/** Keys spread unevenly per channel (so a run of several tokens quantizes with error); values per token. */
const keyOf = (l: number, h: number, t: number) => [t * t * 0.5 + l, 3 - t + h, Math.sin(t) * 4, 10 + ((t * 7) % 5)];
const valueOf = (l: number, h: number, t: number) => [t + h, -t * 0.5, l + 1, (t % 3) * 2];

/** Appends tokens [tokenCount, tokenCount + n) to every head with keyOf / valueOf. */
const append = (store: KVCacheStore, n: number) => appendRows(store, n, keyOf, valueOf);
const storeOf = (n: number) => storeWithRows(DIMS, n, keyOf, valueOf);
const reencodes = (decision: Decision, l: number, h: number): readonly Reencode[] => decision.layers?.[l]?.[h]?.reencode ?? [];
const codecNames = (store: KVCacheStore, l: number, h: number) => Array.from({ length: store.length(l, h) }, (_, i) => store.codec(l, h, i)?.name ?? null);
const keyRows = (l: number, h: number, tokens: number[]) => Float32Array.from(tokens.flatMap((t) => keyOf(l, h, t)));

describe('kivi: prefill (reference: the largest multiple of R of the keys, all values but the R newest)', () => {
  it('10 tokens, G = 2, R = 4: keys 0–7 in runs of 2, keys 8–9 fp32; values 0–5 quantized, 6–9 fp32', () => {
    const store = storeOf(10);
    const decision = policyFor('kivi:group=2,residual=4,v_group=4').afterPrefill(store, prefillObservation(10));
    store.apply(decision);
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        expect(codecNames(store, l, h)).toEqual([...Array(6).fill('kivi-k2v2'), 'kivi-k2', 'kivi-k2', null, null]);
        // each run of 2 keys is one per-channel block, with its own codec group
        for (let run = 0; run < 4; run++) {
          const q = quantizeBlock(keyRows(l, h, [2 * run, 2 * run + 1]), 2, d, { bits: 2, axis: 'channel', groupSize: 2 });
          expect(Array.from(store.keys(l, h).subarray(2 * run * d, (2 * run + 2) * d))).toEqual(Array.from(q.dequantized));
          expect(store.codec(l, h, 2 * run)?.group).toBe(kiviGroupId('kivi.', l, h, 2 * run));
          expect(store.codec(l, h, 2 * run + 1)?.group).toBe(kiviGroupId('kivi.', l, h, 2 * run));
        }
        // values per token, one group of 4 channels; the residual and the window untouched
        const v3 = quantizeBlock(valueOf(l, h, 3), 1, d, { bits: 2, axis: 'token', groupSize: 4 });
        expect(Array.from(store.values(l, h).subarray(3 * d, 4 * d))).toEqual(Array.from(v3.dequantized));
        expect(Array.from(store.keys(l, h).subarray(8 * d))).toEqual(Array.from(keyRows(l, h, [8, 9])));
        expect(Array.from(store.values(l, h).subarray(6 * d, 7 * d))).toEqual(Array.from(Float32Array.from(valueOf(l, h, 6))));
      }
    }
    expect(decision.note).toBe('kivi 2-bit: 32 keys, 24 values quantized; residual 4, key group 2');
    const re = reencodes(decision, 0, 1).find((r) => r.index === 5)!;
    expect(re.kError).toBeCloseTo(relativeL2(Float32Array.from(keyOf(0, 1, 5)), re.keys!), 12);
    expect(re.vError).toBeCloseTo(relativeL2(Float32Array.from(valueOf(0, 1, 5)), re.values!), 12);
  });

  it('n a multiple of R quantizes every key (no residual, n = R included); n < R changes nothing', () => {
    const store = storeOf(8);
    store.apply(policyFor('kivi:group=2,residual=4').afterPrefill(store, prefillObservation(8)));
    expect(codecNames(store, 1, 0)).toEqual([...Array(4).fill('kivi-k2v2'), ...Array(4).fill('kivi-k2')]);
    const exact = storeOf(4);
    const atR = policyFor('kivi:group=2,residual=4').afterPrefill(exact, prefillObservation(4));
    expect(reencodes(atR, 0, 0).map((r) => r.codec.name)).toEqual(Array(4).fill('kivi-k2'));
    const small = storeOf(3);
    expect(policyFor('kivi:group=2,residual=4').afterPrefill(small, prefillObservation(3)).layers).toBeNull();
  });

  it('separate key and value bits; a residual not a multiple of G is refused', () => {
    const store = storeOf(8);
    const decision = policyFor('kivi:k_bits=4,v_bits=2,group=4,residual=4').afterPrefill(store, prefillObservation(8));
    const codec = reencodes(decision, 0, 0)[0].codec;
    expect(codec).toMatchObject({ name: 'kivi-k4v2', kBits: 4, vBits: 2, kElements: 4, vElements: 4, kMetaBytes: 0, vMetaBytes: 4, groupSize: 4 });
    expect(decision.note).toContain('kivi k4/v2-bit');
    expect(() => policyFor('kivi:group=4,residual=6')).toThrow(PolicySpecError);
    expect(() => policyFor('kivi:group=4,residual=6')).toThrow(/kivi: residual 6 must be a multiple of group 4/);
  });
});

describe('kivi: decoding', () => {
  it('the pitfall: keys are not quantized one token at a time — they stay fp32 until R accumulate, then one block of runs of G', () => {
    const store = storeOf(10);
    const policy = policyFor('kivi:group=4,residual=4');
    store.apply(policy.afterPrefill(store, prefillObservation(10)));
    // keys 0–7 quantized, 8–9 the residual
    const quantizedKeys = () => Array.from({ length: store.length(0, 0) }, (_, i) => (store.codec(0, 0, i)?.kBits ?? 32) < 32);
    const flushes: number[][] = [];
    for (let s = 0; s < 6; s++) {
      append(store, 1);
      const decision = policy.afterStep(store, stepObservation(null, s));
      flushes.push(reencodes(decision, 0, 0).filter((r) => r.keys).map((r) => r.index));
      store.apply(decision);
    }
    // tokens 10, 11 complete the residual 8–11 (step 1); 12–15 the next block (step 5)
    expect(flushes).toEqual([[], [8, 9, 10, 11], [], [], [], [12, 13, 14, 15]]);
    expect(quantizedKeys()).toEqual([...Array(16).fill(true)]);
    // the flushed block shares one per-channel scale and zero across its 4 tokens
    const block = quantizeBlock(keyRows(0, 0, [8, 9, 10, 11]), 4, d, { bits: 2, axis: 'channel', groupSize: 4 });
    expect(Array.from(store.keys(0, 0).subarray(8 * d, 12 * d))).toEqual(Array.from(block.dequantized));
    for (let c = 0; c < d; c++) {
      for (let t = 0; t < 4; t++) {
        const code = (store.keys(0, 0)[(8 + t) * d + c] - block.zeros[c]) / block.scales[c];
        expect(Math.abs(code - Math.round(code))).toBeLessThan(1e-4);
      }
    }
    expect(new Set([8, 9, 10, 11].map((i) => store.codec(0, 0, i)?.group))).toEqual(new Set([kiviGroupId('kivi.', 0, 0, 8)]));
    // quantized alone, each key would come back (nearly) exact: the run of G is what quantizes
    const alone = quantizeBlock(keyOf(0, 0, 9), 1, d, { bits: 2, axis: 'channel', groupSize: 4 });
    expect(relativeL2(keyOf(0, 0, 9), alone.dequantized)).toBeLessThan(1e-3);
    expect(relativeL2(keyOf(0, 0, 9), store.keys(0, 0).subarray(9 * d, 10 * d))).toBeGreaterThan(0.01);
  });

  it('values: a sliding fp32 window of the R newest; each step quantizes the value leaving it', () => {
    const store = storeOf(10);
    const policy = policyFor('kivi:group=2,residual=4');
    store.apply(policy.afterPrefill(store, prefillObservation(10)));
    for (let s = 0; s < 3; s++) {
      append(store, 1);
      const decision = policy.afterStep(store, stepObservation(null, s));
      expect(reencodes(decision, 1, 1).filter((r) => r.values).map((r) => r.index)).toEqual([6 + s]);
      store.apply(decision);
    }
    const quantizedValues = Array.from({ length: 13 }, (_, i) => (store.codec(1, 1, i)?.vBits ?? 32) < 32);
    expect(quantizedValues).toEqual([...Array(9).fill(true), ...Array(4).fill(false)]);
  });

  it('stateless: a fresh instance (attached mid-run, restored) decides exactly as the one that saw the prefill', () => {
    const a = storeOf(10);
    const b = storeOf(10);
    const first = policyFor('kivi:group=2,residual=4');
    a.apply(first.afterPrefill(a, prefillObservation(10)));
    b.apply(policyFor('kivi:group=2,residual=4').onAttach!(b));
    expect(codecNames(b, 0, 0)).toEqual(codecNames(a, 0, 0));
    for (let s = 0; s < 4; s++) {
      append(a, 1);
      append(b, 1);
      const fromFirst = first.afterStep(a, stepObservation(null, s));
      const fromFresh = policyFor('kivi:group=2,residual=4').afterStep(b, stepObservation(null, s));
      expect(fromFresh).toEqual(fromFirst);
      a.apply(fromFirst);
      b.apply(fromFresh);
    }
  });

  it('an earlier member evicting part of the residual: the block flushes once R fp32 keys are held', () => {
    const store = storeOf(10);
    const policy = policyFor('kivi:group=2,residual=4');
    store.apply(policy.afterPrefill(store, prefillObservation(10)));
    // token 9 (a residual key) leaves head (0, 0): the residual holds token 8 only
    store.apply({ layers: [[{ keep: indexRange(0, 9) }, null], null] });
    const flushedTokens: number[][] = [];
    for (let s = 0; s < 3; s++) {
      append(store, 1);
      const decision = policy.afterStep(store, stepObservation(null, s));
      flushedTokens.push(reencodes(decision, 0, 0).filter((r) => r.keys).map((r) => store.tokens(0, 0)[r.index]));
      store.apply(decision);
    }
    expect(flushedTokens).toEqual([[], [], [8, 10, 11, 12]]);
    expect(store.codec(0, 0, 8)?.group).toBe(kiviGroupId('kivi.', 0, 0, 8));
    expect(store.codec(0, 0, 9)?.group).toBe(kiviGroupId('kivi.', 0, 0, 8));
    expect(store.codec(0, 0, 10)?.group).toBe(kiviGroupId('kivi.', 0, 0, 11));
  });
});

describe('kivi: re-encodes applied in place (no compaction) are undone exactly', () => {
  it('a rolled-back step restores keys, values, codecs and codec groups', () => {
    const store = storeOf(10);
    const policy = policyFor('kivi:group=2,residual=4');
    store.apply(policy.afterPrefill(store, prefillObservation(10)));
    append(store, 2);
    const state = () => ({
      keys: Array.from(store.keys(0, 0)),
      values: Array.from(store.values(1, 1)),
      codecs: [codecNames(store, 0, 0), codecNames(store, 1, 1)],
      memory: store.memory(),
    });
    const before = state();
    store.begin();
    // token 11 completes the residual 8–11: a key block flushes (new groups) and a value leaves the window
    const decision = policy.afterStep(store, stepObservation(null, 0));
    expect(decision.groups?.length).toBe(2 * 4);
    store.apply(decision);
    expect(state()).not.toEqual(before);
    store.rollback();
    expect(state()).toEqual(before);
  });
});

describe('kivi: bytes (codes + per-entry value metadata + per-run key scales, K and V separately)', () => {
  it('exact sums after prefill; a run’s scales go with its last key', () => {
    const store = storeOf(10);
    store.apply(policyFor('kivi:group=2,residual=4,v_group=4').afterPrefill(store, prefillObservation(10)));
    const fp32 = d * 4;
    const keyCodes = packedBytes(d, 2);
    const valueEntry = packedBytes(d, 2) + metadataBytes(1);
    // per head: 8 quantized keys + 2 fp32, 4 runs of per-channel scales + zeros; 6 quantized values + 4 fp32
    const kHead = 8 * keyCodes + 2 * fp32 + 4 * metadataBytes(d);
    const vHead = 6 * valueEntry + 4 * fp32;
    expect(kHead).toBe(8 * 1 + 32 + 64);
    expect(vHead).toBe(6 * 5 + 64);
    let memory = store.memory();
    expect(memory.kBytes).toBe(4 * kHead);
    expect(memory.vBytes).toBe(4 * vHead);
    expect(memory.groupBytes).toBe(4 * 4 * metadataBytes(d));
    expect(memory.heldEntries).toBe(40);
    // evicting token 0 of head (0, 0): its codes go, its run's scales stay (token 1 uses them)
    store.apply({ layers: [[{ keep: indexRange(1, 10) }, null], null] });
    memory = store.memory();
    expect(memory.kBytes).toBe(4 * kHead - keyCodes);
    expect(memory.vBytes).toBe(4 * vHead - valueEntry);
    // … and token 1: the run's last key, so its scales go too
    store.apply({ layers: [[{ keep: indexRange(1, 9) }, null], null] });
    memory = store.memory();
    expect(memory.kBytes).toBe(4 * kHead - 2 * keyCodes - metadataBytes(d));
    expect(memory.groupBytes).toBe(15 * metadataBytes(d));
  });

  it('value groups smaller than head_dim: per-token metadata per group', () => {
    const store = storeOf(8);
    const decision = policyFor('kivi:group=2,residual=4,v_group=2').afterPrefill(store, prefillObservation(8));
    expect(reencodes(decision, 0, 0)[0].codec.vMetaBytes).toBe(metadataBytes(2));
    store.apply(decision);
    const q = quantizeBlock(valueOf(0, 0, 0), 1, d, { bits: 2, axis: 'token', groupSize: 2 });
    expect(Array.from(store.values(0, 0).subarray(0, d))).toEqual(Array.from(q.dequantized));
  });
});

describe('kivi: sessions on the tiny model', () => {
  it('prefill + decode with snapshot / restore (G = 4, R = 8: quantizes on the fixture)', async () => {
    await integrationRun('kivi:group=4,residual=8', () => 120);
  });

  it('changes the logits against the full cache, stays finite, holds fewer bytes; composes after H2O', async () => {
    const full = await sessionAfter('full');
    for (const spec of ['kivi', 'kivi:group=4,residual=8,bits=4', 'h2o:heavy=16,recent=16 + kivi:group=4,residual=8']) {
      const session = await sessionAfter(spec);
      const logits = session.nextTokenLogits!;
      for (const x of logits) expect(Number.isFinite(x)).toBe(true);
      const diff = logits.reduce((m, x, i) => Math.max(m, Math.abs(x - full.nextTokenLogits![i])), 0);
      expect(diff, spec).toBeGreaterThan(1e-4);
      const memory = session.memory();
      expect(memory.bytes, spec).toBeLessThan(memory.heldEntries * 2 * 4 * session.dims.headDim);
      expect(session.trace.all()[0].decision.note ?? '', spec).toMatch(/kivi \d+-bit: \d+ keys, \d+ values quantized/);
    }
  });
});
