/// <reference lib="webworker" />
/**
 * An evaluation worker of /bench (eval-pool.ts): gets EvalWorkerInit, loads that model once —
 * from the Cache API copy the engine worker made, else from the network; an uploaded model from
 * this browser's storage (src/lib/models/) — with a single-threaded
 * wasm runtime, then serves evaluation jobs (engine/eval/remote.ts) until terminated.
 */
import * as ort from 'onnxruntime-web';
import { serializeError, serveEvalJobs, type EvalWorkerReply, type EvalWorkerRequest } from '../../../engine/eval/remote.ts';
import { ModelError } from '../../../engine/errors.ts';
import { loadModel, type ModelSource } from '../../../engine/model/load.ts';
import { uploadedModelSource } from '../models/source.ts';
import { modelStore } from '../models/store.ts';
import type { EvalWorkerInit } from './eval-pool.ts';
import { indexEntry } from './drafter-env.ts';
import { cachedModelSource, MODEL_CACHE_NAME, type CacheLike } from './model-cache.ts';
import { yieldToEventLoop } from './yield.ts';

declare const self: DedicatedWorkerGlobalScope;

const post = (message: EvalWorkerReply) => self.postMessage(message);

async function openCache(): Promise<CacheLike | null> {
  return typeof self.caches === 'object' && self.caches ? self.caches.open(MODEL_CACHE_NAME).catch(() => null) : null;
}

/** The model's directory URL from models/index.json (the cached copy when offline, as the engine worker does). */
async function modelUrl(init: EvalWorkerInit, cache: CacheLike | null): Promise<string> {
  const modelsUrl = init.modelsUrl.endsWith('/') ? init.modelsUrl : `${init.modelsUrl}/`;
  const indexUrl = `${modelsUrl}index.json`;
  let response = await fetch(indexUrl, { cache: 'no-cache' }).catch(() => undefined);
  if (!response?.ok) response = (await cache?.match(indexUrl).catch(() => undefined)) ?? response;
  if (!response?.ok) throw new ModelError(`${indexUrl}: cannot fetch (${response ? `HTTP ${response.status}` : 'offline'})`);
  // the id and the entry's path are checked before they become the model's URL
  const entry = indexEntry(await response.json(), init.modelId);
  if (!entry) throw new ModelError(`${indexUrl}: no model ${JSON.stringify(init.modelId)}`);
  return `${modelsUrl}${entry.path}/`;
}

/** The uploaded model the engine worker loaded (this browser's storage), else the index's model through the Cache API. */
async function modelSource(init: EvalWorkerInit): Promise<ModelSource> {
  if (init.modelSource) return uploadedModelSource(modelStore(), init.modelSource.key);
  const cache = await openCache();
  return cachedModelSource(await modelUrl(init, cache), cache);
}

self.onmessage = async (event: MessageEvent<EvalWorkerInit>) => {
  const init = event.data;
  // jobs only come after 'ready', when serveEvalJobs has taken over onmessage
  self.onmessage = null;
  try {
    ort.env.wasm.wasmPaths = { wasm: init.wasmUrl };
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    ort.env.logLevel = 'error';
    const model = await loadModel(await modelSource(init), { numThreads: 1, calibration: true });
    serveEvalJobs(
      model,
      {
        post,
        listen: (handler: (message: EvalWorkerRequest) => void) => {
          self.onmessage = (message: MessageEvent<EvalWorkerRequest>) => handler(message.data);
        },
      },
      yieldToEventLoop,
    );
  } catch (error) {
    post({ type: 'failed', error: serializeError(error) });
  }
};
