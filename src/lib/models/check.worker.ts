/// <reference lib="webworker" />
/**
 * Checks an uploaded model folder and stores it (/models): off the page, since hashing tens of MB
 * and creating an onnxruntime session take seconds. The check is the engine's own: the manifest's
 * schema (validateManifest), every listed file present with its size and sha256, the graph's
 * inputs and outputs against the manifest (a real session) and the tokenizer (loadModel), and the
 * optional calibration.json against the graph. Only then are the files written (store.ts: all or
 * nothing). Every failure is one message naming the file or field.
 */
import * as ort from 'onnxruntime-web';
import { ModelError } from '../../../engine/errors.ts';
import { loadModel, readManifest, type LoadProgress } from '../../../engine/model/load.ts';
import { modelSha256 } from '../../../engine/model/manifest.ts';
import { OPTIONAL_FILES, type CheckPhase, type CheckReply, type CheckRequest } from './check-protocol.ts';
import { folderSource } from './source.ts';
import { modelStore } from './store.ts';

declare const self: DedicatedWorkerGlobalScope;

const post = (reply: CheckReply) => self.postMessage(reply);

/** Progress over the whole check: reading and hashing the listed files, then the session, then storing. */
function tracker(total: number) {
  const read = new Map<string, number>();
  const verified = new Map<string, number>();
  const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  return (phase: CheckPhase, file: string, p?: LoadProgress, stored?: number) => {
    if (p?.phase === 'download') read.set(file, p.loaded);
    if (p?.phase === 'verify' && p.loaded >= p.total) verified.set(file, p.total);
    const checked = (sum(read) + sum(verified)) / 2;
    const base = total > 0 ? checked / total : 0;
    const fraction = phase === 'store' ? 0.9 + 0.1 * (stored ?? 0) : phase === 'session' ? 0.85 : 0.85 * base;
    post({ type: 'progress', progress: { phase, file, fraction: Math.min(1, fraction), done: Math.min(total, Math.round(checked)), total } });
  };
}

async function check(request: CheckRequest): Promise<void> {
  ort.env.wasm.wasmPaths = { wasm: request.wasmUrl };
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'error';
  const folder = request.folder || 'picked';
  const files = new Map(request.files.map((f) => [f.path, f.file as Blob]));
  post({ type: 'progress', progress: { phase: 'manifest', file: 'manifest.json', fraction: 0, done: 0, total: 0 } });
  const source = folderSource(files, folder);
  // the manifest first, only for the progress total (loadModel reads and checks it again)
  const total = (await readManifest(source)).files.reduce((sum, f) => sum + f.bytes, 0);
  const report = tracker(total);

  const model = await loadModel(source, {
    numThreads: 1,
    calibration: true,
    onProgress: (p) => report(p.phase === 'session' ? 'session' : p.phase === 'verify' ? 'verify' : 'read', p.file, p),
  });
  await model.release();
  const { manifest } = model;
  if (model.calibrationError) {
    const message = model.calibrationError;
    throw new ModelError(message.startsWith('calibration.json') ? message : `calibration.json: ${message}`);
  }

  // what is stored: the manifest, every file it lists, the optional files of the format; nothing else
  const keep = new Set<string>(['manifest.json', ...manifest.files.map((f) => f.path), ...OPTIONAL_FILES]);
  const stored = request.files.filter((f) => keep.has(f.path)).map((f) => ({ path: f.path, blob: f.file as Blob }));
  const sha256 = await modelSha256(manifest);
  report('store', '', undefined, 0);
  const result = await modelStore().add({ manifest, sha256, files: stored });
  report('store', '', undefined, 1);
  post({ type: 'stored', model: result.model, duplicate: result.duplicate, updated: result.updated });
}

self.onmessage = (event: MessageEvent<CheckRequest>) => {
  check(event.data).catch((error: unknown) => post({ type: 'failed', message: error instanceof Error ? error.message : String(error) }));
};
