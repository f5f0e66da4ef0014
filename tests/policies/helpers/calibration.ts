/** Calibrations for policy tests: hand-made ones for unit tests, a computed one for the tiny fixture. */
import { expect } from 'vitest';
import { computeCalibration } from '../../../engine/calibration/compute.ts';
import { calibrationModel, type Calibration } from '../../../engine/calibration/format.ts';
import type { PcaBasisJson } from '../../../engine/calibration/projections.ts';
import { orthonormalize } from '../../../engine/quant/pca.ts';
import type { Manifest } from '../../../engine/model/manifest.ts';
import type { PolicyContext } from '../../../engine/policies/types.ts';
import { Session } from '../../../engine/session.ts';
import { fixtureModel, tokenSequence } from '../../engine/helpers/fixture.ts';
import { contextFor, DIMS, type Dims } from './policy.ts';

/** A calibration with the given score matrices ([layer][queryHead]) for hand-made contexts. */
export function handCalibration(
  dims: Dims,
  parts: { echo?: number[][]; induction?: number[][]; wu?: number[][]; semantic?: number[][]; layerError?: number[] },
): Calibration {
  const zeros = () => Array.from({ length: dims.nLayers }, () => new Array<number>(dims.nHeads).fill(0));
  const calibration: Calibration = {
    format: 'kvscope-calibration',
    formatVersion: 1,
    model: { id: 'hand', nLayers: dims.nLayers, nHeads: dims.nHeads, nKvHeads: dims.nKvHeads, graph: [{ path: 'model.onnx', sha256: 'x' }] },
    createdBy: 'test',
  };
  if (parts.echo || parts.induction) {
    calibration.razor = { repeatLength: 4, repeats: 4, sequences: 1, seed: 1, rows: 12, echo: parts.echo ?? zeros(), induction: parts.induction ?? zeros() };
  }
  if (parts.wu || parts.semantic) {
    calibration.retrieval = {
      trials: 1,
      successes: 1,
      averagedOver: 1,
      targetTokens: 100,
      decodeTokens: 7,
      seed: 1,
      threshold: 0.1,
      wu: parts.wu ?? zeros(),
      semantic: parts.semantic ?? zeros(),
    };
  }
  if (parts.layerError) {
    const sum = parts.layerError.reduce((a, b) => a + b, 0);
    calibration.layerError = {
      budget: 16,
      window: 4,
      topHeads: 2,
      kernel: 1,
      prompts: 1,
      promptTokens: 32,
      decodeTokens: 4,
      seed: 1,
      raw: parts.layerError,
      normalized: parts.layerError.map((e) => e / sum),
    };
  }
  return calibration;
}

/** A deterministic orthonormal basis of `dim` (rows): Gram–Schmidt of a seeded pseudo-random matrix. */
export function rotationBasis(dim: number, seed: number): number[][] {
  let state = seed >>> 0;
  const m = Float64Array.from({ length: dim * dim }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  });
  orthonormalize(m, dim);
  return Array.from({ length: dim }, (_, j) => Array.from(m.subarray(j * dim, (j + 1) * dim)));
}

/** A stored basis: components (rows), eigenvalues (default dim − j), mean (default 0). */
export function basisJson(components: number[][], eigenvalues?: number[], mean?: number[]): PcaBasisJson {
  const dim = components.length;
  return { components, eigenvalues: eigenvalues ?? components.map((_, j) => dim - j), mean: mean ?? new Array<number>(dim).fill(0) };
}

/**
 * A hand-made calibration with a projections section: per layer × KV head bases from `head`,
 * joint (all KV heads) bases from `joint` when given.
 */
