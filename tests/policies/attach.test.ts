/** Every method of this batch can take over a cache mid-session (setPolicy → onAttach) and keep going. */
import { describe, expect, it } from 'vitest';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';

const CASES: [string, number][] = [
  ['streaming:sinks=4,recent=20', 24],
  ['streaming:sinks=4,recent=20,positions=p1', 24],
  ['h2o:heavy=12,recent=12', 24],
  ['tova:budget=24', 24],
  // prefill-only methods leave a handed-over cache as it is and append
  ['snapkv:budget=24,window=8', 60 + 6],
  ['windowkv:budget=24,suffix=8', 60 + 6],
];

describe('setPolicy to each method mid-session', () => {
  it.each(CASES)('%s', async (spec, bound) => {
    const session = new Session(await fixtureModel(), { sampler: { seed: 2, temperature: 1 } });
    await session.prefill([1, ...tokenSequence(59, 8)]);
    await session.step();
    session.setPolicy(spec);
    for (let s = 0; s < 5; s++) {
      await session.step();
      for (let l = 0; l < session.dims.nLayers; l++) for (let h = 0; h < session.dims.nKvHeads; h++) expect(session.cache.length(l, h)).toBeLessThanOrEqual(bound);
      expect(session.nextTokenLogits!.every(Number.isFinite)).toBe(true);
    }
  });
});
