/**
 * Random access into a trace's replay (docs/architecture.md, "The trace"): a CacheReplay
 * (replay.ts) plus checkpoints every `checkpointEvery` events, so that any event is reached with at
 * most that many decisions applied, and a live session that steps back or switches policy resumes
 * from the last checkpoint before the difference.
 */
import type { TraceEvent } from './schema.ts';
import { CacheReplay, type HeldMerges, type ReplayDims, type ReplaySnapshot } from './replay.ts';

/**
 * An event's identity for deciding whether a trace still has the history the replay followed. Runs
 * are deterministic: after stepping back, the steps replayed are new objects with the same content,
 * so content (not object identity) is what counts.
 */
function eventKey(event: TraceEvent): string {
  const d = event.decision;
  const common = `${d.heads.length}|${d.evicted}|${d.merged}|${d.reencoded}`;
  switch (event.kind) {
    case 'prefill':
      return `prefill|${event.firstToken}|${event.tokenIds.length}|${event.policy}|${common}`;
    case 'step':
      return `step|${event.step}|${event.tokenIndex}|${event.token.id}|${event.policy}|${common}`;
    case 'policy':
      return `policy|${event.atStep}|${event.from}|${event.to}|${common}`;
    default:
      return `?|${common}`;
  }
}

export const DEFAULT_CHECKPOINT_EVERY = 32;

/**
 * A CacheReplay that follows a trace with random access: `at(events, count)` is the cache after the
 * first `count` events. It notices when the trace was cut back and regrown differently (stepping
 * back, a different switch) and resumes from the last checkpoint before the difference, so
 * following a live session costs one decision per step and reaching any older event at most
 * `checkpointEvery` decisions.
 */
export class ReplayTimeline {
  private readonly replay: CacheReplay;
  /** the events applied, by index (an event object, or the key it had, once compared by content) */
  private followed: TraceEvent[] = [];
  private keys: (string | null)[] = [];
  /** snapshots after `count` events; 0 is the empty cache */
  private checkpoints = new Map<number, ReplaySnapshot>();

  constructor(
    dims: ReplayDims,
    readonly checkpointEvery = DEFAULT_CHECKPOINT_EVERY,
  ) {
    this.replay = new CacheReplay(dims);
    this.checkpoints.set(0, this.replay.snapshot());
  }

  get dims(): ReplayDims {
    return { layers: this.replay.layers, kvHeads: this.replay.kvHeads };
  }

  /** The cache after the first `count` events of `events` (default all). Valid until the next call. */
  at(events: readonly TraceEvent[], count = events.length): HeldMerges {
    if (!Number.isInteger(count) || count < 0 || count > events.length) throw new RangeError(`event count ${count} is outside 0..${events.length}`);
    const same = this.commonPrefix(events);
    if (same < this.followed.length) this.forgetFrom(same);
    const current = this.replay.applied;
    if (current > count || this.bestCheckpoint(count) > current) {
      const start = this.bestCheckpoint(count);
      this.replay.restore(this.checkpoints.get(start)!, start);
    }
    for (let i = this.replay.applied; i < count; i++) {
      const event = events[i];
      this.replay.apply(event, i);
      this.followed[i] = event;
      this.keys[i] = null;
      if ((i + 1) % this.checkpointEvery === 0 && !this.checkpoints.has(i + 1)) this.checkpoints.set(i + 1, this.replay.snapshot());
    }
    return this.replay;
  }

  /** How many leading events of `events` are the ones this timeline followed. */
  private commonPrefix(events: readonly TraceEvent[]): number {
    const n = Math.min(events.length, this.followed.length);
    for (let i = 0; i < n; i++) {
      const known = this.followed[i];
      const event = events[i];
      if (known === event) continue;
      // a different object: the same event compacted, or replayed after stepping back?
      const key = this.keys[i] ?? eventKey(known);
      if (key !== eventKey(event)) return i;
      this.followed[i] = event;
      this.keys[i] = key;
    }
    return n;
  }

  private forgetFrom(index: number): void {
    this.followed.length = index;
    this.keys.length = index;
    for (const count of [...this.checkpoints.keys()]) if (count > index) this.checkpoints.delete(count);
    if (this.replay.applied > index) {
      const start = this.bestCheckpoint(index);
      this.replay.restore(this.checkpoints.get(start)!, start);
    }
  }

  private bestCheckpoint(count: number): number {
    let best = 0;
    for (const c of this.checkpoints.keys()) if (c <= count && c > best && c <= this.followed.length) best = c;
    return best;
  }
}
