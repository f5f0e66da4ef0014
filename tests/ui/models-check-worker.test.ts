/**
 * The page side of a model check (src/lib/models/check.ts) with a fake worker: a reply, a worker
 * error, a reply that cannot be deserialised (`messageerror`) and a Cancel each settle the check and
 * end the worker, so /models never stays "Checking…" (a worker killed for memory sends nothing: only
 * Cancel ends that one).
 */
import { describe, expect, it } from 'vitest';
import { CANCELLED_MESSAGE, CheckFailure, checkFolder, type WorkerLike } from '../../src/lib/models/check.ts';
import type { CheckReply } from '../../src/lib/models/check-protocol.ts';
import type { StoredModel } from '../../src/lib/models/db.ts';
import type { PickedFolder } from '../../src/lib/models/folder.ts';

class FakeWorker implements WorkerLike {
  onmessage: WorkerLike['onmessage'] = null;
  onerror: WorkerLike['onerror'] = null;
  onmessageerror: WorkerLike['onmessageerror'] = null;
  posted: unknown[] = [];
  terminated = 0;
  postMessage(message: unknown): void {
    this.posted.push(message);
  }
  terminate(): void {
    this.terminated++;
  }
  reply(data: CheckReply): void {
    this.onmessage?.call(this as unknown as Worker, new MessageEvent('message', { data }));
  }
}

const FOLDER: PickedFolder = { name: 'copy', files: [{ path: 'manifest.json', file: new File(['{}'], 'manifest.json') }] };
const MODEL = { key: 'k', id: 'm', name: 'M', role: 'draft', sha256: 'a'.repeat(64), bytes: 1, files: [], added: 1, storage: 'idb' } satisfies StoredModel;

function start(signal?: AbortSignal) {
  const worker = new FakeWorker();
  const progress: number[] = [];
  const result = checkFolder(FOLDER, 'ort.wasm', (p) => progress.push(p.fraction), () => worker, signal);
  return { worker, progress, result };
}

describe('checkFolder', () => {
  it('resolves with what the worker stored, and ends the worker', async () => {
    const { worker, progress, result } = start();
    expect(worker.posted).toMatchObject([{ type: 'check', folder: 'copy', wasmUrl: 'ort.wasm' }]);
    worker.reply({ type: 'progress', progress: { phase: 'read', file: 'model.onnx', fraction: 0.5, done: 1, total: 2 } });
    worker.reply({ type: 'stored', model: MODEL, duplicate: true, updated: ['calibration.json'] });
    await expect(result).resolves.toEqual({ model: MODEL, duplicate: true, updated: ['calibration.json'] });
    expect(progress).toEqual([0.5]);
    expect(worker.terminated).toBe(1);
  });

  it('a reply that cannot be deserialised fails the check and ends the worker', async () => {
    const { worker, result } = start();
    worker.onmessageerror?.call(worker as unknown as Worker, new MessageEvent('messageerror'));
    await expect(result).rejects.toThrow(new CheckFailure('The model check stopped: a reply from its worker could not be read'));
    expect(worker.terminated).toBe(1);
  });

  it('Cancel ends a worker that stopped answering; later replies change nothing', async () => {
    const controller = new AbortController();
    const { worker, progress, result } = start(controller.signal);
    controller.abort();
    await expect(result).rejects.toThrow(CANCELLED_MESSAGE);
    expect(worker.terminated).toBe(1);
    worker.reply({ type: 'progress', progress: { phase: 'read', file: 'model.onnx', fraction: 0.5, done: 1, total: 2 } });
    worker.reply({ type: 'failed', message: 'late' });
    expect(progress).toEqual([]);
    expect(worker.terminated).toBe(1);
  });

  it('a worker error fails the check with its message', async () => {
    const { worker, result } = start();
    worker.onerror?.call(worker as unknown as Worker, Object.assign(new Event('error'), { message: 'out of memory' }) as ErrorEvent);
    await expect(result).rejects.toThrow('The model check stopped: out of memory');
    expect(worker.terminated).toBe(1);
  });
});
