/**
 * Colours and words of the speculative-decoding view (Okabe–Ito, colour-blind safe; every colour
 * also has a mark so the stream reads in grey: ✓ accepted, ✗ struck-through rejected, ↺ correction,
 * + bonus).
 */
import type { SpeculativeOrigin } from '../../../engine/trace/schema.ts';
import { OKABE_ITO } from './colors.ts';

export type SpecMark = SpeculativeOrigin | 'rejected' | 'unverified';

export const SPEC_COLORS: Record<SpecMark, string> = {
  draft: OKABE_ITO.green,
  correction: OKABE_ITO.orange,
  bonus: OKABE_ITO.blue,
  target: '#8c8c8c',
  rejected: OKABE_ITO.vermillion,
  unverified: '#bdbdbd',
};

export const SPEC_LABELS: Record<SpecMark, string> = {
  draft: 'accepted draft token',
  correction: 'correction: the target\'s token after a rejection',
  bonus: 'bonus: the target\'s token after every draft was accepted',
  target: 'the target\'s own draw (no draft before it)',
  rejected: 'rejected draft token (not fed)',
  unverified: 'drafted, never verified (the round ended before it)',
};

export const SPEC_SHORT: Record<SpecMark, string> = {
  draft: 'accepted',
  correction: 'correction',
  bonus: 'bonus',
  target: 'target draw',
  rejected: 'rejected',
  unverified: 'not verified',
};

export const SPEC_ENDS: Record<string, string> = {
  rejected: 'a draft was rejected',
  'all-accepted': 'every draft was accepted',
  'cache-changed': 'the KV policy changed the cache (later rows dropped)',
  'no-draft': 'the drafter proposed nothing',
  eos: 'end of text',
  cut: 'only part of the round is in the trace (stepped back into it)',
};
