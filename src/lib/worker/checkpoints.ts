/**
 * Session snapshots for stepping back and for recomputing old steps exactly (docs/architecture.md, "The trace":
 * runs are deterministic, so any step is a snapshot plus a replay).
 *
 * A snapshot holds the whole cache (≈ 4 KB per token for the default model), so they are
 * thinned as decoding goes on: every step among the last `dense`, every `mid`-th step among the
 * last `midSpan`, every `far`-th step before that, plus pinned ones (after the prompt, after a
 * policy switch). At a full 1024-token context that is at most ~26 snapshots, and stepping back
 * replays at most `far` − 1 steps.
 */
export interface CheckpointOptions {
  dense: number;
  mid: number;
  midSpan: number;
  far: number;
}

export const DEFAULT_CHECKPOINTS: CheckpointOptions = { dense: 2, mid: 16, midSpan: 128, far: 64 };

export interface Checkpoint<S> {
  /** decode steps taken when the snapshot was taken */
  step: number;
  snapshot: S;
  pinned: boolean;
}

export class Checkpoints<S> {
  private items: Checkpoint<S>[] = [];
  constructor(readonly options: CheckpointOptions = DEFAULT_CHECKPOINTS) {}

  get size(): number {
    return this.items.length;
  }

  steps(): number[] {
    return this.items.map((c) => c.step);
  }

  clear(): void {
    this.items = [];
  }

  /** Adds (or replaces) the snapshot at `step`, then thins older ones relative to it. */
  add(step: number, snapshot: S, pinned = false): void {
    this.items = this.items.filter((c) => c.step !== step);
    this.items.push({ step, snapshot, pinned });
    this.items.sort((a, b) => a.step - b.step);
    this.thin(step);
  }

  /** Would a snapshot at `step` survive thinning right now? (avoids taking useless snapshots) */
  wants(step: number): boolean {
    return step === 0 || this.keeps(step, step);
  }

  /** The latest checkpoint at or before `step`. */
  before(step: number): Checkpoint<S> | null {
    let best: Checkpoint<S> | null = null;
    for (const c of this.items) if (c.step <= step) best = c;
    return best;
  }

  /** Forgets checkpoints after `step` (after stepping back). */
  dropAfter(step: number): void {
    this.items = this.items.filter((c) => c.step <= step);
  }

  private keeps(step: number, latest: number): boolean {
    const { dense, mid, midSpan, far } = this.options;
    const age = latest - step;
    if (age < dense) return true;
    if (age < midSpan && step % mid === 0) return true;
    return step % far === 0;
  }

  private thin(latest: number): void {
    this.items = this.items.filter((c) => c.pinned || c.step === 0 || this.keeps(c.step, latest));
  }
}
