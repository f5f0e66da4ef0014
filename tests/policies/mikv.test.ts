/** MiKV: importance (H2O) → high / low precision, demotion, the key balancer, bytes — by hand — and tiny-model runs. */
import { describe, expect, it } from 'vitest';
import type { Decision, Reencode } from '../../engine/cache/decision.ts';
import { KVCacheStore } from '../../engine/cache/store.ts';
import { PolicySpecError } from '../../engine/errors.ts';
import { mikvBalancerGroupId } from '../../engine/policies/mikv.ts';
import { balancerOf } from '../../engine/quant/balancer.ts';
import { indexRange, type PrefillObservation } from '../../engine/policies/types.ts';
import { roundHalf } from '../../engine/quant/half.ts';
import { metadataBytes, packedBytes, quantizeBlock, relativeL2 } from '../../engine/quant/quantize.ts';
import { appendRows, storeOf as storeWithRows } from './helpers/store.ts';
import { DIMS, integrationRun, sessionAfter, perQueryHead, policyFor, stepObservation } from './helpers/policy.ts';

const d = DIMS.headDim;
const keyOf = (l: number, h: number, t: number) => [8 - t * 0.5 + l, 0.5 - 0.1 * t, -0.3 + 0.07 * ((t * 3) % 7), 0.2 + h * 0.1];
const valueOf = (l: number, h: number, t: number) => [t + h, -t * 0.5, l + 1, (t % 3) * 2];

/** Appends tokens [tokenCount, tokenCount + n) to every head with keyOf / valueOf. */
const append = (store: KVCacheStore, n: number) => appendRows(store, n, keyOf, valueOf);
const storeOf = (n: number) => storeWithRows(DIMS, n, keyOf, valueOf);
const f32 = (x: number[]) => Float32Array.from(x);
const byIndex = (decision: Decision, l: number, h: number) => new Map<number, Reencode>((decision.layers?.[l]?.[h]?.reencode ?? []).map((re) => [re.index, re]));
const names = (store: KVCacheStore, l: number, h: number) => Array.from({ length: store.length(l, h) }, (_, i) => store.codec(l, h, i)?.name ?? null);
const int = (row: ArrayLike<number>, bits: number) => quantizeBlock(row, 1, d, { bits, axis: 'token', groupSize: d }).dequantized;

/** The query the window rows carry for every query head: small in the keys' outlier channel 0. */
const QUERY = [0.1, 2, 1.5, 1];

/** Prefill of n tokens: attention sums (every query head) `sums`; one window row of QUERY. */
function prefill(n: number, sums: number[]): PrefillObservation {
  return {
    firstToken: 0,
    tokenCount: n,
    attentionSums: perQueryHead(DIMS, () => sums),
    windowAttention: null,
    windowQueries: Array.from({ length: DIMS.nLayers }, () => Float32Array.from({ length: DIMS.nHeads * d }, (_, i) => QUERY[i % d])),
    windowRows: 1,
  };
}

/** entries 1 and 4 are the heavy hitters of 0–5; 6, 7 the recent */
const SUMS = [0, 5, 0, 0, 3, 0, 0, 0];

