/**
 * What policies see: prefill attention sums and window rows (mapped from chunked prefill onto
 * entries), step attention and queries, scores stored back on entries, serialisable state.
 * Uses a test-only policy in a custom registry.
 */
import { describe, expect, it } from 'vitest';
import { POLICIES } from '../../engine/policies/index.ts';
import { NO_CHANGE, intParam, type Decision, type HeadDecision, type PolicyDefinition, type PolicyNeeds, type PrefillObservation, type StepObservation } from '../../engine/policies/types.ts';
import type { CacheView } from '../../engine/cache/view.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from './helpers/fixture.ts';

/** A decision from `perHead(layer, kvHead, length)` for every head (null = unchanged). */
function decideEveryHead(cache: CacheView, perHead: (layer: number, kvHead: number, length: number) => HeadDecision | null): Decision {
  const layers = Array.from({ length: cache.nLayers }, (_, l) => Array.from({ length: cache.nKvHeads }, (_, h) => perHead(l, h, cache.length(l, h))));
  return layers.some((row) => row.some(Boolean)) ? { layers } : NO_CHANGE;
}

const seen: { prefill: PrefillObservation | null; steps: StepObservation[] } = { prefill: null, steps: [] };
const NEEDS: PolicyNeeds = { attention: true, queries: true, calibration: false, prefillWindow: 4 };

/** Per KV head, evicts the older entries its first query head attended to least this step, down to `budget`. */
const probe: PolicyDefinition = {
  id: 'probe',
  label: 'Probe',
  description: 'test policy',
  paper: { short: 'test', title: 'test' },
  params: [{ name: 'budget', kind: 'int', default: 6, min: 1, description: 'entries per head' }],
  needs: NEEDS,
  create(params, context) {
    const budget = intParam(params, 'budget');
    let decisions = 0;
    return {
      id: 'probe',
      params,
      needs: NEEDS,
      afterPrefill(_cache, observation) {
        seen.prefill = observation;
        return NO_CHANGE;
      },
      afterStep(cache, observation) {
        seen.steps.push(observation);
        return decideEveryHead(cache, (layer, kvHead, length) => {
          if (length <= budget) return null;
          decisions++;
          const row = observation.attention![layer][kvHead * context.dims.groupSize];
          const evict = new Set(weakestOlder(row, length - budget));
          return { keep: Array.from({ length }, (_, j) => j).filter((j) => !evict.has(j)), scores: row };
        });
      },
      reset() {
        decisions = 0;
      },
      getState: () => ({ decisions }),
      setState(state) {
        decisions = (state as { decisions: number }).decisions;
      },
    };
  },
};
const registry = [...POLICIES, probe];

/** Indices of the `count` smallest weights, never the last (the new token). */
function weakestOlder(row: Float32Array, count: number): number[] {
  return Array.from({ length: row.length - 1 }, (_, j) => j)
    .sort((a, b) => row[a] - row[b] || a - b)
    .slice(0, count);
}

describe('policy observations', () => {
  it('prefill: attention sums over entries add up to the rows that saw them; window rows are full rows', async () => {
    const model = await fixtureModel();
    const { nLayers, nHeads, headDim } = model.forward.dims;
    const ids = [1, ...tokenSequence(22, 17)];
    const session = new Session(model, { policy: 'probe', registry, prefillChunk: 5 });
    await session.prefill(ids);
    const obs = seen.prefill!;
    expect(obs.tokenCount).toBe(ids.length);
    expect(obs.windowRows).toBe(4);
    for (let l = 0; l < nLayers; l++) {
      for (let qh = 0; qh < nHeads; qh++) {
        const sums = obs.attentionSums![l][qh];
        expect(sums.length).toBe(ids.length);
        expect(sums.reduce((a, b) => a + b, 0)).toBeCloseTo(ids.length, 3);
        // entry j is seen by the rows j..n−1 only, each contributing at most 1
        sums.forEach((s, j) => expect(s).toBeLessThanOrEqual(ids.length - j + 1e-4));
        const window = obs.windowAttention![l][qh];
        for (let r = 0; r < 4; r++) {
          const row = window.subarray(r * ids.length, (r + 1) * ids.length);
          expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
          const promptRow = ids.length - 4 + r;
          expect(row.subarray(promptRow + 1).every((x) => x === 0)).toBe(true);
          expect(row[promptRow]).toBeGreaterThan(0);
        }
      }
      expect(obs.windowQueries![l].length).toBe(nHeads * 4 * headDim);
      expect(obs.windowQueries![l].some((x) => x !== 0)).toBe(true);
    }
  });

  it('step: attention over the current entries, decisions applied with their scores, state in snapshots', async () => {
    const model = await fixtureModel();
    const { nHeads, headDim } = model.forward.dims;
    seen.steps = [];
    const session = new Session(model, { policy: 'probe:budget=6', registry, sampler: { seed: 1, temperature: 1 } });
    await session.prefill([1, ...tokenSequence(9, 3)]);
    const first = await session.step();
    const obs = seen.steps[0];
    expect(obs.attention![0][0].length).toBe(11); // 10 prompt entries + the new token
    expect(obs.queries![1].length).toBe(nHeads * headDim);
    // the evicted entries were the 5 least attended older entries of query head 0 (KV head 0), layer 0
    const row = obs.attention![0][0];
    const evicted = weakestOlder(row, 5).sort((a, b) => a - b);
    const head = first.decision.heads.find((h) => h.layer === 0 && h.kvHead === 0)!;
    expect(head.evictedTokens).toEqual(evicted);
    expect(head.after).toBe(6);
    expect(first.decision.scores![0][0]!.length).toBe(11);
    const kept = Array.from(row).filter((_, j) => !evicted.includes(j));
    expect(Array.from(session.cache.scores(0, 0))).toEqual(kept);
    expect(Array.from(session.cache.tokens(0, 0))).toEqual(Array.from({ length: 11 }, (_, j) => j).filter((j) => !evicted.includes(j)));

    await session.run(6, { stopAtEos: false });
    expect(session.memory().entries).toEqual([
      [6, 6],
      [6, 6],
    ]);
    const snapshot = session.snapshot();
    expect(snapshot.policy.state).toEqual({ decisions: 4 * 7 });
    await session.run(2, { stopAtEos: false });
    expect(session.policy.getState()).toEqual({ decisions: 4 * 9 });
    session.restore(snapshot);
    expect(session.policy.getState()).toEqual({ decisions: 4 * 7 });
    session.setPolicy('full');
    expect(Number.isNaN(session.cache.scores(0, 0)[0])).toBe(true); // the new policy does not inherit scores
  });
});
