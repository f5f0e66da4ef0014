/** The page side of the protocol: replies by id, streamed events, crashes and restarts. */
import { describe, expect, it } from 'vitest';
import { EngineClient, EngineFailure, type WorkerLike } from '../../src/lib/worker/client.ts';
import type { Command, EngineEvent } from '../../src/lib/worker/protocol.ts';

class FakeWorker implements WorkerLike {
  onmessage: ((event: MessageEvent) => void) | null = null;
  onerror: ((event: ErrorEvent | Event) => void) | null = null;
  onmessageerror: ((event: MessageEvent) => void) | null = null;
  sent: Command[] = [];
  terminated = false;
  postMessage(message: unknown): void {
    this.sent.push(message as Command);
  }
  terminate(): void {
    this.terminated = true;
  }
  emit(event: EngineEvent): void {
    this.onmessage?.({ data: event } as MessageEvent);
  }
  fail(message: string): void {
    this.onerror?.({ message, preventDefault() {} } as unknown as ErrorEvent);
  }
}

describe('EngineClient', () => {
  it('resolves each command with its own reply and streams events before it', async () => {
    const workers: FakeWorker[] = [];
    const client = new EngineClient(() => {
      const w = new FakeWorker();
      workers.push(w);
      return w;
    });
    const w = workers[0];
    const seen: string[] = [];
    const run = client.request({ type: 'run', steps: 2, stopAtEos: true }, (e) => seen.push(e.type));
    const tokenize = client.request({ type: 'tokenize', text: 'x' });
    const [runId, tokId] = w.sent.map((c) => c.id);
    expect(runId).not.toBe(tokId);
    w.emit({ type: 'tokenized', id: tokId, count: 3, context: 8 });
    w.emit({ type: 'step', id: runId, view: {} as never });
    w.emit({ type: 'step', id: runId, view: {} as never });
    w.emit({ type: 'done', id: runId, reason: 'length', steps: 2, state: {} as never });
    await expect(tokenize).resolves.toMatchObject({ type: 'tokenized', count: 3 });
    await expect(run).resolves.toMatchObject({ type: 'done', steps: 2 });
    expect(seen).toEqual(['step', 'step']);
  });

  it('rejects with the error kind the worker reports', async () => {
    const w = new FakeWorker();
    const client = new EngineClient(() => w);
    const start = client.request({ type: 'start', prompt: 'x', sampler: { temperature: 0, topK: 0, topP: 1, seed: 0 }, policy: { id: 'full', params: {} } });
    w.emit({ type: 'error', id: w.sent[0].id, kind: 'prompt', message: 'too long' });
    await expect(start).rejects.toMatchObject({ kind: 'prompt', message: 'too long' });
  });

  it('fails everything pending when the worker crashes, and restarts with a fresh worker', async () => {
    const workers: FakeWorker[] = [];
    const client = new EngineClient(() => {
      const w = new FakeWorker();
      workers.push(w);
      return w;
    });
    const crashes: string[] = [];
    client.onCrash = (m) => crashes.push(m);
    const pending = client.request({ type: 'step' });
    workers[0].fail('boom');
    const error = await pending.catch((e) => e);
    expect(error).toBeInstanceOf(EngineFailure);
    expect(error.kind).toBe('crash');
    expect(crashes[0]).toMatch(/stopped unexpectedly: boom/);
    client.restart();
    expect(workers[0].terminated).toBe(true);
    expect(workers).toHaveLength(2);
    const next = client.request({ type: 'tokenize', text: '' });
    workers[1].emit({ type: 'tokenized', id: workers[1].sent[0].id, count: 1, context: 8 });
    await expect(next).resolves.toMatchObject({ count: 1 });
  });
});
