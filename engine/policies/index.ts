/**
 * The policy registry. Adding a method = adding one file that exports a PolicyDefinition and
 * listing it here; the spec parser, the CLI and the UI's controls pick it up from this list.
 */
import { fullPolicy } from './full.ts';
import { h2oPolicy } from './h2o.ts';
import { snapkvPolicy } from './snapkv.ts';
import { streamingPolicy } from './streaming.ts';
import { tovaPolicy } from './tova.ts';
import { windowkvPolicy } from './windowkv.ts';
import { razorPolicy } from './razor.ts';
import { compressKvPolicy } from './compresskv.ts';
import { laCachePolicy } from './lacache.ts';
import { d2oPolicy } from './d2o.ts';
import { minicachePolicy } from './minicache.ts';
import { pcaPolicy } from './pca.ts';
import { headmergePolicy } from './headmerge.ts';
import { chelseaPolicy } from './chelsea.ts';
import { emsPolicy } from './ems.ts';
import { gearPolicy } from './gear.ts';
import { cskvPolicy } from './cskv.ts';
import { cachegenPolicy } from './cachegen.ts';
import { kiviPolicy } from './kivi.ts';
import { kvmergerPolicy } from './kvmerger.ts';
import { mikvPolicy } from './mikv.ts';
import { thinkPolicy } from './think.ts';
import type { PolicyDefinition } from './types.ts';
import { windowPolicy } from './window.ts';

export const POLICIES: readonly PolicyDefinition[] = [
  fullPolicy,
  windowPolicy,
  streamingPolicy,
  h2oPolicy,
  tovaPolicy,
  snapkvPolicy,
  windowkvPolicy,
  razorPolicy,
  compressKvPolicy,
  laCachePolicy,
  d2oPolicy,
  minicachePolicy,
  chelseaPolicy,
  emsPolicy,
  kvmergerPolicy,
  // quantization, channels, low rank, encoding
  pcaPolicy,
  headmergePolicy,
  gearPolicy,
  cskvPolicy,
  kiviPolicy,
  mikvPolicy,
  cachegenPolicy,
  thinkPolicy,
];

export function findPolicy(id: string, registry: readonly PolicyDefinition[] = POLICIES): PolicyDefinition | undefined {
  return registry.find((p) => p.id === id);
}

export type * from './types.ts';
export { NO_CHANGE, indexRange, intParam, floatParam, enumParam, boolParam } from './types.ts';
