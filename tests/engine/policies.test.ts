/** Policies on hand-made caches (no graph): exact keep sets, spec strings, registry. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { KVCacheStore } from '../../engine/cache/store.ts';
import { PolicySpecError } from '../../engine/errors.ts';
import { Rope } from '../../engine/model/rope.ts';
import { POLICIES } from '../../engine/policies/index.ts';
import { createPolicy, formatPolicySpec, parsePolicySpec } from '../../engine/policies/spec.ts';
import type { HeadDecision, PolicyContext, PolicyDefinition } from '../../engine/policies/types.ts';
import { fillCache, ragged, smallDims } from './helpers/cache.ts';

const dims = smallDims();
const context: PolicyContext = {
  dims: { ...dims, groupSize: dims.nHeads / dims.nKvHeads, vocabSize: 16, contextLength: 512 },
  rope: new Rope({ theta: 10000, dim: dims.headDim }, dims.headDim),
};
const noAttention = { step: 0, tokenIndex: 0, position: 0, attention: null, queries: null };
const noPrefill = { firstToken: 0, tokenCount: 0, attentionSums: null, windowAttention: null, windowQueries: null, windowRows: 0 };

function keepOf(decision: HeadDecision | null | undefined): number[] | null {
  return decision ? Array.from(decision.keep) : null;
}

describe('full policy', () => {
  it('keeps everything', () => {
    const cache = fillCache(new KVCacheStore(dims), 10);
    const policy = createPolicy('full', context);
    expect(policy.afterPrefill(cache, noPrefill).layers).toBeNull();
    expect(policy.afterStep(cache, noAttention).layers).toBeNull();
    expect(cache.apply(policy.afterStep(cache, noAttention)).evicted).toBe(0);
    expect(cache.memory().heldEntries).toBe(10 * dims.nLayers * dims.nKvHeads);
  });
});

describe('window policy', () => {
  it('keeps exactly the last size entries of each head', () => {
    const cache = fillCache(new KVCacheStore(dims), 10);
    const policy = createPolicy('window:size=4', context);
    const decision = policy.afterStep(cache, noAttention);
    for (let l = 0; l < dims.nLayers; l++) for (let h = 0; h < dims.nKvHeads; h++) expect(keepOf(decision.layers![l]![h])).toEqual([6, 7, 8, 9]);
    const applied = cache.apply(decision);
    expect(applied.evicted).toBe(6 * dims.nLayers * dims.nKvHeads);
    expect(Array.from(cache.tokens(1, 0))).toEqual([6, 7, 8, 9]);
    expect(applied.heads[0].evictedTokens).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('leaves heads within the budget unchanged and handles ragged heads', () => {
    const cache = ragged(new KVCacheStore(dims), [
      [3, 7],
      [5, 2],
    ]);
    const decision = createPolicy('window:size=5', context).afterStep(cache, noAttention);
    expect(keepOf(decision.layers![0]![0])).toBeNull();
    expect(keepOf(decision.layers![0]![1])).toEqual([2, 3, 4, 5, 6]);
    expect(keepOf(decision.layers![1]![0])).toBeNull();
    expect(keepOf(decision.layers![1]![1])).toBeNull();
    expect(createPolicy('window:size=9', context).afterStep(cache, noAttention).layers).toBeNull();
  });

  it('size=1 keeps only the newest entry; onAttach trims a handed-over cache', () => {
    const cache = fillCache(new KVCacheStore(dims), 6);
    const policy = createPolicy('window:size=1', context);
    cache.apply(policy.onAttach!(cache));
    expect(Array.from(cache.tokens(0, 1))).toEqual([5]);
  });

  it('property: keeps the min(n, size) newest entries in order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 50 }), (n, size) => {
        const cache = fillCache(new KVCacheStore(dims), n);
        cache.apply(createPolicy(`window:size=${size}`, context).afterStep(cache, noAttention));
        const expected = Array.from({ length: Math.min(n, size) }, (_, i) => n - Math.min(n, size) + i);
        for (let l = 0; l < dims.nLayers; l++) {
          for (let h = 0; h < dims.nKvHeads; h++) {
            expect(Array.from(cache.tokens(l, h))).toEqual(expected);
            expect(Array.from(cache.positions(l, h))).toEqual(expected);
          }
        }
        // values moved with their entries (fillCache writes token index into every channel)
        expect(cache.values(0, 0)[0]).toBe(expected[0] + 0.5);
      }),
    );
  });
});

describe('policy specs', () => {
  it('parses and formats canonical specs', () => {
    expect(parsePolicySpec('full')).toEqual({ id: 'full', params: {} });
    expect(parsePolicySpec('window')).toEqual({ id: 'window', params: { size: 128 } });
    expect(parsePolicySpec(' window : size = 64 ')).toEqual({ id: 'window', params: { size: 64 } });
    expect(formatPolicySpec(parsePolicySpec('window'))).toBe('window:size=128');
    expect(formatPolicySpec({ id: 'full', params: {} })).toBe('full');
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1_000_000 }), (size) => {
        const text = `window:size=${size}`;
        expect(formatPolicySpec(parsePolicySpec(text))).toBe(text);
      }),
    );
  });

  it('explains unknown policies, parameters and bad values', () => {
    const known = POLICIES.map((p) => p.id).join(', ');
    expect(() => parsePolicySpec('foo')).toThrow(new PolicySpecError(`unknown policy "foo" (known: ${known})`));
    expect(() => parsePolicySpec('windw')).toThrow(`unknown policy "windw" (known: ${known}) — did you mean window?`);
    expect(() => parsePolicySpec('window:size=abc')).toThrow(new PolicySpecError('window: size must be an integer ≥ 1, got "abc"'));
    expect(() => parsePolicySpec('window:size=0')).toThrow('window: size must be an integer ≥ 1, got "0"');
    expect(() => parsePolicySpec('window:size=1.5')).toThrow('window: size must be an integer ≥ 1, got "1.5"');
    expect(() => parsePolicySpec('window:siz=4')).toThrow(new PolicySpecError('window: unknown parameter "siz" (did you mean size?)'));
    expect(() => parsePolicySpec('window:budget=4')).toThrow('window: unknown parameter "budget" (parameters: size)');
    expect(() => parsePolicySpec('full:size=4')).toThrow('full: unknown parameter "size" (it takes no parameters)');
    expect(() => parsePolicySpec('window:size=4,size=5')).toThrow('window: parameter "size" given twice');
    expect(() => parsePolicySpec('window:size')).toThrow('window: expected name=value, got "size"');
    expect(() => parsePolicySpec('  ')).toThrow(`empty policy spec (known: ${known})`);
  });

  it('validates float, enum and bool parameters of any registered policy', () => {
    const demo: PolicyDefinition = {
      id: 'demo',
      label: 'Demo',
      description: 'test only',
      paper: { short: 'none', title: 'none' },
      params: [
        { name: 'ratio', kind: 'float', default: 0.5, min: 0, max: 1, description: 'fraction' },
        { name: 'accumulate', kind: 'enum', default: 'sum', choices: ['sum', 'mean'], description: 'how' },
        { name: 'rerotate', kind: 'bool', default: false, description: 'P2' },
      ],
      needs: { attention: true, queries: false, calibration: false },
      create: () => {
        throw new Error('not used');
      },
    };
    const registry = [...POLICIES, demo];
    expect(parsePolicySpec('demo:ratio=.25,accumulate=mean,rerotate=true', registry).params).toEqual({ ratio: 0.25, accumulate: 'mean', rerotate: true });
    expect(formatPolicySpec(parsePolicySpec('demo', registry), registry)).toBe('demo:ratio=0.5,accumulate=sum,rerotate=false');
    expect(() => parsePolicySpec('demo:ratio=2', registry)).toThrow('demo: ratio must be a number in [0, 1], got "2"');
    expect(() => parsePolicySpec('demo:ratio=1e', registry)).toThrow('demo: ratio must be a number in [0, 1], got "1e"');
    expect(() => parsePolicySpec('demo:accumulate=max', registry)).toThrow('demo: accumulate must be one of sum, mean, got "max"');
    expect(() => parsePolicySpec('demo:rerotate=maybe', registry)).toThrow('demo: rerotate must be true or false, got "maybe"');
  });

  it('every registered policy cites its origin and has a consistent schema', () => {
    for (const definition of POLICIES) {
      expect(definition.paper.short.length).toBeGreaterThan(0);
      expect(definition.paper.title.length).toBeGreaterThan(0);
      for (const param of definition.params) expect(param.description.length).toBeGreaterThan(0);
      if (definition.needs.calibration) {
        // calibrated policies refuse to start without calibration data (tests/policies/* cover them with one)
        expect(() => createPolicy(definition.id, context)).toThrow(/needs calibration data/);
        continue;
      }
      const policy = createPolicy(definition.id, context);
      expect(policy.id).toBe(definition.id);
      expect(JSON.parse(JSON.stringify(policy.getState()))).toEqual(policy.getState());
    }
  });
});
