/** Test doubles for the worker host: an HTTP server over the fixture directory and an in-memory Cache API. */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { CacheLike } from '../../src/lib/worker/model-cache.ts';
import type { EngineEvent } from '../../src/lib/worker/protocol.ts';

/** tests/fixtures/tiny-model (tests run from the repository root; no import.meta.url: happy-dom replaces URL) */
export const FIXTURE_DIR = resolve('tests/fixtures/tiny-model');
export const ORIGIN = 'http://kvscope.test';
export const MODELS_URL = `${ORIGIN}/models/`;

export interface FakeServer {
  fetch: typeof fetch;
  /** path (under /models/) → replacement: bytes, or a status code */
  faults: Map<string, Uint8Array | number>;
  /** when true every request fails like an unreachable network */
  offline: boolean;
  requests: string[];
}

export function fakeServer(): FakeServer {
  const index = JSON.stringify({ default: 'tiny-fixture', models: [{ id: 'tiny-fixture', path: 'tiny' }] });
  const server: FakeServer = {
    faults: new Map(),
    offline: false,
    requests: [],
    fetch: (async (input: RequestInfo | URL) => {
      const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
      server.requests.push(url.pathname);
      if (server.offline) throw new TypeError('Failed to fetch');
      const path = url.pathname.replace(/^\/models\//, '');
      const fault = server.faults.get(path);
      if (typeof fault === 'number') return new Response('fault', { status: fault });
      let body: Uint8Array;
      if (fault) body = fault;
      else if (path === 'index.json') body = new TextEncoder().encode(index);
      else if (path.startsWith('tiny/')) {
        try {
          body = new Uint8Array(readFileSync(join(FIXTURE_DIR, path.slice('tiny/'.length))));
        } catch {
          return new Response('not found', { status: 404 });
        }
      } else return new Response('not found', { status: 404 });
      return new Response(body.slice(), { headers: { 'content-length': String(body.length) } });
    }) as typeof fetch,
  };
  return server;
}

export class MemoryCache implements CacheLike {
  readonly entries = new Map<string, Uint8Array>();
  async match(request: string): Promise<Response | undefined> {
    const bytes = this.entries.get(request);
    return bytes ? new Response(bytes.slice()) : undefined;
  }
  async put(request: string, response: Response): Promise<void> {
    this.entries.set(request, new Uint8Array(await response.arrayBuffer()));
  }
  async delete(request: string): Promise<boolean> {
    return this.entries.delete(request);
  }
  async keys(): Promise<{ url: string }[]> {
    return [...this.entries.keys()].map((url) => ({ url }));
  }
}

/** Collects the events a host posts; `reply(id)` waits for the reply to command `id`. */
export class EventLog {
  readonly events: EngineEvent[] = [];
  private waiters: { id: number; resolve: (e: EngineEvent) => void }[] = [];

  readonly post = (event: EngineEvent) => {
    this.events.push(event);
    if (event.type === 'progress' || event.type === 'step' || event.type === 'spec-measuring') return;
    for (const w of this.waiters.filter((w) => w.id === event.id)) w.resolve(event);
    this.waiters = this.waiters.filter((w) => w.id !== event.id);
  };

  reply(id: number): Promise<EngineEvent> {
    const found = this.events.find((e) => e.id === id && e.type !== 'progress' && e.type !== 'step' && e.type !== 'spec-measuring');
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => this.waiters.push({ id, resolve }));
  }

  of<T extends EngineEvent['type']>(type: T, id?: number): Extract<EngineEvent, { type: T }>[] {
    return this.events.filter((e) => e.type === type && (id === undefined || e.id === id)) as Extract<EngineEvent, { type: T }>[];
  }
}
