/**
 * Full cache — the baseline: every entry is kept, nothing is evicted, merged or re-encoded.
 * Every other policy is measured against it (KL, top-1 agreement, memory ratio). No stages: with
 * no allocator every head's budget is unlimited.
 */
import { defineMethod } from '../pipeline/pipeline.ts';

export const fullPolicy = defineMethod({
  id: 'full',
  holdsEveryEntry: 'keeps everything',
  label: 'Full cache',
  description: 'Keeps every key and value: the reference every compression method is compared with.',
  paper: {
    short: 'Vaswani et al., 2017 (NeurIPS)',
    title: 'Attention Is All You Need — autoregressive decoding with cached keys and values',
    url: 'https://arxiv.org/abs/1706.03762',
  },
  params: [],
  needs: { attention: false, queries: false, calibration: false },
  build: () => ({}),
});