describe('mikv: importance picks the precision; nothing is evicted', () => {
  it('heavy + recent at int8, the rest at int2 (per token), keys and values; no entry budget recorded', () => {
    const store = storeOf(8);
    const decision = policyFor('mikv:heavy=2,recent=2,balance=false,group=4').afterPrefill(store, prefill(8, SUMS));
    expect(decision.budgets).toBeUndefined();
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        expect(Array.from(decision.layers![l]![h]!.keep)).toEqual(Array.from(indexRange(0, 8)));
        const re = byIndex(decision, l, h);
        for (let i = 0; i < 8; i++) {
          const high = [1, 4, 6, 7].includes(i);
          const bits = high ? 8 : 2;
          expect(re.get(i)!.codec).toEqual({ name: high ? 'mikv-hi8' : 'mikv-lo2', kBits: bits, vBits: bits, kElements: 4, vElements: 4, kMetaBytes: 4, vMetaBytes: 4, groupSize: 4 });
          expect(Array.from(re.get(i)!.keys!)).toEqual(Array.from(int(f32(keyOf(l, h, i)), bits)));
          expect(Array.from(re.get(i)!.values!)).toEqual(Array.from(int(f32(valueOf(l, h, i)), bits)));
          expect(re.get(i)!.kError).toBeCloseTo(relativeL2(f32(keyOf(l, h, i)), re.get(i)!.keys!), 12);
        }
      }
    }
    store.apply(decision);
    expect(store.memory().heldEntries).toBe(32);
    expect(decision.note).toBe('mikv: 16 entries demoted to 2-bit, 16 stored at 8-bit');
  });

  it('a demoted entry is quantized from its int8 codes and stays low: it never takes a heavy place again (H2O does not bring back what it evicted)', () => {
    const store = storeOf(8);
    const policy = policyFor('mikv:heavy=2,recent=2,balance=false,group=4,block=1');
    store.apply(policy.afterPrefill(store, prefill(8, SUMS)));
    const int8Key4 = Float32Array.from(store.keys(0, 0).subarray(4 * d, 5 * d));
    append(store, 1);
    // entries 0 (low) and 6 now draw the most attention: heavy = {6, 1} of the entries still high; 4 falls out, 8 arrives
    const attention = perQueryHead(DIMS, () => [100, 0, 0, 0, 0, 0, 100, 0, 0]);
    const decision = policy.afterStep(store, stepObservation(attention));
    const re = byIndex(decision, 0, 0);
    expect([...re.keys()].sort((a, b) => a - b)).toEqual([4, 8]);
    expect(re.get(4)!.codec.name).toBe('mikv-lo2');
    expect(re.get(8)!.codec.name).toBe('mikv-hi8');
    expect(Array.from(re.get(4)!.keys!)).toEqual(Array.from(int(int8Key4, 2)));
    // its error is measured against the exact key the model computed
    expect(re.get(4)!.kError).toBeCloseTo(relativeL2(f32(keyOf(0, 0, 4)), re.get(4)!.keys!), 12);
    store.apply(decision);
    expect(names(store, 0, 0)).toEqual(['mikv-lo2', 'mikv-hi8', 'mikv-lo2', 'mikv-lo2', 'mikv-lo2', 'mikv-lo2', 'mikv-hi8', 'mikv-hi8', 'mikv-hi8']);
    // next step 7 leaves the recent window and is no heavy hitter (1: 5, 6: 100, 7: 0): demoted, one per step as H2O evicts
    append(store, 1);
    const next = policy.afterStep(store, stepObservation(perQueryHead(DIMS, () => new Array(10).fill(0))));
    expect([...byIndex(next, 0, 0).keys()].sort((a, b) => a - b)).toEqual([7, 9]);
  });

  it('block: decoding acts once every `block` tokens; in between new entries stay fp32 and leaving ones high', () => {
    const store = storeOf(8);
    const policy = policyFor('mikv:heavy=2,recent=2,balance=false,group=4,block=4');
    store.apply(policy.afterPrefill(store, prefill(8, SUMS)));
    const acted: boolean[] = [];
    const held: (string | null)[][] = [];
    for (let s = 0; s < 8; s++) {
      append(store, 1);
      const decision = policy.afterStep(store, stepObservation(perQueryHead(DIMS, () => new Array(store.length(0, 0)).fill(0))));
      acted.push(byIndex(decision, 0, 0).size > 0);
      store.apply(decision);
      held.push(names(store, 0, 0));
    }
    expect(acted).toEqual([false, false, false, true, false, false, false, true]);
    // tokens 8–10 arrive and stay fp32 (6 and 7, out of the recent window, stay high meanwhile)
    expect(held[2]).toEqual(['mikv-lo2', 'mikv-hi8', 'mikv-lo2', 'mikv-lo2', 'mikv-hi8', 'mikv-lo2', 'mikv-hi8', 'mikv-hi8', null, null, null]);
    // at 12 tokens: heavy 1, 4 and recent 10, 11 of the entries still high; 6–9 demoted
    expect(held[3].slice(6)).toEqual(['mikv-lo2', 'mikv-lo2', 'mikv-lo2', 'mikv-lo2', 'mikv-hi8', 'mikv-hi8']);
    expect(held[7].slice(10)).toEqual(['mikv-lo2', 'mikv-lo2', 'mikv-lo2', 'mikv-lo2', 'mikv-hi8', 'mikv-hi8']);
  });

  it('high_bits 16 stores fp16, 32 leaves important entries as computed; bad bit pairs are refused', () => {
    const fp16 = policyFor('mikv:heavy=2,recent=2,balance=false,high_bits=16').afterPrefill(storeOf(8), prefill(8, SUMS));
    const hi = byIndex(fp16, 1, 0).get(4)!;
    expect(hi.codec).toEqual({ name: 'mikv-hi16', kBits: 16, vBits: 16, kElements: 4, vElements: 4, kMetaBytes: 0, vMetaBytes: 0 });
    expect(Array.from(hi.keys!)).toEqual(keyOf(1, 0, 4).map(roundHalf));
    const fp32 = policyFor('mikv:heavy=2,recent=2,balance=false,high_bits=32').afterPrefill(storeOf(8), prefill(8, SUMS));
    expect([...byIndex(fp32, 1, 0).keys()].sort()).toEqual([0, 2, 3, 5]);
    expect(() => policyFor('mikv:high_bits=12')).toThrow(PolicySpecError);
    expect(() => policyFor('mikv:high_bits=4,low_bits=4')).toThrow(/mikv: low_bits 4 must be below high_bits 4/);
  });
});

