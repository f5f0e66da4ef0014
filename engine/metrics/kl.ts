/** Divergences between next-token distributions given as logits (float64 internally). */
import { logSoftmax } from './softmax.ts';
import { argmax } from '../sampling.ts';

/** KL(P ‖ Q) in nats, P and Q given as logits over the same vocabulary. */
export function klDivergenceFromLogits(pLogits: ArrayLike<number>, qLogits: ArrayLike<number>): number {
  if (pLogits.length !== qLogits.length) throw new RangeError(`KL needs equal lengths, got ${pLogits.length} and ${qLogits.length}`);
  const logP = logSoftmax(pLogits);
  const logQ = logSoftmax(qLogits);
  let kl = 0;
  for (let i = 0; i < logP.length; i++) {
    const p = Math.exp(logP[i]);
    if (p > 0) kl += p * (logP[i] - logQ[i]);
  }
  return Math.max(0, kl);
}

/** KL(P ‖ Q) in nats for probability vectors; terms with p = 0 contribute 0, q = 0 < p gives Infinity. */
export function klDivergence(p: ArrayLike<number>, q: ArrayLike<number>): number {
  if (p.length !== q.length) throw new RangeError(`KL needs equal lengths, got ${p.length} and ${q.length}`);
  let kl = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] <= 0) continue;
    if (q[i] <= 0) return Infinity;
    kl += p[i] * Math.log(p[i] / q[i]);
  }
  return Math.max(0, kl);
}

/** Whether both distributions put their maximum on the same token. */
export function top1Agrees(pLogits: ArrayLike<number>, qLogits: ArrayLike<number>): boolean {
  return argmax(pLogits) === argmax(qLogits);
}

/** Largest absolute elementwise difference (used to compare logits). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`lengths differ: ${a.length} and ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d > max || Number.isNaN(d)) max = Number.isNaN(d) ? Infinity : d;
  }
  return max;
}
