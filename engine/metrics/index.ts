export { logSumExp, softmax, logSoftmax, topK, rowOf } from './softmax.ts';
export { klDivergence, klDivergenceFromLogits, top1Agrees, maxAbsDiff } from './kl.ts';
export { perplexity, type PerplexityOptions, type PerplexityResult } from './perplexity.ts';
