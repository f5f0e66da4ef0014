/**
 * The explorer's quantization error view state: the view of the shown step and head (packed by the
 * worker, src/lib/worker/pack-quant.ts), asked for as the merge view is (head-view-requests.svelte.ts).
 */
import type { EngineClient } from '../worker/client.ts';
import type { EngineEvent, QuantView } from '../worker/protocol.ts';
import { HeadViewRequests, type HeadSelection } from './head-view-requests.svelte.ts';

export class QuantViewState extends HeadViewRequests<QuantView> {
  constructor(client: EngineClient, selection: () => HeadSelection, fail: (error: unknown) => void) {
    super((at) => client.request<Extract<EngineEvent, { type: 'quant' }>>({ type: 'quant', ...at }), selection, fail);
  }
}
