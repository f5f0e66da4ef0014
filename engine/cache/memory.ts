/**
 * Byte-exact memory accounting (docs/architecture.md, "The cache"): what the heads hold, K and V separately, codec
 * metadata included, next to the full fp32 cache for the same tokens. An entry costs its codec's
 * bits and its own metadata; a codec group (shared scales, codebooks, low-rank factors, a
 * direction shared across layers) is charged once while any entry in any layer or head names it.
 */
import { PolicyDecisionError } from '../errors.ts';
import type { CodecGroup, HeadDecision } from './decision.ts';
import type { HeadStore } from './head.ts';
import type { MemoryReport } from './view.ts';

/** What an element kept in full precision (fp32) costs: the full cache's entries, and codecs' fp32 parts. */
export const BYTES_PER_FLOAT32 = 4;

export interface MemoryLayout {
  nLayers: number;
  nKvHeads: number;
  headDim: number;
}

/** Ids of the codec groups some entry still names. */
export function liveGroups(heads: readonly HeadStore[]): Set<string> {
  const live = new Set<string>();
  for (const head of heads) {
    const codecs = head.data.codecs;
    if (!codecs) continue;
    for (let i = 0; i < head.length; i++) {
      const group = codecs[i]?.group;
      if (group !== undefined) live.add(group);
    }
  }
  return live;
}

/**
 * The report of `heads`. Every group in `groups` is charged: the caller keeps only groups some
 * entry names (the store drops the others after each decision, `liveGroups`).
 */
export function memoryReport(heads: readonly HeadStore[], groups: ReadonlyMap<string, CodecGroup>, tokenCount: number, layout: MemoryLayout): MemoryReport {
  const d = layout.headDim;
  let kBytes = 0;
  let vBytes = 0;
  let held = 0;
  const entries: number[][] = [];
  for (let l = 0; l < layout.nLayers; l++) {
    const row: number[] = [];
    for (let h = 0; h < layout.nKvHeads; h++) {
      const head = heads[l * layout.nKvHeads + h];
      row.push(head.length);
      held += head.length;
      const codecs = head.data.codecs;
      if (!codecs) {
        kBytes += head.length * d * BYTES_PER_FLOAT32;
        vBytes += head.length * d * BYTES_PER_FLOAT32;
        continue;
      }
      for (let i = 0; i < head.length; i++) {
        const codec = codecs[i];
        if (!codec) {
          kBytes += d * BYTES_PER_FLOAT32;
          vBytes += d * BYTES_PER_FLOAT32;
        } else {
          kBytes += Math.ceil((codec.kElements * codec.kBits) / 8) + codec.kMetaBytes;
          vBytes += Math.ceil((codec.vElements * codec.vBits) / 8) + codec.vMetaBytes;
        }
      }
    }
    entries.push(row);
  }
  let groupBytes = 0;
  for (const group of groups.values()) {
    kBytes += group.kBytes;
    vBytes += group.vBytes;
    groupBytes += group.kBytes + group.vBytes;
  }
  const fullKBytes = tokenCount * layout.nLayers * layout.nKvHeads * d * BYTES_PER_FLOAT32;
  const bytes = kBytes + vBytes;
  const fullBytes = 2 * fullKBytes;
  return {
    tokens: tokenCount,
    entries,
    heldEntries: held,
    kBytes,
    vBytes,
    bytes,
    groupBytes,
    fullKBytes,
    fullVBytes: fullKBytes,
    fullBytes,
    ratio: fullBytes === 0 ? 1 : bytes / fullBytes,
    bitsPerElement: held === 0 ? 0 : (bytes * 8) / (held * d * 2),
  };
}

/**
 * The codec groups after a decision declares `groups`: checked (non-empty id, finite bytes ≥ 0),
 * and every group its re-encodes name must exist. Returns `known` itself when nothing is added.
 */
export function withGroups(known: ReadonlyMap<string, CodecGroup>, groups: readonly CodecGroup[], decisions: readonly HeadDecision[]): ReadonlyMap<string, CodecGroup> {
  const named = decisions.some((d) => d.reencode?.some((re) => re.codec.group !== undefined));
  if (groups.length === 0 && !named) return known;
  const next = new Map(known);
  for (const group of groups) {
    if (typeof group.id !== 'string' || group.id === '') throw new PolicyDecisionError('codec group needs a non-empty id');
    if (!(group.kBytes >= 0 && group.vBytes >= 0 && Number.isFinite(group.kBytes + group.vBytes))) {
      throw new PolicyDecisionError(`codec group ${group.id}: bytes must be finite and ≥ 0`);
    }
    next.set(group.id, { ...group });
  }
  for (const decision of decisions) {
    for (const re of decision.reencode ?? []) {
      if (re.codec.group !== undefined && !next.has(re.codec.group)) {
        throw new PolicyDecisionError(`reencode names codec group ${JSON.stringify(re.codec.group)}, which no decision declared`);
      }
    }
  }
  return groups.length === 0 ? known : next;
}
