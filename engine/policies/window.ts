/**
 * Sliding window — keep the last `size` entries of every head, evict the rest (oldest first).
 *
 * Origin: local / sliding-window attention (Beltagy et al., Longformer, 2020); as a KV-cache
 * policy it is the "window attention" baseline of StreamingLLM (Xiao et al., 2024), which shows
 * its collapse once the first tokens (attention sinks) leave the window. Positions stay as they
 * were (P1): kept keys are not re-rotated.
 *
 * Stages: a uniform allocator of `size` entries; the pipeline's default selector keeps the newest.
 */
import { uniformAllocator } from '../pipeline/allocators.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import { intParam } from './types.ts';

export const windowPolicy = defineMethod({
  id: 'window',
  label: 'Sliding window',
  description: 'Keeps only the most recent entries of every head; the oldest are evicted first.',
  paper: {
    short: 'Beltagy et al., 2020 (Longformer); baseline in Xiao et al., 2024 (StreamingLLM)',
    title: 'Longformer: The Long-Document Transformer',
    url: 'https://arxiv.org/abs/2004.05150',
  },
  params: [{ name: 'size', kind: 'int', default: 128, min: 1, budget: true, description: 'entries kept per head (the most recent ones)' }],
  // what one evaluation budget B (entries a KV head may hold) sets (engine/eval/budgets.ts)
  budget: { params: ['size'], map: (b) => ({ size: b }), text: 'size = B', scope: 'every head', min: 1 },
  needs: { attention: false, queries: false, calibration: false },
  build(params) {
    const size = intParam(params, 'size');
    return {
      allocator: uniformAllocator(() => ({ total: size, recent: size })),
      note: (summary) => (summary.evicted > 0 ? `window ${size}: evicted ${summary.evicted} entries` : undefined),
    };
  },
});
