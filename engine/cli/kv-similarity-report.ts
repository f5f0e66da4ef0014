/**
 * The text report of `kvscope inspect --kv-similarity` (engine/metrics/kv-similarity.ts): per layer
 * the adjacent-token cosine of keys (as cached and with RoPE removed) and values, per adjacent
 * layer pair the per-token cosine of keys and values and MiniCache's angle Ω.
 */
import type { AdjacentTokenStats, CosineDistribution, Distribution, KvSimilarityReport } from '../metrics/kv-similarity.ts';

const f = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : '  —  ').padStart(6);
const share = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(0)}%` : '—').padStart(5);
const degrees = (x: number) => (Number.isFinite(x) ? `${((x * 180) / Math.PI).toFixed(1)}°` : '—').padStart(6);

const COSINE_HEAD = '  mean median    p10    p90  >0.9  >0.8  >0.5';
function cosineRow(d: CosineDistribution): string {
  return `${f(d.mean)} ${f(d.median)} ${f(d.p10)} ${f(d.p90)} ${share(d.above['0.9'])} ${share(d.above['0.8'])} ${share(d.above['0.5'])}`;
}

function angleRow(d: Distribution): string {
  return `${degrees(d.median)} ${degrees(d.p90)}`;
}

export function formatKvSimilarity(report: KvSimilarityReport, modelId: string): string {
  const { settings, nKvHeads } = report;
  const lines: string[] = [];
  lines.push(`${modelId} — KV cache similarity on ${settings.windows} held-out windows of ${settings.tokens} tokens (full cache, seed ${settings.seed})`);

  const tokenTable = (title: string, pick: (s: AdjacentTokenStats) => CosineDistribution) => {
    lines.push('');
    lines.push(title);
    lines.push(`  layer ${COSINE_HEAD}   per KV head mean`);
    for (const layer of report.layers) {
      const heads = layer.heads.map((h) => f(pick(h).mean).trim()).join(' ');
      lines.push(`  ${String(layer.layer).padStart(5)} ${cosineRow(pick(layer))}   ${heads}`);
    }
  };
  const pairs = `${(report.layers[0]?.keys.count ?? 0) / Math.max(1, nKvHeads)} pairs per KV head`;
  tokenTable(`Adjacent tokens — keys as cached (post-RoPE): cos(k_t, k_t+1) over t, pooled over ${nKvHeads} KV heads (${pairs})`, (s) => s.keys);
  tokenTable('Adjacent tokens — keys with RoPE removed (rotated back to position 0)', (s) => s.keysNoRope);
  tokenTable('Adjacent tokens — values: cos(v_t, v_t+1)', (s) => s.values);

  lines.push('');
  lines.push('Baseline — mean cos(x_t, x_t+lag) by lag: similarity that stays at large lags is a direction shared by the whole head, not locality');
  const lags = report.layers[0]?.byLag.map((m) => m.lag) ?? [];
  const lagHead = lags.map((lag) => `${lag}`.padStart(6)).join(' ');
  const kinds = [['keys as cached', 'keys'], ['keys, RoPE removed', 'keysNoRope'], ['values', 'values']] as const;
  lines.push(`  layer  ${kinds.map(([label]) => `${label.padEnd(lagHead.length)}`).join(' │ ')}`);
  lines.push(`  ${''.padEnd(5)}  ${kinds.map(() => lagHead).join(' │ ')}`);
  for (const layer of report.layers) {
    lines.push(`  ${String(layer.layer).padStart(5)}  ${kinds.map(([, kind]) => layer.byLag.map((m) => f(m[kind])).join(' ')).join(' │ ')}`);
  }

  lines.push('');
  lines.push(
    `Adjacent layers — per token and KV head, cos(x^(l−1)_t, x^l_t) and MiniCache's Ω = arccos(cos) (median, p90); ` +
      `* = deep half (both layers ≥ ${report.deepFrom}). Same with or without RoPE: both layers share the token's rotation.`,
  );
  const angleHead = `${'Ω med'.padStart(6)} ${'p90'.padStart(6)}`;
  const half = `${COSINE_HEAD}  ${angleHead}`;
  lines.push(`  ${''.padEnd(5)} ${' keys'.padEnd(half.length)} │    values`);
  lines.push(`  ${'pair'.padEnd(5)} ${half} │ ${half}`);
  for (const p of report.layerPairs) {
    const label = `${p.previous}→${p.layer}${p.deep ? '*' : ' '}`;
    lines.push(`  ${label.padEnd(5)} ${cosineRow(p.keys)}  ${angleRow(p.keyAngle)} │ ${cosineRow(p.values)}  ${angleRow(p.valueAngle)}`);
  }
  const deep = report.layerPairs.filter((p) => p.deep);
  if (deep.length) {
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    lines.push(
      `  deep half: mean key cosine ${mean(deep.map((p) => p.keys.mean)).toFixed(3)}, mean value cosine ${mean(deep.map((p) => p.values.mean)).toFixed(3)}`,
    );
  }
  lines.push('');
  lines.push(`(${report.seconds.toFixed(1)} s)`);
  return lines.map((line) => line.trimEnd()).join('\n');
}