describe('mikv: the outlier balancer', () => {
  it('b_c = sqrt(max|q_c| / max|k_c|) in fp16; 1 where a maximum is 0', () => {
    const b = balancerOf([4, -1, 0, 1, 2, 0.25, 0, -3], [1, 4, 2, 0, -0.5, -1, 1, 0], 4);
    expect(Array.from(b)).toEqual([2, 0.5, 1, 1]);
    expect(balancerOf([2, 1], [1, 1], 2)[0]).toBe(roundHalf(Math.SQRT2));
  });

  it('low keys are stored as quantize(k ⊙ b) and seen as dequantize(·) ⊘ b; b is a codec group per head', () => {
    const store = storeOf(8);
    const decision = policyFor('mikv:heavy=2,recent=2,group=4').afterPrefill(store, prefill(8, SUMS));
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        // the KV head's two query heads carry one window row each; the keys are the head's prompt keys
        const b = balancerOf([...QUERY, ...QUERY], store.keys(l, h), d);
        const low = byIndex(decision, l, h).get(0)!;
        expect(low.codec).toMatchObject({ name: 'mikv-lo2-bal', kBits: 2, group: mikvBalancerGroupId('mikv.', l, h) });
        const expected = int(Float32Array.from(keyOf(l, h, 0), (x, c) => Math.fround(x) * b[c]), 2).map((x, c) => x / b[c]);
        expect(Array.from(low.keys!)).toEqual(Array.from(expected));
        // values and high-precision keys are not balanced
        expect(Array.from(low.values!)).toEqual(Array.from(int(f32(valueOf(l, h, 0)), 2)));
        expect(byIndex(decision, l, h).get(1)!.codec.name).toBe('mikv-hi8');
      }
    }
    expect(decision.groups).toEqual(
      [0, 1].flatMap((l) => [0, 1].map((h) => ({ id: mikvBalancerGroupId('mikv.', l, h), kBytes: 8, vBytes: 0, label: `MiKV key balancer (fp16 per channel), layer ${l}, KV head ${h}` }))),
    );
    expect(decision.note).toBe('mikv: 16 entries demoted to 2-bit (balanced keys), 16 stored at 8-bit');
  });

  it('balancing keeps the attention logits of a key with an outlier channel closer', () => {
    const keys = [
      [8, 0.5, -0.3, 0.2],
      [7, -0.4, 0.25, -0.1],
      [6.5, 0.1, 0.3, 0.15],
    ];
    const b = balancerOf(QUERY, keys.flat(), d);
    const logit = (k: ArrayLike<number>) => Array.from(k).reduce((s, x, c) => s + x * QUERY[c], 0);
    for (const k of keys) {
      const plain = int(k, 2);
      const balanced = int(k.map((x, c) => x * b[c]), 2).map((x, c) => x / b[c]);
      expect(Math.abs(logit(balanced) - logit(k))).toBeLessThan(Math.abs(logit(plain) - logit(k)));
    }
  });

  it('attached mid-run without queries: nothing is demoted until a step brings a query; state round-trips', () => {
    const store = storeOf(8);
    const twin = storeOf(8);
    const policy = policyFor('mikv:heavy=2,recent=2,group=4,block=1');
    const attach = policy.onAttach!(store);
    // scores start at 0: heavy = the oldest (0, 1), recent 6, 7 — the rest held at int8 for now
    expect(new Set([...byIndex(attach, 0, 0).values()].map((re) => re.codec.name))).toEqual(new Set(['mikv-hi8']));
    store.apply(attach);
    twin.apply(attach);
    append(store, 1);
    append(twin, 1);
    const queries = Array.from({ length: DIMS.nLayers }, () => Float32Array.from({ length: DIMS.nHeads * d }, (_, i) => QUERY[i % d]));
    const step = { ...stepObservation(perQueryHead(DIMS, () => new Array(9).fill(0))), queries };
    // a fresh instance given the state (store columns included) decides as the one attached
    const again = policyFor('mikv:heavy=2,recent=2,group=4,block=1');
    again.setState(policy.getState());
    const decision = policy.afterStep(store, step);
    expect(again.afterStep(twin, step)).toEqual(decision);
    const re = byIndex(decision, 0, 0);
    expect([...re.keys()].sort()).toEqual([2, 3, 4, 5, 6, 8]);
    expect(re.get(2)!.codec.name).toBe('mikv-lo2-bal');
    expect(re.get(8)!.codec.name).toBe('mikv-hi8');
    // the balancer measured at that step is part of the state (fp16 values, one per channel)
    const measured = policy.getState('session') as { stages: { balancers: (number[] | null)[][] }[] };
    expect(measured.stages[0].balancers[0][0]).toEqual(Array.from(balancerOf([...QUERY, ...QUERY], store.keys(0, 0), d)));
  });
});

