/**
 * Perplexity of a token sequence through the engine: the first `prefix` tokens are prefilled,
 * every later token is scored from the pending logits and then fed (teacher forcing), so the
 * policy acts exactly as in decoding.
 */
import { Session, type EngineModel } from '../session.ts';
import { SessionError } from '../errors.ts';
import { logSoftmax } from './softmax.ts';

export interface PerplexityOptions {
  /** policy spec (default "full") */
  policy?: string;
  /** tokens prefilled before scoring starts (default 1) */
  prefix?: number;
  prefillChunk?: number;
}

export interface PerplexityResult {
  perplexity: number;
  /** mean negative log-likelihood in nats per scored token */
  meanNll: number;
  /** per scored token NLL, in order (tokens prefix..end) */
  nll: number[];
  scored: number;
}

export async function perplexity(model: EngineModel, ids: readonly number[], options: PerplexityOptions = {}): Promise<PerplexityResult> {
  const prefix = options.prefix ?? 1;
  if (!Number.isInteger(prefix) || prefix < 1 || prefix >= ids.length) {
    throw new SessionError(`perplexity needs 1 ≤ prefix < ${ids.length} tokens, got prefix ${prefix}`);
  }
  const session = new Session(model, {
    policy: options.policy ?? 'full',
    prefillChunk: options.prefillChunk,
    trace: { attention: false, fullSteps: 0, topTokens: 0 },
  });
  await session.prefill(ids.slice(0, prefix));
  const nll: number[] = [];
  for (let i = prefix; i < ids.length; i++) {
    const logits = session.nextTokenLogits!;
    nll.push(-logSoftmax(logits)[ids[i]]);
    if (i < ids.length - 1) await session.step({ token: ids[i] });
  }
  const meanNll = nll.reduce((a, b) => a + b, 0) / nll.length;
  return { perplexity: Math.exp(meanNll), meanNll, nll, scored: nll.length };
}
