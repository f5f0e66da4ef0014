/** Induction heads (engine/metrics/induction.ts): the target arithmetic, the mass sums, the run on the tiny fixture. */
import { describe, expect, it } from 'vitest';
import { addInductionMass, inductionHeads, predictedCopy } from '../../engine/metrics/induction.ts';
import { fixtureModel } from './helpers/fixture.ts';

// BOS at 0, first copy at 1..3, second copy at 4..6
const layout = { repeatLength: 3, repeats: 2, offset: 1 };

describe('induction targets and sums', () => {
  it('says which copy a predicted position belongs to (element 0 of a copy and BOS: neither)', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((p) => predictedCopy(p, layout))).toEqual([null, null, 0, 0, null, 1, 1, null]);
  });

  it('adds the attention second-copy queries put on the token after the first copy of their token', () => {
    // one head, one chunk of all 7 positions over an empty cache: rows [7 positions] of 7 entries
    const q = 7;
    const attn = new Float32Array(q * q);
    const set = (row: number, col: number, w: number) => (attn[row * q + col] = w);
    set(3, 1, 0.9); // a first-copy row: never scored
    set(4, 2, 0.8); // element 0 of copy 2 → element 1 of copy 1 (position 2)
    set(4, 1, 0.1); // its echo (same token), not the induction target
    set(5, 3, 0.5);
    set(6, 4, 0.2); // the token after the first copy's last element is copy 2's first
    const sums = new Float64Array(1);
    expect(addInductionMass(attn, 1, q, 0, 0, layout, sums)).toBe(3);
    expect(sums[0]).toBeCloseTo(1.5, 6);
    // the same rows fed as a later chunk (3 cached slots, 4 new rows at positions 3..6)
    const rows = 4;
    const chunk = new Float32Array(rows * (3 + rows));
    chunk[1 * 7 + 2] = 0.8; // row of position 4
    chunk[2 * 7 + 3] = 0.5; // position 5
    chunk[3 * 7 + 4] = 0.2; // position 6
    const later = new Float64Array(1);
    expect(addInductionMass(chunk, 1, rows, 3, 3, layout, later)).toBe(3);
    expect(later[0]).toBeCloseTo(1.5, 6);
  });
});

describe('inductionHeads (tiny fixture)', () => {
  it('scores every query head, ranks them and compares the copies’ losses', async () => {
    const model = await fixtureModel();
    const report = await inductionHeads(model, { repeatLength: 40, sequences: 2, seed: 3, chunk: 32 });
    expect(report).toMatchObject({ sequences: 2, repeatLength: 40, rows: 40, threshold: 0.3 });
    expect(report.scores).toHaveLength(2);
    for (const row of report.scores) {
      expect(row).toHaveLength(4);
      for (const s of row) expect(s > 0 && s < 1).toBe(true);
    }
    expect(report.best).toHaveLength(8);
    for (let i = 1; i < report.best.length; i++) expect(report.best[i - 1].score).toBeGreaterThanOrEqual(report.best[i].score);
    expect(report.best[0].score).toBe(Math.max(...report.scores.flat()));
    expect(report.heads.every((h) => h.score >= 0.3)).toBe(true);
    expect(Number.isFinite(report.firstCopyLoss) && Number.isFinite(report.secondCopyLoss)).toBe(true);
    expect(report.uniform).toBeGreaterThan(0);
    // chunking does not change the figures; the seed does
    const again = await inductionHeads(model, { repeatLength: 40, sequences: 2, seed: 3, chunk: 128 });
    expect(again.scores[1][2]).toBeCloseTo(report.scores[1][2], 5);
    expect(again.secondCopyLoss).toBeCloseTo(report.secondCopyLoss, 4);
    const other = await inductionHeads(model, { repeatLength: 40, sequences: 2, seed: 4 });
    expect(other.firstCopyLoss).not.toBe(report.firstCopyLoss);
    // a threshold of 0 flags every head
    expect((await inductionHeads(model, { repeatLength: 20, sequences: 1, threshold: 0 })).heads).toHaveLength(8);
  });

  it('refuses a sequence that does not fit the context twice', async () => {
    const model = await fixtureModel();
    await expect(inductionHeads(model, { repeatLength: 128 })).rejects.toThrow(/1 \+ 2n ≤ 256 \(the context\), got n = 128/);
  });
});
