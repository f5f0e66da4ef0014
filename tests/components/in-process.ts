/** An ExplorerState whose "worker" is the real EngineHost in-process over the tiny fixture model. */
import { flushSync } from 'svelte';
import { loadModel } from '../../engine/model/load.ts';
import { EngineClient, type WorkerLike } from '../../src/lib/worker/client.ts';
import { EngineHost } from '../../src/lib/worker/host.ts';
import type { Command, EngineEvent } from '../../src/lib/worker/protocol.ts';
import { ExplorerState } from '../../src/lib/explorer/state.svelte.ts';
import { fakeServer, MemoryCache, MODELS_URL, ORIGIN } from '../ui/helpers.ts';

export class InProcessWorker implements WorkerLike {
  onmessage: ((event: MessageEvent) => void) | null = null;
  onerror: ((event: ErrorEvent | Event) => void) | null = null;
  private host: EngineHost;
  constructor(fullSteps?: number) {
    const server = fakeServer();
    const cache = new MemoryCache();
    this.host = new EngineHost((event: EngineEvent) => setTimeout(() => this.onmessage?.({ data: event } as MessageEvent)), {
      loadModel,
      fetch: server.fetch,
      caches: { open: async () => cache },
      fullSteps,
    });
  }
  postMessage(message: unknown): void {
    setTimeout(() => this.host.handle(message as Command));
  }
  terminate(): void {}
}

export async function until(condition: () => boolean, what: string, timeout = 20_000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
    flushSync();
  }
}

export function explorer(fullSteps?: number): ExplorerState {
  const state = new ExplorerState(new EngineClient(() => new InProcessWorker(fullSteps)), {
    models: MODELS_URL,
    wasm: `${ORIGIN}/ort/ort-wasm-simd-threaded.wasm`,
    mjs: `${ORIGIN}/ort/ort-wasm-simd-threaded.mjs`,
  });
  state.prompt = 'The cat sat on the mat.';
  return state;
}

