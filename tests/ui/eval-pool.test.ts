/**
 * /bench evaluations in parallel (src/lib/worker/lab.ts + eval-pool.ts + engine/eval/remote.ts)
 * in Node: LabHost shares the runs with evaluation workers — here fakes that load the fixture and
 * serve jobs over cloned, asynchronous messages as a Web Worker would — and reports exactly what
 * it reports running them itself; Cancel keeps what finished; a worker that fails fails the run.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { serializeError, serveEvalJobs, type EvalWorkerReply, type EvalWorkerRequest } from '../../engine/eval/remote.ts';
import { loadModelFromDirectory } from '../../engine/model/load-node.ts';
import type { LoadedModel } from '../../engine/model/load.ts';
import type { EvalWorkerInit, WorkerLike } from '../../src/lib/worker/eval-pool.ts';
import { LabHost } from '../../src/lib/worker/lab.ts';
import type { EvalConfig, EvalReport, LabCommand, LabEvent } from '../../src/lib/worker/lab-protocol.ts';
import type { EngineEvent } from '../../src/lib/worker/protocol.ts';
import { FIXTURE_DIR, MODELS_URL, ORIGIN } from './helpers.ts';

const HELDOUT_URL = `${ORIGIN}/data/heldout.json`;
const WASM_URL = `${ORIGIN}/ort/ort-wasm-simd-threaded.wasm`;
const heldout = readFileSync(resolve('static/data/heldout.json'));
const fetchHeldout = (async () => new Response(heldout.slice())) as unknown as typeof fetch;

/** A Web Worker running eval.worker.ts's part, in this thread: messages are cloned and delivered later. */
class FakeEvalWorker implements WorkerLike {
  onmessage: ((event: MessageEvent) => void) | null = null;
  onerror: ((event: ErrorEvent) => void) | null = null;
  readonly inits: EvalWorkerInit[] = [];
  terminated = false;
  private deliver: ((message: EvalWorkerRequest) => void) | null = null;

  constructor(private readonly failLoad = false) {}

  postMessage(message: unknown): void {
    const data = structuredClone(message) as EvalWorkerInit | EvalWorkerRequest;
    setTimeout(() => {
      if (this.terminated) return;
      if (data.type === 'init') void this.start(data);
      else this.deliver?.(data);
    });
  }

  private reply(message: EvalWorkerReply): void {
    const data = structuredClone(message);
    setTimeout(() => !this.terminated && this.onmessage?.({ data } as MessageEvent));
  }

  private async start(init: EvalWorkerInit): Promise<void> {
    this.inits.push(init);
    try {
      if (this.failLoad) throw new Error('model.onnx: file is missing');
      const model = await loadModelFromDirectory(FIXTURE_DIR);
      const endpoint = { post: (m: EvalWorkerReply) => this.reply(m), listen: (h: (m: EvalWorkerRequest) => void) => void (this.deliver = h) };
      serveEvalJobs(model, endpoint, () => new Promise((done) => setTimeout(done, 0)));
    } catch (error) {
      this.reply({ type: 'failed', error: serializeError(error) });
    }
  }

  terminate(): void {
    this.terminated = true;
  }
}

function setup(failLoad = false) {
  const events: (LabEvent | EngineEvent)[] = [];
  const started: FakeEvalWorker[] = [];
  const host = new LabHost((event) => events.push(event), fetchHeldout, () => {
    const worker = new FakeEvalWorker(failLoad);
    started.push(worker);
    return worker;
  });
  let id = 0;
  const evaluate = async (model: LoadedModel, config: EvalConfig, workers: number): Promise<EvalReport> => {
    const command: LabCommand = { type: 'eval', id: ++id, config, heldoutUrl: HELDOUT_URL, parallel: { workers, modelsUrl: MODELS_URL, wasmUrl: WASM_URL } };
    await host.run(command, model);
    const done = events.find((e) => e.type === 'eval-done' && e.id === command.id);
    if (done?.type !== 'eval-done') throw new Error('no eval-done');
    return done.report;
  };
  return { host, events, started, evaluate };
}

