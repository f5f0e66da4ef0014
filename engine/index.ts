/**
 * The engine's public, browser-safe surface (no Node imports): what the Web Worker and the CLI
 * code against. Node callers add `loadModelFromDirectory` from './model/load-node.ts'.
 */
export { KvscopeError, ModelError, SessionError, ContextFullError, PolicySpecError, PolicyDecisionError } from './errors.ts';
export { validateManifest, expectedGraphInputs, expectedGraphOutputs, type Manifest, type Architecture, type RopeConfig } from './model/manifest.ts';
export { loadModel, fetchSource, checkSessionIO, type LoadedModel, type LoadOptions, type LoadProgress, type LoadPhase, type ModelSource } from './model/load.ts';
export { KvTokenizer, renderBytes } from './model/tokenizer.ts';
export { Rope } from './model/rope.ts';
export { ForwardRunner, modelDims, type Forward, type ForwardRequest, type ForwardResult, type LayerFeed, type ModelDims } from './runtime/forward.ts';
export {
  KVCacheStore,
  MASK_BIAS,
  type CacheView,
  type EntryCodec,
  type MemoryReport,
  type AppliedDecision,
  type AppliedHead,
  type CacheSnapshot,
} from './cache/store.ts';
export * from './policies/index.ts';
export { parsePolicySpec, formatPolicySpec, parsePolicyChain, formatPolicyChain, policyLabel, createPolicy, resolveParams, describeParam, type PolicySpec } from './policies/spec.ts';
export { PolicyChain } from './policies/chain.ts';
export { Sampler, Xoshiro128, argmax, DEFAULT_SAMPLER, type SamplerOptions, type SamplerState, type SampleResult } from './sampling.ts';
export * from './trace/schema.ts';
export * from './metrics/index.ts';
export * from './eval/index.ts';
export { LaneGroup, keepCheckpoint, MIN_LANES, MAX_LANES, type LaneOptions, type LaneMemory, type LaneStep, type LanesStep, type LaneState } from './lanes.ts';
export { ReferenceLane, heldBeforeDecision, type ReferenceMetrics, type ReferenceSnapshot, type ReferenceOptions } from './reference.ts';
export {
  Session,
  type EngineModel,
  type SessionOptions,
  type PrefillOptions,
  type PrefillResult,
  type StepOptions,
  type RunOptions,
  type RunResult,
  type StopReason,
  type SessionSnapshot,
} from './session.ts';
