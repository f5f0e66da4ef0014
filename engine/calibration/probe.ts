/**
 * RazorAttention's data-free head probe (Tang et al., 2024, "RazorAttention: Efficient KV Cache
 * Compression Through Retrieval Heads", §3; MindSpore Golden-Stick `razor_attention.py`, read to
 * understand the index arithmetic): feed BOS followed by a random token sequence of length L
 * repeated R times (Golden-Stick: L = 2500, R = 4). For a query in repeat k ≥ 1 (0-based) at
 * element m, the token is the same as at element m of every earlier repeat:
 *
 *   echo targets       offset + k'·L + m       for k' < k   (the same token, seen before)
 *   induction targets  offset + k'·L + m + 1   for k' < k   (the token that followed it)
 *
 * where offset = 1 with a BOS at position 0. A head's echo (induction) score is its attention mass
 * on the echo (induction) targets. Our reading where the reference is loose:
 *  - the score is the mean over the scored rows (every query in repeats 1..R−1), so it is a mass in
 *    [0, 1]; Golden-Stick takes the mean over the whole S×S masked matrix, which ranks heads the
 *    same way but is not interpretable as a mass;
 *  - its mask loop also marks BOS (column 0) as an echo target of the last token of repeat 0; we
 *    score by the element index only, so BOS is never a target;
 *  - the random tokens of one repeat are distinct (drawn without replacement from every id except
 *    BOS/EOS/PAD), so "the same token" is unambiguous; Golden-Stick draws with replacement.
 * The reduction to KV heads (Golden-Stick: max over the group) belongs to the policy (razor.ts).
 *
 * Rows are scored from the full attention rows the session hands a policy in the prefill
 * observation (PrefillObservation.windowAttention); the prompt is prefilled in pieces so only a few
 * rows are held at a time.
 */
import { Xoshiro128 } from '../sampling.ts';
import { Session, type EngineModel } from '../session.ts';
import { randomIndex } from '../metrics/heldout.ts';
import type { RazorCalibration } from './format.ts';
import { RECORDER_ID, recorderPolicy } from './recorder.ts';

export interface ProbeLayout {
  /** random sequence length L */
  repeatLength: number;
  /** repeats R */
  repeats: number;
  /** position of element 0 of repeat 0 (1 with a BOS, else 0) */
  offset: number;
}

/** Repeat index k and element m of a probe position, or null for BOS. */
export function probeElement(position: number, layout: ProbeLayout): { repeat: number; element: number } | null {
  const i = position - layout.offset;
  if (i < 0) return null;
  return { repeat: Math.floor(i / layout.repeatLength), element: i % layout.repeatLength };
}

/** Echo targets of the query at `position`: the same element in every earlier repeat (ascending). */
export function echoTargets(position: number, layout: ProbeLayout): number[] {
  const at = probeElement(position, layout);
  if (!at) return [];
  const out: number[] = [];
  for (let k = 0; k < at.repeat; k++) out.push(layout.offset + k * layout.repeatLength + at.element);
  return out;
}

/** Induction targets of the query at `position`: the token after each echo target. */
export function inductionTargets(position: number, layout: ProbeLayout): number[] {
  return echoTargets(position, layout).map((p) => p + 1);
}

/** True when the query at `position` is scored (it is in repeat 1 or later). */
export function isScoredRow(position: number, layout: ProbeLayout): boolean {
  const at = probeElement(position, layout);
  return at !== null && at.repeat >= 1 && at.repeat < layout.repeats;
}

/** Echo and induction mass of one attention row (entry j = position j, as in a full cache). */
export function scoreProbeRow(row: ArrayLike<number>, position: number, layout: ProbeLayout): { echo: number; induction: number } {
  let echo = 0;
  let induction = 0;
  for (const p of echoTargets(position, layout)) echo += row[p];
  for (const p of inductionTargets(position, layout)) induction += row[p];
  return { echo, induction };
}

/**
 * The probe prompt: [BOS] + L distinct random ids (never BOS/EOS/PAD) repeated R times.
 * Deterministic per seed.
 */
