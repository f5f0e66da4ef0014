/**
 * Loading the chosen model into a page's engine worker: EngineClient.loadModel with the choice's
 * fields (choice.ts loadFields: an index id or an uploaded model's key). Shared by the explorer,
 * /compare and /bench.
 */
import type { EngineClient, EngineUrls } from '../worker/client.ts';
import type { EngineEvent, LoadProgressView } from '../worker/protocol.ts';
import { loadFields, type ModelChoice } from './choice.ts';

export type ReadyEvent = Extract<EngineEvent, { type: 'ready' }>;

export function loadChosenModel(
  client: EngineClient,
  urls: EngineUrls,
  threads: number,
  choice: ModelChoice | null,
  onProgress: (progress: LoadProgressView) => void,
): Promise<ReadyEvent> {
  if (!choice) return client.loadModel(urls, threads, onProgress);
  return client.request<ReadyEvent>({ type: 'load', modelsUrl: urls.models, wasmUrl: urls.wasm, mjsUrl: urls.mjs, threads, ...loadFields(choice) }, (event) => {
    if (event.type === 'progress') onProgress(event.progress);
  });
}
