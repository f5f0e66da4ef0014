/** engine/pool.ts: results in job order, balancing, cancellation, the first failure. */
import { describe, expect, it } from 'vitest';
import { mapPool, type PoolWorker } from '../../engine/pool.ts';

const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 1));

/** A worker that takes `job` ticks for job `job`, reporting progress after each, and logs the jobs it ran. */
function slowWorker(name: string, log: string[]): PoolWorker<number, string, number> {
  return {
    async run(job, onProgress, signal) {
      log.push(`${name}:${job}`);
      for (let i = 1; i <= job; i++) {
        await tick();
        if (signal.aborted) throw new Error('cancelled');
        onProgress(i);
      }
      return `${job}×`;
    },
  };
}

describe('mapPool', () => {
  it('gives results by job index whatever order they finish in, each worker taking the next job', async () => {
    const log: string[] = [];
    const finished: number[] = [];
    const progress = new Map<number, number>();
    const jobs = [8, 1, 1, 1, 5];
    const results = await mapPool(jobs, [slowWorker('a', log), slowWorker('b', log)], {
      onResult: (job) => finished.push(job),
      onProgress: (job, done) => progress.set(job, done),
    });
    expect(results).toEqual(['8×', '1×', '1×', '1×', '5×']);
    expect(finished[0]).not.toBe(0); // job 0 is the longest: others finish first
    // a is busy with the 8-tick job while b takes every other one
    expect(log.filter((entry) => entry.startsWith('a:'))).toEqual(['a:8']);
    expect(log.filter((entry) => entry.startsWith('b:'))).toEqual(['b:1', 'b:1', 'b:1', 'b:5']);
    expect([...progress.entries()].sort((x, y) => x[0] - y[0])).toEqual(jobs.map((j, i) => [i, j]));
  });

  it('one worker runs the jobs one after another, in order', async () => {
    const log: string[] = [];
    await mapPool([3, 1, 2], [slowWorker('only', log)]);
    expect(log).toEqual(['only:3', 'only:1', 'only:2']);
  });

  it('an abort keeps what finished and leaves the rest undefined', async () => {
    const controller = new AbortController();
    const results = await mapPool([1, 50, 50, 50], [slowWorker('a', []), slowWorker('b', [])], {
      signal: controller.signal,
      onResult: () => controller.abort(),
    });
    expect(results).toEqual(['1×', undefined, undefined, undefined]);
    const none = await mapPool([1, 2], [slowWorker('a', [])], { signal: AbortSignal.abort() });
    expect(none).toEqual([undefined, undefined]);
  });

  it('rejects with the first failure once every worker has stopped', async () => {
    const stopped: string[] = [];
    const failing: PoolWorker<number, string, number> = {
      async run() {
        await tick();
        throw new Error('boom');
      },
    };
    const patient: PoolWorker<number, string, number> = {
      async run(_job, _onProgress, signal) {
        while (!signal.aborted) await tick();
        stopped.push('patient');
        throw new Error('cancelled');
      },
    };
    await expect(mapPool([1, 2, 3], [patient, failing])).rejects.toThrow('boom');
    expect(stopped).toEqual(['patient']);
    await expect(mapPool([1], [])).rejects.toThrow(RangeError);
  });
});