describe('mikv: bytes (codes + per-token metadata + one balancer per head, K and V separately)', () => {
  it('exact sums after prefill; the balancer goes with the head’s last balanced entry', () => {
    const store = storeOf(8);
    store.apply(policyFor('mikv:heavy=2,recent=2,group=4').afterPrefill(store, prefill(8, SUMS)));
    const high = packedBytes(d, 8) + metadataBytes(1);
    const low = packedBytes(d, 2) + metadataBytes(1);
    const balancer = d * 2;
    const kHead = 4 * high + 4 * low + balancer;
    const vHead = 4 * high + 4 * low;
    expect([kHead, vHead]).toEqual([60, 52]);
    let memory = store.memory();
    expect(memory.kBytes).toBe(4 * kHead);
    expect(memory.vBytes).toBe(4 * vHead);
    expect(memory.groupBytes).toBe(4 * balancer);
    // evicting every low entry of head (0, 0) (an earlier member would): its balancer goes too
    store.apply({ layers: [[{ keep: [1, 4, 6, 7] }, null], null] });
    memory = store.memory();
    expect(memory.kBytes).toBe(4 * kHead - 4 * low - balancer);
    expect(memory.groupBytes).toBe(3 * balancer);
  });
});

describe('mikv: sessions on the tiny model', () => {
  it('prefill + decode with snapshot / restore; every entry held', async () => {
    await integrationRun('mikv:heavy=8,recent=8', (step) => 101 + step);
  });

  it('changes the logits against the full cache, stays finite, holds every entry in fewer bytes', async () => {
    const full = await sessionAfter('full');
    for (const spec of ['mikv:heavy=8,recent=8', 'mikv:heavy=8,recent=8,balance=false,high_bits=16', 'mikv']) {
      const session = await sessionAfter(spec);
      const logits = session.nextTokenLogits!;
      for (const x of logits) expect(Number.isFinite(x)).toBe(true);
      const diff = logits.reduce((m, x, i) => Math.max(m, Math.abs(x - full.nextTokenLogits![i])), 0);
      expect(diff, spec).toBeGreaterThan(1e-4);
      const memory = session.memory();
      expect(memory.heldEntries, spec).toBe(full.memory().heldEntries);
      expect(memory.bytes, spec).toBeLessThan(memory.fullBytes / 2);
    }
  });
});
