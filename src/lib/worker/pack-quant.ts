/**
 * The quantization error view's payload (quant-protocol.ts QuantView) for one layer × KV head after
 * a step. Pure: a function of the trace, plus — at the newest step of a live session — the store
 * and the last forward's queries, measured by engine/quant/error-report.ts (the store holds only
 * the present, so per-element error, score error and attention with / without the codec exist
 * there only). Anywhere else (an older step, an imported trace) the view says what the trace gives:
 * each held entry's codec (replay) and the error its method recorded when it re-encoded it.
 *
 * The shown point matches the cache map's and the merge view's (pack-merges.ts shownEvents).
 */
import type { EntryCodec } from '../../../engine/cache/decision.ts';
import type { CacheView } from '../../../engine/cache/view.ts';
import { quantErrorReport, type QuantErrorReport, type QueryHeadError } from '../../../engine/quant/error-report.ts';
import type { HeldEntries } from '../../../engine/trace/replay.ts';
import type { TraceEvent } from '../../../engine/trace/schema.ts';
import { shownEvents, type ShownEvents } from './pack-merges.ts';
import { bitsView, partErrors, recordedErrors, recordedLayers, saliencyView, spectrumView } from './pack-quant-trace.ts';
import type { QuantAttentionView, QuantCodecView, QuantEntriesView, QuantView } from './quant-protocol.ts';

/** What a live session adds at its newest step: the store and the last forward's queries. */
export interface LiveQuantSource {
  cache: CacheView;
  /** Session.lastQueries(): per layer [nHeads × headDim]; null when the session kept none */
  queries: readonly Float32Array[] | null;
  /** query heads per KV head */
  groupSize: number;
}

export const QUANT_LIMITS = {
  trace:
    "per-channel error, the current query's score error and its attention with / without the codec: newest step of a live session only (the cache keeps only the present); here: each entry's codec and the error its method recorded when it re-encoded it",
  noQueries: "no query kept for this point (the session has run no forward since it started): score error and attention need one",
} as const;

const PLAIN_BITS = 32;

function checkHead(held: { layers: number; kvHeads: number }, layer: number, kvHead: number): void {
  if (!(Number.isInteger(layer) && layer >= 0 && layer < held.layers && Number.isInteger(kvHead) && kvHead >= 0 && kvHead < held.kvHeads)) {
    throw new RangeError(`no layer ${layer} / KV head ${kvHead} (the model has ${held.layers} layers × ${held.kvHeads} KV heads)`);
  }
}

/** Codec names in order of first appearance, each with the entries under it and (live) its parameters. */
function codecList(names: readonly (string | null)[], codecs: readonly (EntryCodec | null)[] | null): { list: QuantCodecView[]; index: Int16Array } {
  const list: QuantCodecView[] = [];
  const index = new Int16Array(names.length).fill(-1);
  const byName = new Map<string, number>();
  names.forEach((name, i) => {
    if (name === null) return;
    let k = byName.get(name);
    if (k === undefined) {
      const c = codecs?.[i] ?? null;
      k = list.push({
        name,
        entries: 0,
        kBits: c?.kBits ?? null,
        vBits: c?.vBits ?? null,
        kElements: c?.kElements ?? null,
        vElements: c?.vElements ?? null,
        groupSize: c?.groupSize ?? null,
        rank: c?.rank ?? null,
      }) - 1;
      byName.set(name, k);
    }
    list[k].entries++;
    index[i] = k;
  });
  return { list, index };
}

function liveAttention(report: QuantErrorReport): QuantAttentionView | null {
  const heads = report.attention;
  if (!heads) return null;
  const n = report.length;
  const flat = (pick: (h: QueryHeadError) => Float32Array) => {
    const out = new Float32Array(heads.length * n);
    heads.forEach((h, g) => out.set(pick(h), g * n));
    return out;
  };
  return {
    queryHeads: heads.map((h) => h.queryHead),
    scale: 1 / Math.sqrt(report.headDim),
    scoreError: flat((h) => h.scoreError),
    exact: flat((h) => h.exact),
    stored: flat((h) => h.stored),
    outputError: heads.map((h) => h.outputError),
  };
}

type HeadParts = Pick<QuantView, 'source' | 'limits' | 'codecs' | 'entries' | 'elements' | 'layers' | 'attention' | 'held'>;

