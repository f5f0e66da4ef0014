/**
 * What the calibrated low-rank methods (`pca`, `headmerge`) share: the calibration they need
 * (docs/calibration.md "projections"), ranks given as a count or a fraction of the width, which
 * entries a decision encodes, and one row through the codec (engine/quant/pca.ts) the way the
 * cache stores it — coefficients rounded to float32 (what is stored), then reconstructed.
 */
import type { PolicyCache } from '../cache/view.ts';
import { CalibrationError, requireCalibration } from '../calibration/format.ts';
import type { ProjectionCalibration } from '../calibration/projections.ts';
import { project, reconstruct, type PcaBasis } from '../quant/pca.ts';
import type { PolicyContext } from '../policies/types.ts';

/**
 * The `projections` section for `policyId`, checked against the model's dimensions (a clear
 * CalibrationError when missing, stale or computed for another shape); `joint` also requires the
 * joint bases.
 */
export function projectionsFor(context: PolicyContext, policyId: string, joint: boolean): ProjectionCalibration {
  const calibration = requireCalibration(context.calibration, policyId, ['projections'], context.calibrationError);
  const p = calibration.projections!;
  const { nLayers, nKvHeads, headDim } = context.dims;
  const redo = 'recompute it: kvscope calibrate <model directory>';
  if (p.headDim !== headDim || p.keys.length !== nLayers || p.keys.some((row) => row.length !== nKvHeads)) {
    throw new CalibrationError(
      `${policyId}: the calibration's projections are for ${p.keys.length} layers × ${p.keys[0]?.length ?? 0} KV heads of dim ${p.headDim}, this model has ${nLayers} × ${nKvHeads} of dim ${headDim} — ${redo}`,
    );
  }
  if (joint && !p.joint) throw new CalibrationError(`${policyId} needs the joint (all KV heads) bases in the projections section, which this calibration lacks — ${redo}`);
  return p;
}

/** A rank parameter: ≥ 1 a count (capped at `width`), below 1 a fraction of `width` (at least 1). */
export function resolveRank(value: number, width: number): number {
  const r = value >= 1 ? Math.floor(value) : Math.round(value * width);
  return Math.max(1, Math.min(width, r));
}

/** The rank parameter's description, shared by both methods. */
export function rankDescription(what: string, width: string): string {
  return `${what}: a count (≥ 1), or a fraction (< 1) of ${width}; ${width} = this side stays exact`;
}

/**
 * Entries of one head a decision encodes, ascending: plain (no codec) and older than the recent
 * window (first token < `before`), looking back from the newest entry past the window down to
 * the first entry that already has a codec (this method's or another member's): everything below
 * it was encoded or looked at by an earlier decision. So a step costs its new entries, not the
 * head; the price is that a plain entry another member of a composition creates below the coded
 * ones later (a merge) stays as that member left it.
 */
export function encodableEntries(cache: PolicyCache, layer: number, kvHead: number, before: number): number[] {
  const tokens = cache.tokens(layer, kvHead);
  const out: number[] = [];
  for (let i = cache.length(layer, kvHead) - 1; i >= 0; i--) {
    if (tokens[i] >= before) continue;
    if (cache.codec(layer, kvHead, i) !== null) break;
    out.push(i);
  }
  return out.reverse();
}

/**
 * Whether entry `index` of a head names codec group `id` (then the store holds the group: it lives
 * while a member does, so a decision need not declare it again). False for an index out of range.
 */
export function namesGroup(cache: PolicyCache, layer: number, kvHead: number, index: number, id: string): boolean {
  return index >= 0 && index < cache.length(layer, kvHead) && cache.codec(layer, kvHead, index)?.group === id;
}

/**
 * x̂ of `x[offset … offset + dim)` at `rank`: the coefficients (scratch, ≥ rank) rounded to float32
 * as the cache would store them, then reconstructed into `out[outOffset …]`.
 */
export function encodeRow(basis: PcaBasis, rank: number, x: ArrayLike<number>, offset: number, scratch: Float64Array, out: Float32Array, outOffset = 0): void {
  project(basis, x, offset, rank, scratch);
  for (let j = 0; j < rank; j++) scratch[j] = Math.fround(scratch[j]);
  reconstruct(basis, scratch, 0, rank, out, outOffset);
}
