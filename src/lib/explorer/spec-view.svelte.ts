/**
 * The explorer's speculative-decoding state (issue 10): the registered drafters, the drafter in
 * charge of the session (set through the worker: `set-drafter`, which validates the spec and loads
 * a draft model), and the acceptance view (`spec`, packed by the worker from the trace alone:
 * src/lib/worker/pack-spec.ts). One view request is in flight at a time; the latest wanted one
 * follows; replies asked before a reset, an import or a rewind are dropped.
 */
import { EngineFailure, type EngineClient } from '../worker/client.ts';
import type { DrafterInfo, DrafterState, EngineEvent, LoadProgressView, SpecView } from '../worker/protocol.ts';

export class SpecViewState {
  /** the registered drafters (engine/spec/index.ts DRAFTERS, from the `ready` event) */
  drafters = $state.raw<DrafterInfo[]>([]);
  /** the drafter the worker has in charge (null before the first apply: plain decoding) */
  drafter = $state.raw<DrafterState | null>(null);
  /** why the last Apply was refused (the picker shows it; nothing changed) */
  error = $state<string | null>(null);
  applying = $state(false);
  /** a draft model's download / verification while it loads */
  progress = $state.raw<LoadProgressView | null>(null);
  /** the acceptance view of the shown trace */
  view = $state.raw<SpecView | null>(null);
  /** why the latest view could not be packed (the last good one stays) */
  viewError = $state<string | null>(null);
  /**
   * while a Run's plain decoding is being timed (the speed-up measurement, worker `spec-measuring`):
   * replayed tokens of all; null otherwise
   */
  measuring = $state.raw<{ done: number; total: number } | null>(null);

  /** hears every drafter the worker took (the explorer's experiment log records it) */
  onApplied: ((spec: string | null) => void) | null = null;

  private asked = false;
  private again = false;
  private epoch = 0;

  constructor(private readonly client: EngineClient) {}

  /** canonical spec in charge; null = plain decoding */
  readonly active = $derived(this.drafter?.spec ?? null);

  /**
   * Sets the drafter (`none` or '' = plain decoding). Resolves true when the worker took it; a spec it
   * refuses (or a draft model that fails to load) is named in `error` and changes nothing.
   */
  async apply(text: string): Promise<boolean> {
    if (this.applying) return false;
    this.applying = true;
    this.progress = null;
    try {
      const reply = await this.client.request<Extract<EngineEvent, { type: 'drafter' }>>({ type: 'set-drafter', drafter: text }, (event) => {
        if (event.type === 'progress') this.progress = event.progress;
      });
      this.drafter = reply.drafter;
      this.error = null;
      this.onApplied?.(reply.drafter.spec);
      this.refresh();
      return true;
    } catch (error) {
      const failure = EngineFailure.from(error);
      if (failure.kind !== 'crash') this.error = failure.message;
      return false;
    } finally {
      this.applying = false;
      this.progress = null;
    }
  }

  /** Asks the worker for the view of the shown trace (again after every change). */
  refresh(): void {
    if (this.asked) {
      this.again = true;
      return;
    }
    this.asked = true;
    const epoch = this.epoch;
    this.client
      .request<Extract<EngineEvent, { type: 'spec' }>>({ type: 'spec' })
      .then((reply) => {
        if (epoch !== this.epoch) return;
        this.view = reply.view;
        this.viewError = null;
      })
      .catch((error) => {
        if (epoch !== this.epoch) return;
        const failure = EngineFailure.from(error);
        if (failure.kind !== 'crash') this.viewError = failure.message;
      })
      .finally(() => {
        this.asked = false;
        if (this.again) {
          this.again = false;
          this.refresh();
        }
      });
  }

  /** A new model: no drafter is in charge, nothing was refused. */
  reset(drafters: DrafterInfo[]): void {
    this.drafters = drafters;
    this.drafter = null;
    this.error = null;
    this.progress = null;
    this.measuring = null;
    this.clear();
  }

  /** A Run starts: the last speed-up is about to be dropped by the worker, so it is not shown meanwhile. */
  runStarted(): void {
    this.measuring = null;
    const view = this.view;
    if (view?.speedup) this.view = { ...view, speedup: null };
  }

  /** The shown trace was replaced (reset, import): forget the view. */
  clear(): void {
    this.view = null;
    this.viewError = null;
    this.epoch++;
  }

  /** The shown trace was cut (rewind): replies asked before must not come back. */
  dropPending(): void {
    this.epoch++;
  }
}
