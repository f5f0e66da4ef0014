/** A short text report of a calibration (for `kvscope calibrate` and logs). Browser-safe. */
import { razorRetrievalHeads } from '../policies/razor.ts';
import { topHeads } from '../policies/compresskv.ts';
import { explainedVariance } from '../quant/pca.ts';
import type { Calibration } from './format.ts';
import type { PcaBasisJson } from './projections.ts';

/** Components a basis needs to explain 90 % of its variance. */
function rank90(basis: PcaBasisJson): number {
  const explained = explainedVariance(basis.eigenvalues);
  return explained.findIndex((x) => x >= 0.9) + 1;
}

function heads(matrix: readonly (readonly number[])[], above: number, limit = 12): string {
  const list = matrix
    .flatMap((row, l) => row.map((score, h) => ({ l, h, score })))
    .filter((x) => x.score > above)
    .sort((a, b) => b.score - a.score || a.l - b.l || a.h - b.h);
  if (list.length === 0) return 'none';
  const shown = list.slice(0, limit).map((x) => `L${x.l}H${x.h} ${x.score.toFixed(2)}`);
  return shown.join(', ') + (list.length > limit ? `, … (${list.length} in all)` : '');
}

/** Lines describing what each section found (L = layer, H = query head). */
export function formatCalibration(calibration: Calibration): string {
  const { model } = calibration;
  const lines = [`calibration of ${model.id} (${model.nLayers} layers × ${model.nHeads} heads, ${model.nKvHeads} KV heads)`];
  const r = calibration.razor;
  if (r) {
    lines.push(`RazorAttention probe: BOS + ${r.repeatLength} random tokens × ${r.repeats}, ${r.sequences} sequence(s), ${r.rows} rows scored`);
    lines.push(`  induction > 0.1: ${heads(r.induction, 0.1)}`);
    lines.push(`  echo > 0.1:      ${heads(r.echo, 0.1)}`);
    const kv = razorRetrievalHeads(r, model.nKvHeads, 0.01, 0.14, 'max');
    const chosen = kv.flatMap((row, l) => row.flatMap((x, h) => (x ? [`L${l}/kv${h}`] : [])));
    lines.push(`  razor retrieval KV heads (defaults 1% echo ∪ 14% induction, max over group): ${chosen.join(' ') || 'none'}`);
  }
  const t = calibration.retrieval;
  if (t) {
    lines.push(`Passkey retrieval: ${t.successes}/${t.trials} prompts of ${t.targetTokens} tokens answered, scores over ${t.averagedOver}`);
    lines.push(`  Wu et al. > ${t.threshold}: ${heads(t.wu, t.threshold)}`);
    lines.push(`  semantic (CompressKV) > ${t.threshold}: ${heads(t.semantic, t.threshold)}`);
    const k = calibration.layerError?.topHeads ?? 4;
    lines.push(`  top-${k} semantic heads per layer: ${t.semantic.map((row, l) => `L${l}[${topHeads(row, k).join(',')}]`).join(' ')}`);
  }
  const e = calibration.layerError;
  if (e) {
    lines.push(`Layer output error (budget ${e.budget}, window ${e.window}, ${e.prompts}×(${e.promptTokens} + ${e.decodeTokens}) tokens):`);
    lines.push(`  e_l = ${e.normalized.map((x) => x.toFixed(3)).join(' ')}`);
  }
  const p = calibration.projections;
  if (p) {
    lines.push(`PCA bases: ${p.prompts} × ${p.tokens} held-out tokens, ${p.rows} rows per head, head dim ${p.headDim}`);
    lines.push(`  components for 90 % variance, keys (post-RoPE) per layer/KV head: ${p.keys.map((row) => row.map(rank90).join('/')).join(' ')}`);
    lines.push(`  values: ${p.values.map((row) => row.map(rank90).join('/')).join(' ')}`);
    if (p.joint) {
      const w = p.joint.keys[0]?.mean.length ?? 0;
      lines.push(`  joint (${w} wide) keys pre-RoPE ${p.joint.keys.map(rank90).join(' ')}; post-RoPE ${p.joint.keysPost.map(rank90).join(' ')}; values ${p.joint.values.map(rank90).join(' ')}`);
    }
  }
  if (calibration.seconds !== undefined) lines.push(`(${calibration.seconds} s)`);
  return lines.join('\n');
}
