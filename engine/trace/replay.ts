/**
 * What every layer × KV head holds, rebuilt from trace events alone (docs/architecture.md, "The trace": the trace is the
 * one contract between engine and views). No model math and no access to the cache store: each
 * head is an ordered list of entries (first origin token, origin list, codec name), changed only the
 * way the events say:
 *
 * - `prefill`: the prompt tokens are appended to every head, then the prefill decision is applied;
 * - `step`: the new token is appended to every head, then the step's decision is applied;
 * - `policy` (a live switch): its decision is applied.
 *
 * A decision lists, per changed head, the origins of the entries it evicted (`evictedTokens`), the
 * merged entries it made (`merged[] {into, origins}`: `into` is the merged entry's place after the
 * decision), the entries it re-encoded (`reencoded[] {index, token?, codec}`) and the head's length
 * before and after. Kept entries keep their relative order (the store compacts left to right), so
 * that is enough to rebuild the order exactly. Fields this module does not know (repositions, hidden
 * entries, budgets …) are ignored: they change no entry's membership or order.
 *
 * Every step is checked against what the trace says (lengths before and after, that an evicted or
 * merged token is held, that a merge's origins are whole entries), so a wrong replay — or a trace
 * that is not internally consistent — fails loudly with the event named instead of drawing a wrong
 * map. Each merged entry also keeps the record of the merge that made it (weights, member tokens,
 * member-to-merged similarity and count where the trace has them: replay-merges.ts), so a view of a
 * later step can still say how an entry was merged. Not tracked: RoPE positions after repositions;
 * views that need them read the step's attention entries.
 *
 * One head's entries and how a decision changes them are replay-head.ts's (ReplayHead).
 *
 * Cost: appending is O(1) per head; applying a decision is O(entries) per changed head. ReplayTimeline
 * (replay-timeline.ts) adds checkpoints every `checkpointEvery` events so that any event is reached
 * with at most that many decisions applied.
 */
import type { TraceEvent } from './schema.ts';
import type { MergeRecord } from './replay-merges.ts';
import { ReplayHead, TraceReplayError, type HeadSnapshot, type ReplayableHead } from './replay-head.ts';

export type { MergeRecord } from './replay-merges.ts';
export { TraceReplayError, type ReplayableHead } from './replay-head.ts';

export interface ReplayDims {
  layers: number;
  kvHeads: number;
}

/** What the heads hold: the part of the store's CacheView that views need, read from the replay. */
export interface HeldEntries {
  readonly layers: number;
  readonly kvHeads: number;
  /** tokens fed so far (what the full cache would hold) */
  readonly tokenCount: number;
  length(layer: number, kvHead: number): number;
  /** first origin token of each entry, in cache order (a live view: copy what you keep) */
  tokens(layer: number, kvHead: number): ArrayLike<number>;
  /** the token indices entry `index` stands for (one unless merged) */
  origin(layer: number, kvHead: number, index: number): readonly number[];
  /** codec name of a re-encoded entry; null for plain fp32 */
  codec(layer: number, kvHead: number, index: number): string | null;
}

/** What the replay holds, with the merge behind each merged entry. */
export interface HeldMerges extends HeldEntries {
  /** the merge that made entry `index` (its latest one); null for an entry that was never merged */
  merge(layer: number, kvHead: number, index: number): MergeRecord | null;
}

export interface ReplayableDecision {
  heads: readonly ReplayableHead[];
}

export interface ReplaySnapshot {
  tokenCount: number;
  heads: HeadSnapshot[];
}

/** Describes an event for error messages ("step 12", "the prefill", "the switch after step 3"). */
export function describeEvent(event: TraceEvent, index: number): string {
  switch (event.kind) {
    case 'prefill':
      return `event ${index} (the prefill)`;
    case 'step':
      return `event ${index} (step ${event.step})`;
    case 'policy':
      return `event ${index} (the switch to ${event.to} after ${event.atStep} steps)`;
    default:
      return `event ${index}`;
  }
}

