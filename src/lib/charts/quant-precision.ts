/**
 * How one entry's key or value is stored, for the quantization view's precision strip, legend and
 * readouts: full precision (no codec touched this part), the codec's bits, fewer channels than the
 * head has (pruned or projected: ThinK, low-rank methods), full-width fp32 that a codec changed
 * (a shared direction, a projection at 32 bits), or — from a trace — re-encoded at unknown bits.
 */
import { OKABE_ITO } from './colors.ts';
import { bitsColor, PLAIN_COLOR, UNKNOWN_BITS_COLOR } from './quant-colors.ts';
import type { QuantView } from '../worker/protocol.ts';

export interface Precision {
  label: string;
  colour: string;
}

export const PLAIN: Precision = { label: 'full precision (fp32)', colour: PLAIN_COLOR };
const REDUCED_COLOUR = OKABE_ITO.purple;
const CHANGED_FP32_COLOUR = '#6b6b6b';

const bitsText = (bits: number) => (bits >= 32 ? 'fp32' : `${Number.isInteger(bits) ? bits : bits.toFixed(1)}-bit`);

export function entryPrecision(view: QuantView, i: number, part: 'k' | 'v'): Precision {
  const e = view.entries;
  const c = e.codec[i];
  const bits = part === 'k' ? e.kBits[i] : e.vBits[i];
  const error = part === 'k' ? e.kError[i] : e.vError[i];
  if (c < 0) return PLAIN;
  if (Number.isNaN(bits)) return { label: 're-encoded (bits not in the trace)', colour: UNKNOWN_BITS_COLOR };
  const codec = view.codecs[c];
  const elements = part === 'k' ? codec.kElements : codec.vElements;
  const headDim = view.elements?.headDim ?? null;
  if (elements !== null && headDim !== null && elements < headDim) return { label: `${bitsText(bits)} × ${elements} of ${headDim} channels`, colour: REDUCED_COLOUR };
  if (bits >= 32) return error === 0 ? PLAIN : { label: 'fp32, changed by the codec', colour: CHANGED_FP32_COLOUR };
  return { label: bitsText(bits), colour: bitsColor(bits) };
}

/** The precision label of both parts of an entry ("2-bit", or "K 2-bit, V full precision (fp32)"). */
export function entryPrecisionText(view: QuantView, i: number): string {
  const k = entryPrecision(view, i, 'k').label;
  const v = entryPrecision(view, i, 'v').label;
  return k === v ? k : `K ${k}, V ${v}`;
}
