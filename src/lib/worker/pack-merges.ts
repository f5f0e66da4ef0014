/**
 * The merge view's payload (protocol.ts MergeView), a pure function of the trace like everything in
 * pack.ts: which merged entries one layer × KV head holds after a step (from the replay, which keeps
 * the merge behind each entry: engine/trace/replay-merges.ts), and MiniCache's per-layer measures
 * (Decision.measures) with the tokens of each paired layer that do not share a direction.
 *
 * The shown point matches the cache map's: after the step's event, or — for the newest step — after
 * every event, so a policy switch right after it is included (its merges count as made here).
 */
import type { HeldMerges } from '../../../engine/trace/replay.ts';
import type { TraceEvent } from '../../../engine/trace/schema.ts';
import type { MergeDepthView, MergeEntryView, MergeMadeAt, MergeMemberView, MergeView } from './protocol.ts';

/**
 * The codec MiniCache re-encodes the merged entries of a paired layer with (their shared
 * direction): `minicache`, or `minicache-k` / `minicache-v` when only keys or only values merged.
 */
export const MINICACHE_CODEC = 'minicache';

export function isMinicacheCodec(name: string | null): boolean {
  return name === MINICACHE_CODEC || (name !== null && name.startsWith(`${MINICACHE_CODEC}-`));
}

/** The measures the depth chart reads (Decision.measures names). */
export const DEPTH_MEASURES = { similarity: 'layer_similarity', partner: 'pair_partner', retained: 'retained_fraction' } as const;

/** Events the views of decode step `step` (−1: after the prompt) show: [from, count) made the shown decision(s). */
export interface ShownEvents {
  /** index of the step's event (0 for the prefill) */
  from: number;
  /** events applied for the shown cache */
  count: number;
}

/** Where decode step `step` (−1: after the prompt) lies in `events`; null when the events do not reach it. */
export function shownEvents(events: readonly TraceEvent[], step: number): ShownEvents | null {
  if (events.length === 0 || events[0].kind !== 'prefill' || !Number.isInteger(step) || step < -1) return null;
  let steps = 0;
  let index = step === -1 ? 0 : -1;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    if (e.kind !== 'step') continue;
    steps = e.step + 1;
    if (e.step === step) index = i;
  }
  if (index < 0) return null;
  const newest = step === steps - 1;
  return { from: index, count: newest ? events.length : step === -1 ? 1 : index + 1 };
}

export function madeAt(event: TraceEvent | undefined): MergeMadeAt {
  if (!event || event.kind === 'prefill') return { kind: 'prefill', step: -1 };
  if (event.kind === 'step') return { kind: 'step', step: event.step };
  return { kind: 'policy', step: event.atStep };
}

function finite(value: number | undefined): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/** The merged entries of one head and the depth measures, after events[0, shown.count) (`held` = the replay there). */
export function packMergeView(events: readonly TraceEvent[], shown: ShownEvents, held: HeldMerges, step: number, layer: number, kvHead: number): MergeView {
  if (!(Number.isInteger(layer) && layer >= 0 && layer < held.layers && Number.isInteger(kvHead) && kvHead >= 0 && kvHead < held.kvHeads)) {
    throw new RangeError(`no layer ${layer} / KV head ${kvHead} (the model has ${held.layers} layers × ${held.kvHeads} KV heads)`);
  }
  const entries: MergeEntryView[] = [];
  let detailed = true;
  const n = held.length(layer, kvHead);
  for (let i = 0; i < n; i++) {
    const origin = held.origin(layer, kvHead, i);
    if (origin.length < 2) continue;
    const record = held.merge(layer, kvHead, i);
    const count = record?.count ?? null;
    const members: MergeMemberView[] = [];
    const m = Math.max(record?.weights.length ?? 0, record?.memberTokens?.length ?? 0);
    for (let k = 0; k < m; k++) {
      members.push({
        token: finite(record?.memberTokens?.[k]),
        size: finite(record?.memberSizes?.[k]),
        weight: finite(record?.weights[k]),
        similarity: finite(record?.similarity?.[k]),
      });
    }
    if (count === null || !record?.memberTokens || !record.similarity) detailed = false;
    const event = record?.event ?? -1;
    entries.push({
      index: i,
      first: origin[0],
      origins: [...origin],
      count,
      bias: count === null ? null : count > 1 ? Math.log(count) : 0,
      members,
      madeAt: madeAt(events[event]),
      fresh: event >= shown.from && event < shown.count,
    });
  }
  let madeInAllHeads = 0;
  for (let i = shown.from; i < shown.count; i++) madeInAllHeads += events[i].decision.merged;
  const last = events[shown.count - 1];
  return {
    step,
    layer,
    kvHead,
    tokens: held.tokenCount,
    held: n,
    policy: last ? (last.kind === 'policy' ? last.to : last.policy) : '',
    entries,
    madeInAllHeads,
    detailed,
    depth: packDepth(events, shown, held, kvHead),
  };
}

/** MiniCache's measures of the latest event up to the shown point that has them, with the selected KV head's codecs per layer. */
export function packDepth(events: readonly TraceEvent[], shown: ShownEvents, held: HeldMerges, kvHead: number): MergeDepthView | null {
  let source = -1;
  for (let i = shown.count - 1; i >= 0 && source < 0; i--) {
    const measures = events[i].decision.measures;
    if (measures && (measures[DEPTH_MEASURES.similarity] || measures[DEPTH_MEASURES.partner])) source = i;
  }
  if (source < 0) return null;
  const measures = events[source].decision.measures!;
  const layers = held.layers;
  const read = (name: string) => Array.from({ length: layers }, (_, l) => measures[name]?.[l] ?? Number.NaN);
  const partner = read(DEPTH_MEASURES.partner);
  const shared: number[] = [];
  const unmerged: (number[] | null)[] = [];
  for (let l = 0; l < layers; l++) {
    const n = held.length(l, kvHead);
    let s = 0;
    const apart: number[] = [];
    // every entry without the codec: retained by a decision, or not considered yet (recent tokens),
    // so this is not the decision's retained set (that share is `retained`, over the tokens it considered)
    for (let i = 0; i < n; i++) {
      if (isMinicacheCodec(held.codec(l, kvHead, i))) s++;
      else apart.push(...held.origin(l, kvHead, i));
    }
    shared.push(s);
    unmerged.push(Number.isFinite(partner[l]) ? apart.sort((a, b) => a - b) : null);
  }
  return { from: madeAt(events[source]), similarity: read(DEPTH_MEASURES.similarity), partner, retained: read(DEPTH_MEASURES.retained), shared, unmerged };
}

/** The merge view of decode step `step` (−1: after the prompt); `heldAt(count)` is the replay after the first `count` events. */
export function mergeViewAt(events: readonly TraceEvent[], heldAt: (count: number) => HeldMerges, step: number, layer: number, kvHead: number): MergeView {
  const shown = shownEvents(events, step);
  if (!shown) throw new RangeError(`the trace has no step ${step}`);
  return packMergeView(events, shown, heldAt(shown.count), step, layer, kvHead);
}