/** The cache rebuilt by applying trace events in order. */
export class CacheReplay implements HeldMerges {
  readonly layers: number;
  readonly kvHeads: number;
  tokenCount = 0;
  /** events applied so far */
  applied = 0;
  private readonly heads: ReplayHead[];

  constructor(dims: ReplayDims) {
    if (!(Number.isInteger(dims.layers) && dims.layers > 0 && Number.isInteger(dims.kvHeads) && dims.kvHeads > 0)) {
      throw new TraceReplayError(`layers and KV heads must be positive integers (got ${dims.layers} × ${dims.kvHeads})`);
    }
    this.layers = dims.layers;
    this.kvHeads = dims.kvHeads;
    this.heads = Array.from({ length: dims.layers * dims.kvHeads }, () => new ReplayHead());
  }

  private head(layer: number, kvHead: number): ReplayHead {
    const head = Number.isInteger(layer) && Number.isInteger(kvHead) && layer >= 0 && layer < this.layers && kvHead >= 0 && kvHead < this.kvHeads ? this.heads[layer * this.kvHeads + kvHead] : undefined;
    if (!head) throw new TraceReplayError(`no head ${layer}/${kvHead} (layers ${this.layers}, KV heads ${this.kvHeads})`);
    return head;
  }

  length(layer: number, kvHead: number): number {
    return this.head(layer, kvHead).length;
  }
  tokens(layer: number, kvHead: number): Int32Array {
    const head = this.head(layer, kvHead);
    return head.first.subarray(0, head.length);
  }
  origin(layer: number, kvHead: number, index: number): readonly number[] {
    return this.head(layer, kvHead).origin(index);
  }
  codec(layer: number, kvHead: number, index: number): string | null {
    return this.head(layer, kvHead).codec(index);
  }
  merge(layer: number, kvHead: number, index: number): MergeRecord | null {
    return this.head(layer, kvHead).merge(index);
  }

  /** Applies the next event (index = its place in the trace, for messages). */
  apply(event: TraceEvent, index = this.applied): void {
    const what = describeEvent(event, index);
    switch (event.kind) {
      case 'prefill': {
        if (event.firstToken !== this.tokenCount) throw new TraceReplayError(`${what}: starts at token ${event.firstToken}, the replay has ${this.tokenCount} tokens`);
        for (let i = 0; i < event.tokenIds.length; i++) this.appendToken(this.tokenCount, what);
        break;
      }
      case 'step': {
        if (event.tokenIndex !== this.tokenCount) throw new TraceReplayError(`${what}: feeds token ${event.tokenIndex}, the replay has ${this.tokenCount} tokens`);
        this.appendToken(this.tokenCount, what);
        break;
      }
      case 'policy':
        break;
      default:
        throw new TraceReplayError(`${what}: unknown event kind ${JSON.stringify((event as { kind?: unknown }).kind)}`);
    }
    this.applyDecision(event.decision, what, index);
    this.applied = index + 1;
  }

  private appendToken(token: number, what: string): void {
    for (let h = 0; h < this.heads.length; h++) this.heads[h].append(token, () => `${what}, layer ${Math.floor(h / this.kvHeads)} KV head ${h % this.kvHeads}`);
    this.tokenCount = token + 1;
  }

  private applyDecision(decision: ReplayableDecision, what: string, index: number): void {
    for (const head of decision.heads) {
      this.head(head.layer, head.kvHead).apply(head, () => `${what}, layer ${head.layer} KV head ${head.kvHead}`, index);
    }
  }

  snapshot(): ReplaySnapshot {
    return { tokenCount: this.tokenCount, heads: this.heads.map((h) => h.snapshot()) };
  }

  restore(snapshot: ReplaySnapshot, applied: number): void {
    this.tokenCount = snapshot.tokenCount;
    this.heads.forEach((h, i) => h.restore(snapshot.heads[i], snapshot.tokenCount));
    this.applied = applied;
  }
}
