/** RazorAttention's probe: index arithmetic on hand-made rows, token drawing, and the engine run. */
import { describe, expect, it } from 'vitest';
import { echoTargets, inductionTargets, isScoredRow, probeTokens, runRazorProbe, scoreProbeRow, type ProbeLayout } from '../../engine/calibration/probe.ts';
import { fixtureModel } from '../engine/helpers/fixture.ts';

// BOS at 0, then a b c | a b c | a b c  (L = 3, R = 3): positions 1..9
const layout: ProbeLayout = { repeatLength: 3, repeats: 3, offset: 1 };

describe('probe index arithmetic', () => {
  it('echo targets are the same element in every earlier repeat; induction targets the token after each', () => {
    expect(echoTargets(0, layout)).toEqual([]); // BOS
    expect(echoTargets(2, layout)).toEqual([]); // repeat 0: nothing earlier
    expect(echoTargets(4, layout)).toEqual([1]); // 'a' of repeat 1 ← 'a' of repeat 0
    expect(inductionTargets(4, layout)).toEqual([2]); // the 'b' that followed it
    expect(echoTargets(6, layout)).toEqual([3]); // 'c' of repeat 1
    expect(inductionTargets(6, layout)).toEqual([4]); // after 'c' (3) came 'a' of repeat 1 (4)
    expect(echoTargets(8, layout)).toEqual([2, 5]); // 'b' of repeat 2
    expect(inductionTargets(8, layout)).toEqual([3, 6]);
    expect(echoTargets(9, layout)).toEqual([3, 6]);
    expect(inductionTargets(9, layout)).toEqual([4, 7]);
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].filter((p) => isScoredRow(p, layout))).toEqual([4, 5, 6, 7, 8, 9]);
    // without BOS
    expect(echoTargets(5, { repeatLength: 3, repeats: 3, offset: 0 })).toEqual([2]);
  });

  it('scores a row by the mass on those targets', () => {
    // query at position 8 ('b', repeat 2) sees entries 0..8
    const row = [0.1, 0, 0.05, 0.2, 0, 0.3, 0.25, 0, 0.1];
    const { echo, induction } = scoreProbeRow(row, 8, layout);
    expect(echo).toBeCloseTo(0.05 + 0.3, 12); // positions 2, 5
    expect(induction).toBeCloseTo(0.2 + 0.25, 12); // positions 3, 6
  });

  it('draws distinct non-special tokens, repeats them after BOS, deterministically per seed', () => {
    const ids = probeTokens({ repeatLength: 50, repeats: 4, seed: 3, vocabSize: 60, bos: 1, exclude: [2, 0] });
    expect(ids.length).toBe(1 + 200);
    expect(ids[0]).toBe(1);
    const seq = ids.slice(1, 51);
    expect(new Set(seq).size).toBe(50);
    expect(seq.some((t) => t <= 2)).toBe(false);
    expect(ids.slice(51, 101)).toEqual(seq);
    expect(ids.slice(151)).toEqual(seq);
    expect(probeTokens({ repeatLength: 50, repeats: 4, seed: 3, vocabSize: 60, bos: 1, exclude: [2, 0] })).toEqual(ids);
    expect(probeTokens({ repeatLength: 50, repeats: 4, seed: 4, vocabSize: 60, bos: 1, exclude: [2, 0] })).not.toEqual(ids);
    expect(() => probeTokens({ repeatLength: 58, repeats: 2, seed: 1, vocabSize: 60, bos: 1, exclude: [2, 0] })).toThrow(/distinct tokens/);
  });
});

describe('probe through the engine (tiny fixture)', () => {
  it('gives masses in [0, 1], independent of how the prompt is split into pieces', async () => {
    const model = await fixtureModel();
    const a = await runRazorProbe(model, { repeatLength: 30, rowsPerPiece: 7 });
    const b = await runRazorProbe(model, { repeatLength: 30, rowsPerPiece: 200 });
    expect(a.rows).toBe(90);
    expect(a.echo.length).toBe(2);
    expect(a.echo[0].length).toBe(4);
    for (const m of [a.echo, a.induction]) for (const row of m) for (const x of row) expect(x).toBeGreaterThanOrEqual(0), expect(x).toBeLessThanOrEqual(1);
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 4; h++) {
        expect(a.echo[l][h]).toBeCloseTo(b.echo[l][h], 5);
        expect(a.induction[l][h]).toBeCloseTo(b.induction[l][h], 5);
      }
    }
    await expect(runRazorProbe(model, { repeatLength: 100 })).rejects.toThrow(/needs 401 positions, the model's context is 256/);
  });
});
