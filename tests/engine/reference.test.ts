/** The reference lane (engine/reference.ts) on the tiny fixture: lockstep metrics, snapshots, policy switches. */
import { describe, expect, it } from 'vitest';
import { heldBeforeDecision, ReferenceLane, type ReferenceMetrics } from '../../engine/reference.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from './helpers/fixture.ts';

const PROMPT = [1, ...tokenSequence(24, 17)];

async function lanes(policy: string, seed = 3) {
  const model = await fixtureModel();
  const session = new Session(model, { policy, sampler: { seed, temperature: 0.9 } });
  await session.prefill(PROMPT);
  const lane = await ReferenceLane.follow(model, session);
  return { model, session, lane };
}

async function steps(session: Session, lane: ReferenceLane, n: number): Promise<ReferenceMetrics[]> {
  const out: ReferenceMetrics[] = [];
  for (let i = 0; i < n; i++) out.push((await lane.step(session)).metrics!);
  return out;
}

describe('ReferenceLane', () => {
  it('with policy=full: KL 0, agreement 1, attention mass 1, memory ratio 1', async () => {
    const { session, lane } = await lanes('full');
    const metrics = await steps(session, lane, 12);
    expect(metrics).toHaveLength(12);
    for (const m of metrics) {
      expect(m.kl).toBeLessThan(1e-6);
      expect(m.agree).toBe(true);
      expect(m.mass).toBeCloseTo(1, 5);
      for (const layer of m.massByLayer) expect(layer).toBeCloseTo(1, 5);
      expect(m.memoryRatio).toBe(1);
      expect(m.policyBytes).toBe(m.fullBytes);
    }
    expect(metrics.map((m) => m.step)).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect(lane.tokens).toEqual(session.tokens);
  });

  it('with window:size=8 after 40 steps: mass < 1 and the memory ratio matches the byte counts', async () => {
    const { session, lane } = await lanes('window:size=8');
    const metrics = await steps(session, lane, 40);
    const last = metrics.at(-1)!;
    expect(last.mass).toBeLessThan(1);
    expect(last.mass).toBeGreaterThan(0);
    for (const layer of last.massByLayer) expect(layer).toBeLessThanOrEqual(1 + 1e-6);
    expect(last.massByHead).toHaveLength(session.dims.nLayers);
    expect(last.massByHead[0]).toHaveLength(session.dims.nHeads);
    const { nLayers, nKvHeads, headDim } = session.dims;
    const tokens = PROMPT.length + 40;
    const fullBytes = 2 * tokens * nLayers * nKvHeads * headDim * 4;
    const heldBytes = 2 * 8 * nLayers * nKvHeads * headDim * 4;
    expect(last.fullBytes).toBe(fullBytes);
    expect(last.policyBytes).toBe(heldBytes);
    expect(last.memoryRatio).toBeCloseTo(heldBytes / fullBytes, 12);
    expect(last.memoryRatio).toBeCloseTo(session.memory().ratio, 12);
    // the lane saw the same tokens and its KL is finite and non-negative
    expect(lane.tokens).toEqual(session.tokens);
    for (const m of metrics) expect(m.kl).toBeGreaterThanOrEqual(0);
    expect(metrics.some((m) => m.kl > 1e-4)).toBe(true);
  });

  it('works inside Session.run (observe in onStep) and after a late start (follow mid-session)', async () => {
    const model = await fixtureModel();
    const session = new Session(model, { policy: 'h2o:heavy=6,recent=6', sampler: { seed: 9, temperature: 1 } });
    await session.prefill(PROMPT);
    await session.run(5, { stopAtEos: false });
    const lane = await ReferenceLane.follow(model, session);
    const seen: ReferenceMetrics[] = [];
    await session.run(10, { stopAtEos: false, onStep: async (trace) => void seen.push((await lane.observe(session, trace))!) });
    expect(seen.map((m) => m.step)).toEqual([5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    expect(seen.every((m) => m.mass < 1 && m.memoryRatio < 1)).toBe(true);
  });

  it('reconstructs exactly what the policy held when the query attended (evictions and merges)', async () => {
    for (const spec of ['h2o:heavy=5,recent=5', 'd2o:heavy=6,recent=4,merge_bias=log_count', 'streaming:sinks=2,recent=6']) {
      const { session, lane } = await lanes(spec, 5);
      for (let i = 0; i < 15; i++) {
        const { trace } = await lane.step(session);
        const held = heldBeforeDecision(session, trace);
        for (let l = 0; l < session.dims.nLayers; l++) {
          for (let h = 0; h < session.dims.nKvHeads; h++) {
            // trace.attention records the entries the step's query saw (the cache as fed + the new token)
            const entries = trace.attention![l].entries[h];
            const expected = new Set<number>();
            entries.tokens.forEach((t, k) => (entries.origins?.[k] ?? [t]).forEach((o) => expected.add(o)));
            const got = new Set<number>();
            held[l][h].forEach((v, t) => v && got.add(t));
            expect([...got].sort((a, b) => a - b), `${spec} step ${i} L${l} kv${h}`).toEqual([...expected].sort((a, b) => a - b));
          }
        }
      }
    }
  });

  it('snapshot/restore (stepping back) reproduces the same metrics', async () => {
    const { session, lane } = await lanes('h2o:heavy=6,recent=4');
    await steps(session, lane, 6);
    const snap = { policy: session.snapshot(), lane: lane.snapshot() };
    const first = await steps(session, lane, 8);
    session.restore(snap.policy);
    lane.restore(snap.lane);
    expect(lane.tokens).toEqual(session.tokens);
    const again = await steps(session, lane, 8);
    expect(again).toEqual(first);
  });

  it('catchUp() teacher-forces what the policy fed on its own; a lane off the path is refused', async () => {
    const { session, lane } = await lanes('h2o:heavy=6,recent=4');
    const snap = lane.snapshot();
    await steps(session, lane, 4);
    const reference = await steps(session, lane, 3);
    lane.restore(snap);
    await lane.catchUp(session);
    expect(lane.tokens).toEqual(session.tokens);
    expect((await lane.step(session)).metrics!.step).toBe(7);
    expect(reference.map((m) => m.step)).toEqual([4, 5, 6]);

    const other = await lanes('full', 99);
    await steps(other.session, other.lane, 2);
    expect(other.lane.tokens.slice(PROMPT.length)).not.toEqual(session.tokens.slice(PROMPT.length, PROMPT.length + 2));
    await expect(other.lane.catchUp(session)).rejects.toThrow(/not a prefix/);
  });

  it('follows a policy switch: mass 1 under full, < 1 after switching to a window', async () => {
    const { session, lane } = await lanes('full');
    const before = await steps(session, lane, 6);
    expect(before.every((m) => Math.abs(m.mass - 1) < 1e-5)).toBe(true);
    session.setPolicy('window:size=8');
    const after = await steps(session, lane, 6);
    expect(after.map((m) => m.step)).toEqual([6, 7, 8, 9, 10, 11]);
    expect(after.every((m) => m.mass < 1 && m.memoryRatio < 1)).toBe(true);
  });

  it('refuses to skip a step and stops cleanly when the full lane runs out of context', async () => {
    const { session, lane } = await lanes('full');
    await session.step();
    const trace = await session.step();
    await expect(lane.observe(session, trace)).rejects.toThrow(/observe every step, in order/);

    // a P2 policy keeps positions small, so it can feed more tokens than the full cache has positions
    const model = await fixtureModel();
    const p2 = new Session(model, { policy: 'streaming:sinks=4,recent=16,positions=p2', sampler: { seed: 1, temperature: 1 } });
    await p2.prefill(tokenSequence(250, 2));
    const late = await ReferenceLane.follow(model, p2);
    let stoppedAt = -1;
    for (let i = 0; i < 10; i++) {
      const { metrics } = await late.step(p2);
      if (!metrics) {
        stoppedAt = i;
        break;
      }
    }
    expect(stoppedAt).toBe(6);
    expect(late.stopped).toMatch(/ran out of context/);
  });
});
