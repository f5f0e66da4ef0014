/** Shared pieces for the per-method policy tests: contexts, hand-made observations, session runs. */
import { expect } from 'vitest';
import { KVCacheStore } from '../../../engine/cache/store.ts';
import { Rope } from '../../../engine/model/rope.ts';
import { createPolicy } from '../../../engine/policies/spec.ts';
import type { Decision, HeadDecision, PolicyContext, PrefillObservation, StepObservation } from '../../../engine/policies/types.ts';
import { Session } from '../../../engine/session.ts';
import { fillCache } from '../../engine/helpers/cache.ts';
import { fixtureModel, tokenSequence } from '../../engine/helpers/fixture.ts';

export interface Dims {
  nLayers: number;
  nKvHeads: number;
  nHeads: number;
  headDim: number;
}

/** 2 layers, 2 KV heads, 4 query heads (GQA group 2), headDim 4. */
export const DIMS: Dims = { nLayers: 2, nKvHeads: 2, nHeads: 4, headDim: 4 };

export function contextFor(dims: Dims = DIMS): PolicyContext {
  return {
    dims: { ...dims, groupSize: dims.nHeads / dims.nKvHeads, vocabSize: 16, contextLength: 1024 },
    rope: new Rope({ theta: 10000, dim: dims.headDim }, dims.headDim),
  };
}

/** A cache of `n` entries per head (tokens/positions 0..n−1), with RoPE so P2 decisions apply. */
export function cacheOf(n: number, dims: Dims = DIMS): KVCacheStore {
  const store = new KVCacheStore(dims, new Rope({ theta: 10000, dim: dims.headDim }, dims.headDim));
  return n > 0 ? fillCache(store, n) : store;
}

/** [layer][queryHead] arrays from a function. */
export function perQueryHead(dims: Dims, f: (layer: number, qh: number) => ArrayLike<number>): Float32Array[][] {
  return Array.from({ length: dims.nLayers }, (_, l) => Array.from({ length: dims.nHeads }, (_, qh) => Float32Array.from(f(l, qh))));
}

export function stepObservation(attention: Float32Array[][] | null, step = 0): StepObservation {
  return { step, tokenIndex: 0, position: 0, attention, queries: null };
}

/** A prefill observation; `windowRows[l][qh]` is a list of rows (each one value per entry). */
export function prefillObservation(
  tokenCount: number,
  parts: { sums?: Float32Array[][]; windowRows?: number[][][][] } = {},
): PrefillObservation {
  const rows = parts.windowRows ? parts.windowRows[0][0].length : 0;
  return {
    firstToken: 0,
    tokenCount,
    attentionSums: parts.sums ?? null,
    windowAttention: parts.windowRows ? parts.windowRows.map((layer) => layer.map((r) => Float32Array.from(r.flat()))) : null,
    windowQueries: null,
    windowRows: rows,
  };
}

export function keepOf(decision: Decision, layer: number, kvHead: number): number[] | null {
  const head: HeadDecision | null | undefined = decision.layers?.[layer]?.[kvHead];
  return head ? Array.from(head.keep) : null;
}

/** Kept indices, treating "unchanged" as keep-all. */
export function keptOrAll(decision: Decision, layer: number, kvHead: number, n: number): number[] {
  return keepOf(decision, layer, kvHead) ?? Array.from({ length: n }, (_, i) => i);
}

export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

export function policyFor(spec: string, dims: Dims = DIMS) {
  return createPolicy(spec, contextFor(dims));
}

/** A session on the tiny fixture (seed 3, temperature 1, chunks of 32) after prefilling BOS + 99 tokens and `steps` steps. */
export async function sessionAfter(policy: string, steps = 4): Promise<Session> {
  const session = new Session(await fixtureModel(), { policy, sampler: { seed: 3, temperature: 1 }, prefillChunk: 32 });
  await session.prefill([1, ...tokenSequence(99, 5)]);
  for (let i = 0; i < steps; i++) await session.step();
  return session;
}

/**
 * Integration run on the tiny fixture (2 layers, 4 heads, 2 KV heads, ctx 256): prefill 100
 * tokens, 20 sampled steps. After prefill and every step, `maxLength(step)` bounds every head's
 * length; logits stay finite; a snapshot taken after step 10 and restored reproduces steps 11–20
 * (tokens, kept tokens and positions).
 */
export async function integrationRun(spec: string, maxLength: (step: number) => number): Promise<void> {
  const model = await fixtureModel();
  const session = new Session(model, { policy: spec, sampler: { seed: 7, temperature: 1 }, prefillChunk: 48 });
  await session.prefill([1, ...tokenSequence(99, 5)]);
  const check = (step: number) => {
    for (let l = 0; l < session.dims.nLayers; l++) {
      for (let h = 0; h < session.dims.nKvHeads; h++) expect(session.cache.length(l, h)).toBeLessThanOrEqual(maxLength(step));
    }
    const logits = session.nextTokenLogits!;
    for (let i = 0; i < logits.length; i++) if (!Number.isFinite(logits[i])) throw new Error(`non-finite logit at step ${step}`);
  };
  check(-1);
  const cacheState = () =>
    Array.from({ length: session.dims.nLayers * session.dims.nKvHeads }, (_, i) => {
      const l = Math.floor(i / session.dims.nKvHeads);
      const h = i % session.dims.nKvHeads;
      return [Array.from(session.cache.tokens(l, h)), Array.from(session.cache.positions(l, h))];
    });
  let snapshot = null as ReturnType<Session['snapshot']> | null;
  const after: { tokens: number[]; cache: unknown[] } = { tokens: [], cache: [] };
  for (let s = 0; s < 20; s++) {
    const trace = await session.step();
    check(s);
    if (s === 9) snapshot = session.snapshot();
    if (s >= 10) {
      after.tokens.push(trace.token.id);
      after.cache.push(cacheState());
    }
  }
  session.restore(snapshot!);
  const again: { tokens: number[]; cache: unknown[] } = { tokens: [], cache: [] };
  for (let s = 10; s < 20; s++) {
    const trace = await session.step();
    again.tokens.push(trace.token.id);
    again.cache.push(cacheState());
  }
  expect(again).toEqual(after);
}
