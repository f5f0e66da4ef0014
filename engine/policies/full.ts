/**
 * Full cache — the baseline: every entry is kept, nothing is evicted, merged or re-encoded.
 * Every other policy is measured against it (KL, top-1 agreement, memory ratio).
 */
import { NO_CHANGE, type PolicyDefinition, type PolicyNeeds } from './types.ts';

const NEEDS: PolicyNeeds = { attention: false, queries: false, calibration: false };

export const fullPolicy: PolicyDefinition = {
  id: 'full',
  label: 'Full cache',
  description: 'Keeps every key and value: the reference every compression method is compared with.',
  paper: {
    short: 'Vaswani et al., 2017 (NeurIPS)',
    title: 'Attention Is All You Need — autoregressive decoding with cached keys and values',
    url: 'https://arxiv.org/abs/1706.03762',
  },
  params: [],
  needs: NEEDS,
  create(params) {
    return {
      id: 'full',
      params,
      needs: NEEDS,
      afterPrefill: () => NO_CHANGE,
      afterStep: () => NO_CHANGE,
      reset() {},
      getState: () => null,
      setState() {},
    };
  },
};