export function projectionCalibration(
  dims: Dims,
  head: (side: 'keys' | 'values', layer: number, kvHead: number) => PcaBasisJson,
  joint?: (side: 'keys' | 'keysPost' | 'values', layer: number) => PcaBasisJson,
): Calibration {
  const calibration = handCalibration(dims, {});
  const grid = (side: 'keys' | 'values') => Array.from({ length: dims.nLayers }, (_, l) => Array.from({ length: dims.nKvHeads }, (_, h) => head(side, l, h)));
  const layers = (side: 'keys' | 'keysPost' | 'values') => Array.from({ length: dims.nLayers }, (_, l) => joint!(side, l));
  calibration.projections = { prompts: 1, tokens: 8, seed: 1, rows: 8, headDim: dims.headDim, keys: grid('keys'), values: grid('values') };
  if (joint) calibration.projections.joint = { keys: layers('keys'), keysPost: layers('keysPost'), values: layers('values') };
  return calibration;
}

export function calibratedContext(calibration: Calibration, dims: Dims = DIMS): PolicyContext {
  return { ...contextFor(dims), calibration };
}

let tiny: Promise<Calibration> | null = null;

/** The tiny fixture's calibration, computed once per test file (< 1 s). */
export function tinyCalibration(): Promise<Calibration> {
  tiny ??= (async () => {
    const model = await fixtureModel();
    const documents = Array.from({ length: 40 }, (_, i) => `Document ${'abcdefghij'[i % 10]}. The river runs past the old mill and the bridge. A quiet town sleeps under the hill while the wind turns the vanes. Nobody remembers when the mill was built.`);
    return computeCalibration(model, {
      documents,
      probe: { repeatLength: 40 },
      retrieval: { trials: 2, targetTokens: 160, requireSuccess: false },
      layerError: { prompts: 1, promptTokens: 96, decodeTokens: 8, budget: 32 },
      projections: { prompts: 2, tokens: 160 },
    });
  })();
  return tiny;
}

export function manifestCalibration(manifest: Manifest, base: Calibration): Calibration {
  return { ...base, model: calibrationModel(manifest) };
}

/**
 * Integration run on the tiny fixture with a calibration: prefill 100 tokens, 20 sampled steps;
 * every head within `maxLength(step, layer, kvHead)`, finite logits, and a snapshot after step 10
 * restored reproduces steps 11–20 exactly (tokens, cache tokens, positions, counts, keys).
 */
export async function calibratedRun(
  spec: string,
  maxLength: (step: number, layer: number, kvHead: number) => number,
  calibration: Calibration | null,
  steps = 20,
): Promise<Session> {
  const model = await fixtureModel();
  const session = new Session(model, { policy: spec, sampler: { seed: 7, temperature: 1 }, prefillChunk: 48, calibration });
  await session.prefill([1, ...tokenSequence(99, 5)]);
  const check = (step: number) => {
    for (let l = 0; l < session.dims.nLayers; l++) {
      for (let h = 0; h < session.dims.nKvHeads; h++) {
        expect(session.cache.length(l, h)).toBeLessThanOrEqual(maxLength(step, l, h));
        for (const x of session.cache.keys(l, h)) if (!Number.isFinite(x)) throw new Error(`non-finite key at step ${step}`);
      }
    }
    for (const x of session.nextTokenLogits!) if (!Number.isFinite(x)) throw new Error(`non-finite logit at step ${step}`);
  };
  check(-1);
  const state = () =>
    Array.from({ length: session.dims.nLayers * session.dims.nKvHeads }, (_, i) => {
      const l = Math.floor(i / session.dims.nKvHeads);
      const h = i % session.dims.nKvHeads;
      return [Array.from(session.cache.tokens(l, h)), Array.from(session.cache.positions(l, h)), Array.from(session.cache.counts(l, h)), Array.from(session.cache.keys(l, h))];
    });
  const half = Math.floor(steps / 2);
  let snapshot: ReturnType<Session['snapshot']> | null = null;
  const after: unknown[] = [];
  for (let s = 0; s < steps; s++) {
    const trace = await session.step();
    check(s);
    if (s === half - 1) snapshot = session.snapshot();
    if (s >= half) after.push([trace.token.id, session.position, state()]);
  }
  session.restore(snapshot!);
  const again: unknown[] = [];
  for (let s = half; s < steps; s++) {
    const trace = await session.step();
    again.push([trace.token.id, session.position, state()]);
  }
  expect(again).toEqual(after);
  return session;
}
