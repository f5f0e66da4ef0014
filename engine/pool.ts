/**
 * A small work pool: maps jobs to results on a fixed set of workers, each taking the next job as
 * soon as it is free, so jobs of uneven length balance themselves. What a worker is — this thread,
 * a Node worker thread, a Web Worker — is the caller's business (PoolWorker). Results come back
 * by job index whatever order they finish in, so a parallel run can report exactly what a serial
 * one does; one worker gives the serial run itself, job after job in order.
 */

export interface PoolWorker<Job, Result, Progress> {
  /**
   * Runs one job. Once `signal` aborts the worker should stop soon; the promise may then reject
   * (ignored) or resolve (the job counts as finished).
   */
  run(job: Job, onProgress: (progress: Progress) => void, signal: AbortSignal): Promise<Result>;
}

export interface PoolHooks<Result, Progress> {
  onProgress?: (job: number, progress: Progress) => void;
  /** job `job` finished; called in the order jobs finish */
  onResult?: (job: number, result: Result) => void;
  /** stops handing out jobs and aborts those running; mapPool then resolves with what finished */
  signal?: AbortSignal;
}

/**
 * Results by job index; undefined for a job that did not finish because `signal` aborted. The
 * first job that fails aborts the others, and mapPool rejects with its error once every worker
 * has stopped (so no worker is still busy when the caller sees the error).
 */
export async function mapPool<Job, Result, Progress>(
  jobs: readonly Job[],
  workers: readonly PoolWorker<Job, Result, Progress>[],
  hooks: PoolHooks<Result, Progress> = {},
): Promise<(Result | undefined)[]> {
  if (workers.length === 0) throw new RangeError('mapPool needs at least one worker');
  const results: (Result | undefined)[] = jobs.map(() => undefined);
  const stop = new AbortController();
  const forwardAbort = () => stop.abort();
  if (hooks.signal?.aborted) stop.abort();
  hooks.signal?.addEventListener('abort', forwardAbort);
  // an array, not a variable: assignments inside the async callbacks would not narrow a `let`
  const failures: unknown[] = [];
  let next = 0;

  const drain = async (worker: PoolWorker<Job, Result, Progress>) => {
    while (!stop.signal.aborted && next < jobs.length) {
      const index = next++;
      try {
        const result = await worker.run(jobs[index], (progress) => hooks.onProgress?.(index, progress), stop.signal);
        results[index] = result;
        hooks.onResult?.(index, result);
      } catch (error) {
        if (!stop.signal.aborted) {
          failures.push(error);
          stop.abort();
        }
        return;
      }
    }
  };

  try {
    await Promise.all(workers.map(drain));
  } finally {
    hooks.signal?.removeEventListener('abort', forwardAbort);
  }
  if (failures.length > 0) throw failures[0];
  return results;
}
