/// <reference lib="webworker" />
/**
 * An evaluation worker of /bench (eval-pool.ts): gets EvalWorkerInit, loads that model once —
 * from the Cache API copy the engine worker made, else from the network — with a single-threaded
 * wasm runtime, then serves evaluation jobs (engine/eval/remote.ts) until terminated.
 */
import * as ort from 'onnxruntime-web';
import { serializeError, serveEvalJobs, type EvalWorkerReply, type EvalWorkerRequest } from '../../../engine/eval/remote.ts';
import { ModelError } from '../../../engine/errors.ts';
import { loadModel } from '../../../engine/model/load.ts';
import type { EvalWorkerInit } from './eval-pool.ts';
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
  const index = (await response.json()) as { models?: { id: string; path: string }[] };
  const entry = index.models?.find((m) => m.id === init.modelId);
  if (!entry) throw new ModelError(`${indexUrl}: no model ${JSON.stringify(init.modelId)}`);
  return `${modelsUrl}${entry.path}/`;
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
    const cache = await openCache();
    const model = await loadModel(cachedModelSource(await modelUrl(init, cache), cache), { numThreads: 1, calibration: true });
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
