/** Computing the projections section with the engine (calibration/projections-run.ts) on the tiny fixture. */
import { describe, expect, it } from 'vitest';
import { computeCalibration } from '../../engine/calibration/compute.ts';
import { CalibrationError } from '../../engine/calibration/format.ts';
import type { PcaBasisJson } from '../../engine/calibration/projections.ts';
import { runProjections } from '../../engine/calibration/projections-run.ts';
import { heldoutWindows } from '../../engine/metrics/heldout.ts';
import { Rope } from '../../engine/model/rope.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel } from '../engine/helpers/fixture.ts';

const documents = Array.from({ length: 30 }, (_, i) => `Note ${i}: the ferry leaves at dawn, the gulls follow it past the lighthouse, and the harbour wakes slowly behind them.`);

/** Σ λ_j u_j u_jᵀ restricted to rows / columns [from, from + n). */
function covarianceBlock(basis: PcaBasisJson, from: number, n: number): number[] {
  const out = new Array<number>(n * n).fill(0);
  basis.components.forEach((u, j) => {
    for (let a = 0; a < n; a++) for (let b = 0; b < n; b++) out[a * n + b] += basis.eigenvalues[j] * u[from + a] * u[from + b];
  });
  return out;
}

describe('calibration: projections (PCA bases computed with the engine)', () => {
  it('is deterministic; shapes per layer × KV head and joint per layer; the joint blocks are the heads’ own statistics', async () => {
    const model = await fixtureModel();
    const options = { prompts: 2, tokens: 40, seed: 3 };
    const p = await runProjections(model, documents, options);
    expect(await runProjections(model, documents, options)).toEqual(p);
    expect({ prompts: p.prompts, tokens: p.tokens, rows: p.rows, headDim: p.headDim }).toEqual({ prompts: 2, tokens: 40, rows: 80, headDim: 8 });
    expect(p.keys.map((row) => row.length)).toEqual([2, 2]);
    expect(p.joint!.keys.map((b) => b.mean.length)).toEqual([16, 16]);
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 2; h++) {
        // the same rows: head h's block of the joint covariance is the head's covariance
        const joint = covarianceBlock(p.joint!.values[l], h * 8, 8);
        covarianceBlock(p.values[l][h], 0, 8).forEach((x, i) => expect(joint[i]).toBeCloseTo(x, 8));
        const post = covarianceBlock(p.joint!.keysPost[l], h * 8, 8);
        covarianceBlock(p.keys[l][h], 0, 8).forEach((x, i) => expect(post[i]).toBeCloseTo(x, 8));
        expect(p.joint!.keysPost[l].mean.slice(h * 8, h * 8 + 8)).toEqual(p.keys[l][h].mean.map((x) => expect.closeTo(x, 10)));
      }
    }
  });

  it('the joint key basis is of pre-RoPE keys: its mean is the mean of the cached keys rotated back from their positions', async () => {
    const model = await fixtureModel();
    const p = await runProjections(model, documents, { prompts: 1, tokens: 30, seed: 5 });
    const [ids] = heldoutWindows(model.tokenizer!, documents, { windows: 1, tokens: 30, seed: 5 });
    const session = new Session(model);
    await session.prefill(ids);
    const rope = new Rope(model.manifest.rope, 8);
    for (let l = 0; l < 2; l++) {
      const mean = new Array<number>(16).fill(0);
      for (let h = 0; h < 2; h++) {
        const keys = session.cache.keys(l, h);
        for (let i = 0; i < 30; i++) {
          const k = rope.rerotated(keys.subarray(i * 8, i * 8 + 8) as Float32Array, session.cache.positions(l, h)[i], 0);
          for (let c = 0; c < 8; c++) mean[h * 8 + c] += k[c] / 30;
        }
      }
      p.joint!.keys[l].mean.forEach((x, i) => expect(x).toBeCloseTo(mean[i], 5));
      // and differs from the post-RoPE mean (positions 0…29 rotate them)
      expect(Math.max(...p.joint!.keys[l].mean.map((x, i) => Math.abs(x - p.joint!.keysPost[l].mean[i])))).toBeGreaterThan(1e-3);
    }
  });

  it('computeCalibration computes it alone, seeded, and needs documents', async () => {
    const model = await fixtureModel();
    const cal = await computeCalibration(model, { documents, sections: ['projections'], projections: { prompts: 1, tokens: 24 } });
    expect(cal.razor ?? cal.retrieval ?? cal.layerError).toBeUndefined();
    expect(cal.projections!.seed).toBe(1);
    await expect(computeCalibration(model, { sections: ['projections'] })).rejects.toThrow(CalibrationError);
    const wide = await runProjections(model, documents, { prompts: 1, tokens: 24, jointMaxWidth: 8 });
    expect(wide.joint).toBeUndefined();
  });
});
