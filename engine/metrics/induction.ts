/**
 * Induction heads (Olsson et al. 2022, "In-context Learning and Induction Heads"): on BOS + a
 * random token sequence of n tokens + the same sequence again, an induction head's query at the
 * second copy's element m attends to the token right after element m of the first copy (the
 * token that came next last time), and the model's loss on the second copy falls far below the
 * first's. Per layer and query head the score is that attention mass, averaged over every query
 * of the second copy; heads scoring ≥ 0.3 are flagged.
 *
 * The sequence and the targets are those of RazorAttention's probe with 2 repeats
 * (engine/calibration/probe.ts: distinct tokens, never BOS/EOS/PAD). The sequences are prefilled
 * in chunks straight through the graph on a full cache (as sinks.ts), reading attn_l and logits.
 */
import { KVCacheStore } from '../cache/store.ts';
import { inductionTargets, isScoredRow, probeTokens, type ProbeLayout } from '../calibration/probe.ts';
import type { EngineModel } from '../session.ts';
import { logSoftmax } from './softmax.ts';

export interface InductionOptions {
  /** random sequence length n (default min(256, ⌊(context − 1) / 2⌋)) */
  repeatLength?: number;
  /** sequences averaged (default 4) */
  sequences?: number;
  seed?: number;
  /** heads at or above this score are induction heads (default 0.3) */
  threshold?: number;
  /** prefill chunk (default 128) */
  chunk?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface InductionReport {
  sequences: number;
  repeatLength: number;
  /** second-copy queries scored per sequence */
  rows: number;
  threshold: number;
  /** [layer][queryHead] mean attention on the induction target */
  scores: number[][];
  /** heads ≥ threshold, best first */
  heads: { layer: number; head: number; score: number }[];
  /** the 8 best heads whatever their score, best first */
  best: { layer: number; head: number; score: number }[];
  /** what uniform attention would give the target: mean of 1/(position+1) over the scored rows */
  uniform: number;
  /** mean NLL (nats) of predicting elements 1..n−1 of the first and of the second copy */
  firstCopyLoss: number;
  secondCopyLoss: number;
}

/**
 * Adds one forward's induction mass per query head over the rows that are second-copy queries and
 * returns how many rows it counted. `attn` is [H, q, slots + q] over a full cache (entry j =
 * position j).
 */
export function addInductionMass(
  attn: Float32Array,
  nHeads: number,
  q: number,
  slots: number,
  firstPosition: number,
  layout: ProbeLayout,
  sums: Float64Array,
): number {
  const rowLength = slots + q;
  let rows = 0;
  for (let row = 0; row < q; row++) {
    const position = firstPosition + row;
    if (!isScoredRow(position, layout)) continue;
    rows++;
    const targets = inductionTargets(position, layout);
    for (let h = 0; h < nHeads; h++) {
      const base = (h * q + row) * rowLength;
      for (const t of targets) sums[h] += attn[base + t];
    }
  }
  return rows;
}

/** Which copy's element a next-token prediction at `target` (the predicted position) is: 0, 1, or null (BOS, or an element 0). */
export function predictedCopy(target: number, layout: ProbeLayout): 0 | 1 | null {
  const i = target - layout.offset;
  if (i < 0 || i >= 2 * layout.repeatLength) return null;
  if (i % layout.repeatLength === 0) return null; // element 0 of a copy follows nothing it could copy
  return i < layout.repeatLength ? 0 : 1;
}

function ranked(scores: number[][]): { layer: number; head: number; score: number }[] {
  const all = scores.flatMap((row, layer) => row.map((score, head) => ({ layer, head, score })));
  return all.sort((a, b) => b.score - a.score || a.layer - b.layer || a.head - b.head);
}

/** Runs the repeated random sequences through the graph and scores every query head. */
export async function inductionHeads(model: EngineModel, options: InductionOptions = {}): Promise<InductionReport> {
  const forward = model.forward;
  const { nLayers, nHeads, contextLength, vocabSize } = forward.dims;
  const special = model.manifest.tokenizer;
  const bos = special.bos_id ?? null;
  const offset = bos !== null ? 1 : 0;
  const repeatLength = options.repeatLength ?? Math.min(256, Math.floor((contextLength - offset) / 2));
  const sequences = options.sequences ?? 4;
  const threshold = options.threshold ?? 0.3;
  const chunk = options.chunk ?? 128;
  if (repeatLength < 2 || offset + 2 * repeatLength > contextLength) {
    throw new RangeError(`the induction sequence needs 2 ≤ n and ${offset} + 2n ≤ ${contextLength} (the context), got n = ${repeatLength}`);
  }
  const layout: ProbeLayout = { repeatLength, repeats: 2, offset };
  const sums = Array.from({ length: nLayers }, () => new Float64Array(nHeads));
  const loss = [
    { sum: 0, count: 0 },
    { sum: 0, count: 0 },
  ];
  let rows = 0;
  let uniform = 0;
  for (let s = 0; s < sequences; s++) {
    const ids = probeTokens({
      repeatLength,
      repeats: 2,
      seed: ((options.seed ?? 0) * 7919 + s) >>> 0,
      vocabSize,
      bos,
      exclude: [special.eos_id, ...(special.pad_id !== null ? [special.pad_id] : [])],
    });
    const cache = new KVCacheStore(forward.dims, null, ids.length);
    for (let start = 0; start < ids.length; start += chunk) {
      const q = Math.min(chunk, ids.length - start);
      const positions = Array.from({ length: q }, (_, i) => start + i);
      const result = await forward.run({ inputIds: ids.slice(start, start + q), positionIds: positions, layers: cache.buildFeeds(q), attention: true, queries: false });
      let counted = 0;
      for (let l = 0; l < nLayers; l++) counted = addInductionMass(result.attention![l], nHeads, q, result.pastLengths[l], start, layout, sums[l]);
      rows += counted;
      for (let row = 0; row < q; row++) {
        const position = start + row;
        if (isScoredRow(position, layout)) uniform += inductionTargets(position, layout).length / (position + 1);
        const copy = predictedCopy(position + 1, layout);
        if (copy === null) continue;
        loss[copy].sum -= logSoftmax(result.logits.subarray(row * vocabSize, (row + 1) * vocabSize))[ids[position + 1]];
        loss[copy].count++;
      }
      cache.appendForward(result.keys, result.values, q, positions, start);
    }
    options.onProgress?.(s + 1, sequences);
  }
  const scores = sums.map((row) => Array.from(row, (v) => (rows ? v / rows : 0)));
  const order = ranked(scores);
  return {
    sequences,
    repeatLength,
    rows: rows / sequences,
    threshold,
    scores,
    heads: order.filter((h) => h.score >= threshold),
    best: order.slice(0, 8),
    uniform: rows ? uniform / rows : 0,
    firstCopyLoss: loss[0].count ? loss[0].sum / loss[0].count : NaN,
    secondCopyLoss: loss[1].count ? loss[1].sum / loss[1].count : NaN,
  };
}
