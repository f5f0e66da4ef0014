/**
 * The explorer's merge view state: the merged entries of the shown step and head (packed by the
 * worker, src/lib/worker/pack-merges.ts), what the view picked, and the tokens that pick lights up
 * in the token stream and the cache map. One request is in flight at a time; the latest wanted
 * one follows when it returns.
 */
import { EngineClient, EngineFailure } from '../worker/client.ts';
import type { EngineEvent, MergeEntryView, MergeView } from '../worker/protocol.ts';

/** What the merge view picked: a merged entry (by a token it stands for) or the tokens of a MiniCache-paired layer not sharing a direction. */
export type MergePick = { kind: 'entry'; token: number } | { kind: 'unmerged'; layer: number };

/** Tokens lit up in every view that shows tokens (token stream, cache map). */
export interface TokenHighlight {
  /** token indices, ascending */
  tokens: number[];
  /** the head they belong to (the cache map outlines them in its row) */
  layer: number;
  kvHead: number;
  /** what they are, in words */
  label: string;
}

/** The shown step and head. */
export interface MergeSelection {
  step: number;
  layer: number;
  kvHead: number;
}

/** What a merge view is asked for: it is asked again when any of this changes. */
export interface MergeRequest extends MergeSelection {
  /** the explorer's session object (replaced after every step, switch and rewind) */
  session: object;
  steps: number;
}

interface AskedRequest extends MergeRequest {
  /** MergeViewState's epoch when asked: a reply of an older epoch is dropped */
  epoch: number;
}

const sameRequest = (a: AskedRequest | null, b: AskedRequest | null) =>
  a !== null && b !== null && a.session === b.session && a.epoch === b.epoch && a.steps === b.steps && a.step === b.step && a.layer === b.layer && a.kvHead === b.kvHead;

export class MergeViewState {
  /** the merged entries of the selected head at the shown step (from the worker; may lag the selection for a moment) */
  view = $state.raw<MergeView | null>(null);
  /** why the latest merge view could not be packed (the last good view stays in `view`); null when it could */
  error = $state<string | null>(null);
  /** what the merge view picked; its tokens light up in the token stream and the cache map */
  pick = $state.raw<MergePick | null>(null);

  private wanted: AskedRequest | null = null;
  private asked = false;
  /** bumped when the shown trace is replaced or cut (reset, import, rewind): replies asked before are dropped */
  private epoch = 0;

  constructor(
    private readonly client: EngineClient,
    private readonly selection: () => MergeSelection,
    /** a failure that is not the merge view's own (the page's error) */
    private readonly fail: (error: unknown) => void,
  ) {}

  /** the view shows the selected step and head (not one a moment old) */
  readonly current = $derived.by(() => {
    const { step, layer, kvHead } = this.selection();
    return this.view !== null && this.view.step === step && this.view.layer === layer && this.view.kvHead === kvHead;
  });

  /** the picked merged entry: the one standing for the picked token */
  readonly picked = $derived.by((): MergeEntryView | null => {
    const pick = this.pick;
    if (pick?.kind !== 'entry' || !this.view) return null;
    return this.view.entries.find((e) => e.origins.includes(pick.token)) ?? null;
  });

  readonly highlight = $derived.by((): TokenHighlight | null => {
    const view = this.view;
    const pick = this.pick;
    if (!view || !pick) return null;
    if (pick.kind === 'entry') {
      const entry = this.picked;
      return entry ? { tokens: entry.origins, layer: view.layer, kvHead: view.kvHead, label: `the ${entry.origins.length} tokens merged entry #${entry.first} stands for` } : null;
    }
    const tokens = view.depth?.unmerged[pick.layer];
    return tokens ? { tokens, layer: pick.layer, kvHead: view.kvHead, label: `tokens of layer ${pick.layer} not sharing a direction with its pair (retained, or not yet merged)` } : null;
  });

  /** Asks for `request` unless it is what was last wanted. */
  want(request: MergeRequest): void {
    const want: AskedRequest = { ...request, epoch: this.epoch };
    if (sameRequest(want, this.wanted)) return;
    this.wanted = want;
    if (!this.asked) this.ask(want);
  }

  /** The shown trace was replaced: forget the view, the pick and what was asked. */
  clear(): void {
    this.view = null;
    this.error = null;
    this.pick = null;
    this.wanted = null;
    this.epoch++;
  }

  /** The shown trace was cut (rewind): replies asked before must not come back. */
  dropPending(): void {
    this.epoch++;
  }

  private ask(want: AskedRequest): void {
    this.asked = true;
    this.client
      .request<Extract<EngineEvent, { type: 'merges' }>>({ type: 'merges', step: want.step, layer: want.layer, kvHead: want.kvHead })
      .then((reply) => {
        // A reply of this trace is shown even when the selection has moved on since it was asked
        // (during a Run every reply arrives after the next step): marked stale (`current`), and
        // the newer request follows below. Only a reset, an import or a rewind (a new epoch) drops it.
        if (want.epoch !== this.epoch) return;
        this.view = reply.view;
        this.error = null;
      })
      .catch((error) => {
        if (want.epoch !== this.epoch) return;
        const failure = EngineFailure.from(error);
        // a request overtaken by a newer one (the step is gone, the head changed): the newer one decides
        if (failure.kind === 'session' && !sameRequest(want, this.wanted)) return;
        // shown in the merge view, over the last good view (kept); a failure of another kind is also the page's error
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
