/**
 * What the trace alone says about the quantization of the shown point (pack-quant.ts): the error
 * each method recorded when it re-encoded an entry (AppliedHead.reencoded kError / vError, matched
 * to the held entries by first token), the per-layer bars built from those, the effective bits of
 * the event's MemoryReport, and the per-head measures of ThinK and the low-rank methods
 * (Decision.headMeasures, the latest event up to the shown one that has them for the head).
 */
import type { MemoryReport } from '../../../engine/cache/view.ts';
import type { HeldEntries } from '../../../engine/trace/replay.ts';
import type { TraceEvent } from '../../../engine/trace/schema.ts';
import { madeAt, type ShownEvents } from './pack-merges.ts';
import type { QuantBitsView, QuantLayersView, QuantSaliencyView, QuantSpectrumView } from './quant-protocol.ts';

/** The headMeasures names the view reads (fixed: methods write them). */
export const QUANT_MEASURES = {
  saliency: 'channel_saliency',
  pruned: 'pruned_channels',
  kSingular: 'k_singular_values',
  vSingular: 'v_singular_values',
  kRank: 'k_rank',
  vRank: 'v_rank',
} as const;

/** The error a method recorded for one re-encoded entry (undefined: not recorded). */
export interface RecordedError {
  kError?: number;
  vError?: number;
}

/**
 * Per head (layer · kvHeads + kvHead): first token → the latest recorded K and V errors of its
 * re-encodes over events[0, count). Entries are matched by first token; an entry merged after its
 * re-encode has no codec in the replay, so a stale record is never read.
 */
export function recordedErrors(events: readonly TraceEvent[], count: number, kvHeads: number): Map<number, Map<number, RecordedError>> {
  const out = new Map<number, Map<number, RecordedError>>();
  for (let e = 0; e < count; e++) {
    for (const head of events[e].decision.heads) {
      const reencoded = head.reencoded ?? [];
      if (reencoded.length === 0) continue;
      const key = head.layer * kvHeads + head.kvHead;
      let tokens = out.get(key);
      if (!tokens) out.set(key, (tokens = new Map()));
      reencoded.forEach((re, k) => {
        const token = (re as { token?: number }).token ?? head.reencodedTokens?.[k];
        // traces written before re-encodes named their tokens: the error cannot be placed
        if (typeof token !== 'number') return;
        // a re-encode of keys only (KIVI's key block after its value left the window) leaves the value's error as it was
        const before = tokens.get(token);
        tokens.set(token, { kError: finite(re.kError) ?? before?.kError, vError: finite(re.vError) ?? before?.vError });
      });
    }
  }
  return out;
}

function finite(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/**
 * The K and V error of an entry from its records; null when none was recorded. Methods record the
 * error of the part they re-encode (ThinK keys only, KIVI a value before its key block), so a part
 * without a record, beside one with, was left as the model computed it: 0.
 */
export function partErrors(record: RecordedError | undefined): { k: number; v: number } | null {
  if (!record || (record.kError === undefined && record.vError === undefined)) return null;
  return { k: record.kError ?? 0, v: record.vError ?? 0 };
}

/** The bars from recorded errors: per layer the mean over held entries whose error is known (plain entries count 0; partErrors). */
export function recordedLayers(held: HeldEntries, recorded: Map<number, Map<number, RecordedError>>): QuantLayersView {
  const layers = held.layers;
  const out: QuantLayersView = { k: new Float32Array(layers), v: new Float32Array(layers), held: new Int32Array(layers), encoded: new Int32Array(layers), unknown: new Int32Array(layers) };
  for (let l = 0; l < layers; l++) {
    const sum = { k: 0, v: 0 };
    const known = { k: 0, v: 0 };
    for (let h = 0; h < held.kvHeads; h++) {
      const n = held.length(l, h);
      const tokens = held.tokens(l, h);
      const errors = recorded.get(l * held.kvHeads + h);
      out.held[l] += n;
      for (let i = 0; i < n; i++) {
        if (held.codec(l, h, i) === null) {
          known.k++;
          known.v++;
          continue;
        }
        out.encoded[l]++;
        const error = partErrors(errors?.get(tokens[i]));
        if (!error) {
          out.unknown[l]++;
          continue;
        }
        sum.k += error.k;
        sum.v += error.v;
        known.k++;
        known.v++;
      }
    }
    out.k[l] = known.k > 0 ? sum.k / known.k : Number.NaN;
    out.v[l] = known.v > 0 ? sum.v / known.v : Number.NaN;
  }
  return out;
}

/** The gauge from a MemoryReport: bits per element of the whole cache, and of keys and values alone. */
export function bitsView(memory: MemoryReport): QuantBitsView {
  const whole = memory.bitsPerElement;
  // bitsPerElement = bytes · 8 / (held · headDim · 2), so keys alone take 2 · whole · kBytes / bytes
  const part = (bytes: number) => (memory.bytes > 0 ? (2 * whole * bytes) / memory.bytes : 0);
  return {
    whole,
    k: part(memory.kBytes),
    v: part(memory.vBytes),
    kBytes: memory.kBytes,
    vBytes: memory.vBytes,
    groupBytes: memory.groupBytes ?? 0,
    fullBytes: memory.fullBytes,
    heldEntries: memory.heldEntries,
  };
}

/** The latest event before `count` whose headMeasures give `name` numbers for this head. */
function latestMeasure(events: readonly TraceEvent[], count: number, name: string, layer: number, kvHead: number): { event: number; values: number[] } | null {
  for (let e = count - 1; e >= 0; e--) {
    const values = events[e].decision.headMeasures?.[name]?.[layer]?.[kvHead];
    if (values && values.length > 0) return { event: e, values: [...values] };
  }
  return null;
}

/** ThinK's saliency and pruned channels of the head; null when no event up to the shown one measured them. */
export function saliencyView(events: readonly TraceEvent[], shown: ShownEvents, layer: number, kvHead: number): QuantSaliencyView | null {
  const saliency = latestMeasure(events, shown.count, QUANT_MEASURES.saliency, layer, kvHead);
  const pruned = latestMeasure(events, shown.count, QUANT_MEASURES.pruned, layer, kvHead);
  const source = Math.max(saliency?.event ?? -1, pruned?.event ?? -1);
  if (source < 0) return null;
  return {
    from: madeAt(events[source]),
    saliency: saliency?.event === source ? saliency.values : [],
    pruned: pruned?.event === source ? pruned.values.filter((c) => Number.isInteger(c)).sort((a, b) => a - b) : [],
  };
}

/** A low-rank method's singular values and ranks of the head; null when none were measured. */
export function spectrumView(events: readonly TraceEvent[], shown: ShownEvents, layer: number, kvHead: number): QuantSpectrumView | null {
  const read = (name: string) => latestMeasure(events, shown.count, name, layer, kvHead);
  const parts = { k: read(QUANT_MEASURES.kSingular), v: read(QUANT_MEASURES.vSingular), kRank: read(QUANT_MEASURES.kRank), vRank: read(QUANT_MEASURES.vRank) };
  const source = Math.max(...Object.values(parts).map((p) => p?.event ?? -1));
  if (source < 0) return null;
  // every part from the one latest event, so K and V and their ranks describe the same decision
  const at = (p: { event: number; values: number[] } | null) => (p?.event === source ? p.values : null);
  const rank = (values: number[] | null) => (values && Number.isFinite(values[0]) ? values[0] : null);
  return { from: madeAt(events[source]), k: at(parts.k) ?? [], v: at(parts.v) ?? [], kRank: rank(at(parts.kRank)), vRank: rank(at(parts.vRank)) };
}
