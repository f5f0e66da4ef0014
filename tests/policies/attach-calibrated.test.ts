/** RazorAttention, CompressKV, LaCache and D2O take over a cache mid-session (setPolicy → onAttach) and keep going. */
import { describe, expect, it } from 'vitest';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';
import { tinyCalibration } from './helpers/calibration.ts';

const CASES: [string, number][] = [
  ['razor:recent=16,induction_pct=0', 4 + 1 + 16],
  ['lacache:cache_size=24,start=4', 24],
  ['d2o:heavy=12,recent=12', 24],
  // prefill-only: a handed-over cache is left as it is and decode appends
  ['compresskv:budget=24', 60 + 6],
];

describe('setPolicy to each calibrated / merging method mid-session', () => {
  it.each(CASES)('%s', async (spec, bound) => {
    const session = new Session(await fixtureModel(), { sampler: { seed: 2, temperature: 1 }, calibration: await tinyCalibration() });
    await session.prefill([1, ...tokenSequence(59, 8)]);
    await session.step();
    session.setPolicy(spec);
    for (let s = 0; s < 5; s++) {
      await session.step();
      for (let l = 0; l < session.dims.nLayers; l++) for (let h = 0; h < session.dims.nKvHeads; h++) expect(session.cache.length(l, h)).toBeLessThanOrEqual(bound);
      expect(session.nextTokenLogits!.every(Number.isFinite)).toBe(true);
    }
    if (spec.startsWith('lacache')) {
      for (let l = 0; l < session.dims.nLayers; l++) expect(Array.from(session.cache.positions(l, 0))).toEqual(Array.from({ length: session.cache.length(l, 0) }, (_, i) => i));
    }
  });
});