/** The newest step of a live session: measured against the exact K/V the store kept. */
function liveParts(live: LiveQuantSource, layer: number, kvHead: number): HeadParts {
  const { cache, groupSize } = live;
  checkHead({ layers: cache.nLayers, kvHeads: cache.nKvHeads }, layer, kvHead);
  const d = cache.headDim;
  const layerQueries = live.queries?.[layer];
  const queries = layerQueries ? layerQueries.slice(kvHead * groupSize * d, (kvHead + 1) * groupSize * d) : null;
  const report = quantErrorReport(cache, layer, kvHead, queries, 1 / Math.sqrt(d));
  const n = report.length;
  const { list, index } = codecList(
    report.codecs.map((c) => c?.name ?? null),
    report.codecs,
  );
  const entries: QuantEntriesView = {
    tokens: report.tokens,
    counts: report.counts,
    codec: index,
    kBits: Float32Array.from(report.codecs, (c) => c?.kBits ?? PLAIN_BITS),
    vBits: Float32Array.from(report.codecs, (c) => c?.vBits ?? PLAIN_BITS),
    kError: report.kEntryError,
    vError: report.vEntryError,
  };
  const layers = {
    k: Float32Array.from(report.layers, (l) => l.k),
    v: Float32Array.from(report.layers, (l) => l.v),
    held: Int32Array.from(report.layers, (l) => l.held),
    encoded: Int32Array.from(report.layers, (l) => l.encoded),
    unknown: new Int32Array(report.layers.length),
  };
  return {
    source: 'live',
    limits: queries ? null : QUANT_LIMITS.noQueries,
    held: n,
    codecs: list,
    entries,
    elements: { headDim: d, kAbsolute: report.kError, vAbsolute: report.vError, kRelative: report.kRelative, vRelative: report.vRelative, flags: report.channelFlags },
    layers,
    attention: liveAttention(report),
  };
}

/** An older step or an imported trace: codecs from the replay, errors as the methods recorded them. */
function traceParts(events: readonly TraceEvent[], shown: ShownEvents, held: HeldEntries, layer: number, kvHead: number): HeadParts {
  checkHead(held, layer, kvHead);
  const n = held.length(layer, kvHead);
  const names = Array.from({ length: n }, (_, i) => held.codec(layer, kvHead, i));
  const { list, index } = codecList(names, null);
  const recorded = recordedErrors(events, shown.count, held.kvHeads);
  const errors = recorded.get(layer * held.kvHeads + kvHead);
  const tokens = Int32Array.from(held.tokens(layer, kvHead));
  const error = (i: number, part: 'k' | 'v') => (names[i] === null ? 0 : (partErrors(errors?.get(tokens[i]))?.[part] ?? Number.NaN));
  const entries: QuantEntriesView = {
    tokens,
    counts: Int32Array.from({ length: n }, (_, i) => held.origin(layer, kvHead, i).length),
    codec: index,
    kBits: Float32Array.from(names, (name) => (name === null ? PLAIN_BITS : Number.NaN)),
    vBits: Float32Array.from(names, (name) => (name === null ? PLAIN_BITS : Number.NaN)),
    kError: Float32Array.from({ length: n }, (_, i) => error(i, 'k')),
    vError: Float32Array.from({ length: n }, (_, i) => error(i, 'v')),
  };
  return { source: 'trace', limits: QUANT_LIMITS.trace, held: n, codecs: list, entries, elements: null, layers: recordedLayers(held, recorded), attention: null };
}

/**
 * The quantization error view of decode step `step` (−1: after the prompt). `heldAt(count)` is the
 * replay after the first `count` events; `live` is given by a live session (used at its newest step only).
 */
export function quantViewAt(events: readonly TraceEvent[], heldAt: (count: number) => HeldEntries, step: number, layer: number, kvHead: number, live: LiveQuantSource | null): QuantView {
  const shown = shownEvents(events, step);
  if (!shown) throw new RangeError(`the trace has no step ${step}`);
  const last = events[shown.count - 1];
  const head = live && shown.count === events.length ? liveParts(live, layer, kvHead) : traceParts(events, shown, heldAt(shown.count), layer, kvHead);
  let madeInAllHeads = 0;
  for (let i = shown.from; i < shown.count; i++) madeInAllHeads += events[i].decision.reencoded;
  return {
    step,
    layer,
    kvHead,
    tokens: last.memory.tokens,
    policy: last.kind === 'policy' ? last.to : last.policy,
    ...head,
    bits: bitsView(last.memory),
    saliency: saliencyView(events, shown, layer, kvHead),
    spectrum: spectrumView(events, shown, layer, kvHead),
    madeInAllHeads,
  };
}