export function probeTokens(options: { repeatLength: number; repeats: number; seed: number; vocabSize: number; bos: number | null; exclude: readonly number[] }): number[] {
  const excluded = new Set(options.exclude);
  if (options.bos !== null) excluded.add(options.bos);
  const candidates: number[] = [];
  for (let id = 0; id < options.vocabSize; id++) if (!excluded.has(id)) candidates.push(id);
  if (candidates.length < options.repeatLength) {
    throw new RangeError(`the probe needs ${options.repeatLength} distinct tokens, the vocabulary offers ${candidates.length}`);
  }
  const rng = new Xoshiro128(options.seed);
  // partial Fisher–Yates: the first repeatLength candidates become a uniform sample without replacement
  for (let i = 0; i < options.repeatLength; i++) {
    const j = i + randomIndex(rng, candidates.length - i);
    [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
  }
  const sequence = candidates.slice(0, options.repeatLength);
  const ids = options.bos !== null ? [options.bos] : [];
  for (let r = 0; r < options.repeats; r++) ids.push(...sequence);
  return ids;
}

export interface ProbeOptions {
  /** L; default min(256, ⌊(context − 1) / repeats⌋) */
  repeatLength?: number;
  /** R; default 4 */
  repeats?: number;
  /** random sequences averaged; default 1 */
  sequences?: number;
  seed?: number;
  /** prompt rows per prefill piece (bounds the memory of the captured rows); default 64 */
  rowsPerPiece?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Runs the probe through the engine (full cache) and returns the per-query-head scores. */
export async function runRazorProbe(model: EngineModel, options: ProbeOptions = {}): Promise<RazorCalibration> {
  const { nLayers, nHeads, contextLength, vocabSize } = model.forward.dims;
  const special = model.manifest.tokenizer;
  const repeats = options.repeats ?? 4;
  const bos = special.bos_id ?? null;
  const offset = bos !== null ? 1 : 0;
  const repeatLength = options.repeatLength ?? Math.min(256, Math.floor((contextLength - offset) / repeats));
  const sequences = options.sequences ?? 1;
  const seed = options.seed ?? 1;
  const piece = options.rowsPerPiece ?? 64;
  if (repeats < 2) throw new RangeError(`the probe needs at least 2 repeats, got ${repeats}`);
  if (repeatLength < 2) throw new RangeError(`the probe needs a repeat length ≥ 2, got ${repeatLength}`);
  if (offset + repeats * repeatLength > contextLength) {
    throw new RangeError(`the probe needs ${offset + repeats * repeatLength} positions, the model's context is ${contextLength}`);
  }
  const layout: ProbeLayout = { repeatLength, repeats, offset };
  const echo = Array.from({ length: nLayers }, () => new Float64Array(nHeads));
  const induction = Array.from({ length: nLayers }, () => new Float64Array(nHeads));
  let rows = 0;

  const definition = recorderPolicy(
    { attention: false, queries: false, calibration: false, prefillWindow: piece },
    {
      afterPrefill(_cache, obs) {
        if (!obs.windowAttention) return;
        const first = obs.firstToken + obs.tokenCount - obs.windowRows;
        for (let l = 0; l < nLayers; l++) {
          for (let qh = 0; qh < nHeads; qh++) {
            const block = obs.windowAttention[l][qh];
            const entries = block.length / obs.windowRows;
            for (let w = 0; w < obs.windowRows; w++) {
              const position = first + w;
              if (!isScoredRow(position, layout)) continue;
              const scores = scoreProbeRow(block.subarray(w * entries, (w + 1) * entries), position, layout);
              echo[l][qh] += scores.echo;
              induction[l][qh] += scores.induction;
            }
          }
        }
        for (let w = 0; w < obs.windowRows; w++) if (isScoredRow(first + w, layout)) rows++;
      },
    },
  );

  const total = sequences * Math.ceil((offset + repeats * repeatLength) / piece);
  let done = 0;
  for (let s = 0; s < sequences; s++) {
    const ids = probeTokens({
      repeatLength,
      repeats,
      seed: (seed * 7919 + s) >>> 0,
      vocabSize,
      bos,
      exclude: [special.eos_id, ...(special.pad_id !== null ? [special.pad_id] : [])],
    });
    const session = new Session(model, { policy: RECORDER_ID, registry: [definition], prefillChunk: piece, trace: { attention: false, fullSteps: 0 } });
    for (let start = 0; start < ids.length; start += piece) {
      await session.prefill(ids.slice(start, start + piece));
      options.onProgress?.(++done, total);
    }
  }
  const mean = (m: Float64Array[]) => m.map((row) => Array.from(row, (v) => (rows > 0 ? v / rows : 0)));
  return { repeatLength, repeats, sequences, seed, rows: rows / sequences, echo: mean(echo), induction: mean(induction) };
}
