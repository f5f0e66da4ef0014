/**
 * The explorer's merge view state: the merged entries of the shown step and head (packed by the
 * worker, src/lib/worker/pack-merges.ts), what the view picked, and the tokens that pick lights up
 * in the token stream and the cache map. One request is in flight at a time; the latest wanted
 * one follows when it returns (head-view-requests.svelte.ts).
 */
import type { EngineClient } from '../worker/client.ts';
import type { EngineEvent, MergeEntryView, MergeView } from '../worker/protocol.ts';
import { HeadViewRequests, type HeadSelection } from './head-view-requests.svelte.ts';

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

/** The merge view of the shown step and head, with what the view picked. */
export class MergeViewState extends HeadViewRequests<MergeView> {
  /** what the merge view picked; its tokens light up in the token stream and the cache map */
  pick = $state.raw<MergePick | null>(null);

  constructor(client: EngineClient, selection: () => HeadSelection, fail: (error: unknown) => void) {
    super(
      (at) => client.request<Extract<EngineEvent, { type: 'merges' }>>({ type: 'merges', ...at }),
      selection,
      fail,
    );
  }

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

  /** The shown trace was replaced: forget the view, the pick and what was asked. */
  override clear(): void {
    super.clear();
    this.pick = null;
  }
}
