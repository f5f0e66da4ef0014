/**
 * Perplexity of held-out text with a policy active (StreamingLLM / LaCache style "perplexity on a
 * stream"). Protocol, per window of held-out text (heldoutWindows: BOS + documents, seeded):
 *
 *   1. prefill the first `prefix` tokens (a short prompt: the policy's afterPrefill runs once);
 *   2. for every later token t: score −log p(t) from the pending logits, then feed t as a
 *      teacher-forced decode step (Session.step({token})) — the policy runs afterStep and evicts,
 *      exactly as while generating;
 *   3. perplexity = exp(mean NLL) over every scored token of every window.
 *
 * With the full cache this equals engine/metrics/perplexity.ts for the same prefix. Prefill-only
 * policies (snapkv, windowkv, compresskv) compress the prompt once; a short prefix leaves them
 * nothing to compress, so they hold the full cache here — the memory figures show it.
 */
import { Session, type EngineModel } from '../session.ts';
import { SessionError } from '../errors.ts';
import { logSoftmax } from '../metrics/softmax.ts';

export interface PplSettings {
  /** held-out windows (default 2) */
  windows: number;
  /** tokens per window, BOS included (default: the model's context, at most 1024) */
  tokens: number;
  /** tokens prefilled before scoring (default 32) */
  prefix: number;
  seed: number;
}

export interface PplFigures {
  perplexity: number;
  /** mean NLL in nats per scored token */
  meanNll: number;
  scored: number;
  /** NLL averaged over consecutive blocks of `blockSize` scored positions (all windows pooled) */
  nllByPosition: { blockSize: number; from: number[]; meanNll: number[] };
  /** entries per KV head, mean over the scored steps and at the last step */
  entries: { mean: number; last: number };
  /** bytes held / full-cache bytes: mean over steps and at the last step */
  memoryRatio: { mean: number; last: number };
  /** engine time per step (ms): forward, policy decision + apply */
  msPerStep: { forward: number; policy: number };
  seconds: number;
}

export interface PplProgress {
  /** scored tokens so far within this run */
  done: number;
  total: number;
}

const QUIET_TRACE = { attention: false, fullSteps: 0, topTokens: 0 } as const;

/** Runs one policy spec over the windows. `check` is called every step (cancellation, yielding). */
export async function perplexityRun(
  model: EngineModel,
  windows: readonly (readonly number[])[],
  spec: string,
  prefix: number,
  hooks: { onToken?: (done: number, total: number) => void | Promise<void>; blockSize?: number } = {},
): Promise<PplFigures> {
  const started = globalThis.performance.now();
  const total = windows.reduce((a, w) => a + Math.max(0, w.length - prefix), 0);
  const blockSize = hooks.blockSize ?? 64;
  const blocks: { sum: number; count: number }[] = [];
  let nllSum = 0;
  let scored = 0;
  let entriesSum = 0;
  let ratioSum = 0;
  let steps = 0;
  let lastEntries = 0;
  let lastRatio = 1;
  let forwardMs = 0;
  let policyMs = 0;
  for (const ids of windows) {
    if (!Number.isInteger(prefix) || prefix < 1 || prefix >= ids.length) {
      throw new SessionError(`perplexity needs 1 ≤ prefix < ${ids.length} (the window length), got prefix ${prefix}`);
    }
    const session = new Session(model, { policy: spec, trace: QUIET_TRACE });
    const heads = session.dims.nLayers * session.dims.nKvHeads;
    await session.prefill(ids.slice(0, prefix));
    for (let i = prefix; i < ids.length; i++) {
      const nll = -logSoftmax(session.nextTokenLogits!)[ids[i]];
      nllSum += nll;
      const block = Math.floor((i - prefix) / blockSize);
      blocks[block] ??= { sum: 0, count: 0 };
      blocks[block].sum += nll;
      blocks[block].count++;
      scored++;
      if (i < ids.length - 1) {
        const step = await session.step({ token: ids[i] });
        forwardMs += step.timings.forwardMs;
        policyMs += step.timings.policyMs;
        lastEntries = step.memory.heldEntries / heads;
        lastRatio = step.memory.ratio;
        entriesSum += lastEntries;
        ratioSum += lastRatio;
        steps++;
      }
      await hooks.onToken?.(scored, total);
    }
    // the trace of a long window is not needed any more
    session.reset();
  }
  const meanNll = nllSum / Math.max(1, scored);
  return {
    perplexity: Math.exp(meanNll),
    meanNll,
    scored,
    nllByPosition: {
      blockSize,
      from: blocks.map((_, b) => prefix + b * blockSize),
      meanNll: blocks.map((b) => b.sum / b.count),
    },
    entries: { mean: steps ? entriesSum / steps : 0, last: lastEntries },
    memoryRatio: { mean: steps ? ratioSum / steps : 1, last: lastRatio },
    msPerStep: { forward: steps ? forwardMs / steps : 0, policy: steps ? policyMs / steps : 0 },
    seconds: (globalThis.performance.now() - started) / 1000,
  };
}
