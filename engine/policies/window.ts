/**
 * Sliding window — keep the last `size` entries of every head, evict the rest (oldest first).
 *
 * Origin: local / sliding-window attention (Beltagy et al., Longformer, 2020); as a KV-cache
 * policy it is the "window attention" baseline of StreamingLLM (Xiao et al., 2024), which shows
 * its collapse once the first tokens (attention sinks) leave the window. Positions stay as they
 * were (P1): kept keys are not re-rotated.
 */
import type { CacheView } from '../cache/store.ts';
import { decideEveryHead, indexRange, intParam, type Decision, type PolicyDefinition, type PolicyNeeds } from './types.ts';

/** Keeps the newest `size` entries of each head; heads already within the budget are unchanged. */
export function windowDecision(cache: CacheView, size: number): Decision {
  let evicted = 0;
  const decision = decideEveryHead(cache, (_layer, _head, length) => {
    if (length <= size) return null;
    evicted += length - size;
    return { keep: indexRange(length - size, length) };
  });
  return evicted > 0 ? { ...decision, note: `window ${size}: evicted ${evicted} entries` } : decision;
}

const NEEDS: PolicyNeeds = { attention: false, queries: false, calibration: false };

export const windowPolicy: PolicyDefinition = {
  id: 'window',
  label: 'Sliding window',
  description: 'Keeps only the most recent entries of every head; the oldest are evicted first.',
  paper: {
    short: 'Beltagy et al., 2020 (Longformer); baseline in Xiao et al., 2024 (StreamingLLM)',
    title: 'Longformer: The Long-Document Transformer',
    url: 'https://arxiv.org/abs/2004.05150',
  },
  params: [
    { name: 'size', kind: 'int', default: 128, min: 1, description: 'entries kept per head (the most recent ones)' },
  ],
  needs: NEEDS,
  create(params) {
    const size = intParam(params, 'size');
    return {
      id: 'window',
      params,
      needs: NEEDS,
      onAttach: (cache) => windowDecision(cache, size),
      afterPrefill: (cache) => windowDecision(cache, size),
      afterStep: (cache) => windowDecision(cache, size),
      reset() {},
      getState: () => null,
      setState() {},
    };
  },
};