const withoutTimings = (report: EvalReport) => JSON.stringify(report, (key, value) => (key === 'seconds' || key === 'msPerStep' ? undefined : value));

const PPL: EvalConfig = { task: 'ppl', policies: ['full', 'window', 'h2o'], budgets: [8, 16], ppl: { windows: 1, tokens: 40, prefix: 8, seed: 2 } };

describe('parallel /bench evaluations', () => {
  it('report exactly what the engine worker reports alone; rows say which run they are; the workers are kept', async () => {
    const model = await loadModelFromDirectory(FIXTURE_DIR);
    const t = setup();
    const serial = await t.evaluate(model, PPL, 1);
    expect(t.started).toHaveLength(0);
    // the engine worker takes runs too: two evaluation workers for three at once
    const parallel = await t.evaluate(model, PPL, 3);
    expect(t.started).toHaveLength(2);
    expect(t.started[0].inits).toEqual([{ type: 'init', modelsUrl: MODELS_URL, modelId: 'tiny-fixture', wasmUrl: WASM_URL }]);
    expect(withoutTimings(parallel)).toBe(withoutTimings(serial));
    const rows = t.events.filter((e) => e.type === 'eval-row' && e.id === 2);
    expect(rows.map((e) => (e.type === 'eval-row' ? e.run : -1)).sort()).toEqual([0, 1, 2, 3, 4]);
    const progress = t.events.filter((e) => e.type === 'eval-progress' && e.id === 2);
    expect(progress.at(-1)?.type === 'eval-progress' && progress.at(-1)).toMatchObject({ progress: { done: 5 * 32, total: 5 * 32 } });

    // a needle grid on the same workers (no new ones started), again as serial
    const needle: EvalConfig = { task: 'needle', policies: ['streaming', 'tova'], budgets: [16], needle: { lengths: [80], depths: [0, 1], trials: 1, seed: 4 } };
    const needleParallel = await t.evaluate(model, needle, 2);
    expect(t.started).toHaveLength(2);
    expect(withoutTimings(needleParallel)).toBe(withoutTimings(await t.evaluate(model, needle, 1)));
    await model.release();
  });

  it('Cancel stops every worker and keeps the rows that finished; the next evaluation reuses them', async () => {
    const model = await loadModelFromDirectory(FIXTURE_DIR);
    const t = setup();
    const config: EvalConfig = { task: 'ppl', policies: ['window'], budgets: [4, 8, 16, 32, 64], ppl: { windows: 2, tokens: 200, prefix: 8 } };
    const running = t.evaluate(model, config, 2);
    while (!t.events.some((e) => e.type === 'eval-row')) await new Promise((done) => setTimeout(done, 5));
    t.host.pause();
    const report = await running;
    expect(report.cancelled).toBe(true);
    expect(report.records[0].rows.length).toBeGreaterThan(0);
    expect(report.records[0].rows.length).toBeLessThan(5);
    const specs = report.records[0].rows.map((r) => r.spec);
    expect(specs).toEqual([...specs].sort((a, b) => Number(a.split('=')[1]) - Number(b.split('=')[1])));
    const again = await t.evaluate(model, { ...config, budgets: [4, 8], ppl: { windows: 1, tokens: 40, prefix: 8 } }, 2);
    expect(again.cancelled).toBe(false);
    expect(t.started).toHaveLength(1);
    await model.release();
  });

  it('a worker whose model does not load fails the evaluation with its message, and is not reused', async () => {
    const model = await loadModelFromDirectory(FIXTURE_DIR);
    const t = setup(true);
    await expect(t.evaluate(model, PPL, 2)).rejects.toThrow('model.onnx: file is missing');
    expect(t.started).toHaveLength(1);
    expect(t.started[0].terminated).toBe(true);
    await model.release();
  });
});
