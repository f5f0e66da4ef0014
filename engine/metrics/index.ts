export { logSumExp, softmax, logSoftmax, topK, rowOf } from './softmax.ts';
export { klDivergence, klDivergenceFromLogits, top1Agrees, maxAbsDiff } from './kl.ts';
export { perplexity, type PerplexityOptions, type PerplexityResult } from './perplexity.ts';
export { encodeBare, bosPrefix, heldoutWindows, fillerSentences, type TokenEncoder } from './heldout.ts';
export { attentionSinks, addSinkMass, type SinkOptions, type SinkReport } from './sinks.ts';
export {
  PASSKEY_INTRO,
  PASSKEY_QUESTION,
  passkeyNeedle,
  buildNeedlePrompt,
  growFiller,
  retrievalHits,
  summarizeRetrievalHeads,
  runNeedleTrial,
  runNeedleEval,
  trialDepth,
  type NeedlePrompt,
  type NeedlePromptOptions,
  type NeedleTrial,
  type NeedleOptions,
  type NeedleReport,
  type RetrievalObservation,
  type RetrievalHeads,
} from './needle.ts';
export {
  acceptanceFlags,
  simulateGreedyVerification,
  expectedAcceptedLength,
  draftAgreement,
  measureDraftAcceptance,
  type SpeculativeStats,
  type AcceptanceOptions,
  type AcceptanceReport,
} from './acceptance.ts';
export {
  parseNeedleFamily,
  drawKey,
  familySeed,
  familyKey,
  familyDecodeTokens,
  familyPrompts,
  familySuccess,
  familyTrialShape,
  buildFamilyPrompt,
  runFamilyTrial,
  runNeedleFamily,
  summarizeFamily,
  NeedleFamilyError,
  type NeedleFamily,
  type FamilyWording,
  type FamilyFiller,
  type FamilyPrompt,
  type FamilyTrial,
  type FamilySettings,
  type FamilyTally,
  type NeedleFamilyReport,
} from './needle-family.ts';
export { sinkAblation, latePerplexity, type SinkAblationOptions, type SinkAblationReport, type PolicyPerplexity } from './sink-window.ts';
export { inductionHeads, addInductionMass, predictedCopy, type InductionOptions, type InductionReport } from './induction.ts';
export {
  runPhenomena,
  phenomenaSettings,
  type HeldoutPerplexity,
  type PhenomenaOptions,
  type PhenomenaReport,
  type PhenomenaSettings,
} from './phenomena.ts';
