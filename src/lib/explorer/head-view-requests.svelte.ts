/**
 * Asking the worker for a per-step view of one layer × KV head (the merge view, the quantization
 * error view): one request is in flight at a time; the latest wanted one follows when it returns;
 * replies of a replaced or cut trace (reset, import, rewind: a new epoch) are dropped.
 */
import { EngineFailure } from '../worker/client.ts';

/** The shown step and head. */
export interface HeadSelection {
  step: number;
  layer: number;
  kvHead: number;
}

/** What a head view is asked for: it is asked again when any of this changes. */
export interface HeadViewRequest extends HeadSelection {
  /** the explorer's session object (replaced after every step, switch and rewind) */
  session: object;
  steps: number;
}

interface AskedRequest extends HeadViewRequest {
  /** the epoch when asked: a reply of an older epoch is dropped */
  epoch: number;
}

const sameRequest = (a: AskedRequest | null, b: AskedRequest | null) =>
  a !== null && b !== null && a.session === b.session && a.epoch === b.epoch && a.steps === b.steps && a.step === b.step && a.layer === b.layer && a.kvHead === b.kvHead;

export class HeadViewRequests<View extends HeadSelection> {
  /** the view of the selected head at the shown step (from the worker; may lag the selection for a moment) */
  view = $state.raw<View | null>(null);
  /** why the latest view could not be packed (the last good view stays in `view`); null when it could */
  error = $state<string | null>(null);

  private wanted: AskedRequest | null = null;
  private asked = false;
  /** bumped when the shown trace is replaced or cut: replies asked before are dropped */
  private epoch = 0;

  constructor(
    /** asks the worker for the view of one step and head (its reply carries the view) */
    private readonly fetchView: (at: HeadSelection) => Promise<{ view: View }>,
    private readonly selection: () => HeadSelection,
    /** a failure that is not the view's own (the page's error) */
    private readonly fail: (error: unknown) => void,
  ) {}

  /** the view shows the selected step and head (not one a moment old) */
  readonly current = $derived.by(() => {
    const { step, layer, kvHead } = this.selection();
    return this.view !== null && this.view.step === step && this.view.layer === layer && this.view.kvHead === kvHead;
  });

  /** Asks for `request` unless it is what was last wanted. */
  want(request: HeadViewRequest): void {
    const want: AskedRequest = { ...request, epoch: this.epoch };
    if (sameRequest(want, this.wanted)) return;
    this.wanted = want;
    if (!this.asked) this.ask(want);
  }

  /** The shown trace was replaced: forget the view and what was asked. */
  clear(): void {
    this.view = null;
    this.error = null;
    this.wanted = null;
    this.epoch++;
  }

  /** The shown trace was cut (rewind): replies asked before must not come back. */
  dropPending(): void {
    this.epoch++;
  }

  private ask(want: AskedRequest): void {
    this.asked = true;
    this.fetchView({ step: want.step, layer: want.layer, kvHead: want.kvHead })
      .then(({ view }) => {
        // A reply of this trace is shown even when the selection has moved on since it was asked
        // (during a Run every reply arrives after the next step): marked stale (`current`), and
        // the newer request follows below. Only a reset, an import or a rewind (a new epoch) drops it.
        if (want.epoch !== this.epoch) return;
        this.view = view;
        this.error = null;
      })
      .catch((error) => {
        if (want.epoch !== this.epoch) return;
        const failure = EngineFailure.from(error);
        // a request overtaken by a newer one (the step is gone, the head changed): the newer one decides
        if (failure.kind === 'session' && !sameRequest(want, this.wanted)) return;
        // shown in the view, over the last good view (kept); a failure of another kind is also the page's error
        this.error = failure.message;
        if (failure.kind !== 'session') this.fail(error);
      })
      .finally(() => {
        this.asked = false;
        const wanted = this.wanted;
        if (wanted && !sameRequest(want, wanted)) this.ask(wanted);
      });
  }
}
