/// <reference lib="webworker" />
/**
 * The engine Web Worker: onnxruntime-web + the kvscope engine, driven by protocol.ts messages.
 * The page never blocks on the model: every forward runs here.
 */
import * as ort from 'onnxruntime-web';
import { loadModel } from '../../../engine/model/load.ts';
import { uploadedModelSource } from '../models/source.ts';
import { modelStore } from '../models/store.ts';
import { HostError } from './host-error.ts';
import { EngineHost } from './host.ts';
import type { Command, EngineEvent, LoadCommand } from './protocol.ts';

declare const self: DedicatedWorkerGlobalScope;

function configureRuntime(command: LoadCommand): void {
  // The app serves its own copy of the wasm runtime (static/ort/); never a CDN. With one thread
  // the glue embedded in the bundle is used and only the .wasm file is fetched.
  ort.env.wasm.wasmPaths = command.threads > 1 && command.mjsUrl ? { wasm: command.wasmUrl, mjs: command.mjsUrl } : { wasm: command.wasmUrl };
  ort.env.wasm.numThreads = command.threads;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'error';
}

async function checkRuntime(command: LoadCommand): Promise<void> {
  let response: Response;
  try {
    response = await fetch(command.wasmUrl, { method: 'HEAD' });
  } catch {
    // unreachable network (offline): the service worker or the HTTP cache may still serve the file;
    // if not, creating the inference session fails and is reported as a wasm error
    return;
  }
  if (!response.ok) {
    throw new HostError('wasm', `The WebAssembly runtime is unavailable: ${command.wasmUrl} answered HTTP ${response.status}. The app must serve onnxruntime-web's ort-wasm-simd-threaded.wasm.`);
  }
}

const post = (event: EngineEvent, transfer: Transferable[] = []) => self.postMessage(event, transfer);

const host = new EngineHost(post, {
  loadModel,
  fetch: self.fetch.bind(self),
  caches: typeof self.caches === 'object' && self.caches ? self.caches : null,
  configureRuntime,
  checkRuntime,
  // models the user uploaded at /models: their files are in this origin's OPFS / IndexedDB
  uploadedSource: (key) => uploadedModelSource(modelStore(), key),
});

self.onmessage = (event: MessageEvent<Command>) => host.handle(event.data);
