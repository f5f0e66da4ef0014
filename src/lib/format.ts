/** Small formatting helpers shared by the views (no model math). */

const CONTROL: Record<string, string> = { '\n': '↵', '\t': '⇥', '\r': '␍' };

function visibleControl(ch: string): string {
  if (CONTROL[ch]) return CONTROL[ch];
  const code = ch.codePointAt(0)!;
  if (code < 0x20 || code === 0x7f) return `<0x${code.toString(16).toUpperCase().padStart(2, '0')}>`;
  return ch;
}

/**
 * A token piece for axis labels and lists: spaces as "␣", line breaks as "↵", tabs as "⇥", other
 * control bytes as <0xNN>. Pieces come from the engine already free of "�" (partial UTF-8 bytes
 * are <0xE2>-style), so nothing here ever shows a replacement character.
 */
export function labelPiece(piece: string): string {
  let out = '';
  for (const ch of piece) out += ch === ' ' ? '␣' : visibleControl(ch);
  return out === '' ? '∅' : out;
}

/** A token piece inside running text: spaces kept, control characters made visible. */
export function streamPiece(piece: string): string {
  let out = '';
  for (const ch of piece) out += ch === ' ' ? ' ' : visibleControl(ch);
  return out;
}

/** Does the token end a line in the token stream? */
export function endsLine(piece: string): boolean {
  return piece.endsWith('\n');
}

export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(1, max - 1))}…`;
}

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return '–';
  const abs = Math.abs(bytes);
  if (abs < 1024) return `${Math.round(bytes)} B`;
  if (abs < 1024 * 1024) return `${(bytes / 1024).toFixed(abs < 10 * 1024 ? 1 : 0)} KiB`;
  if (abs < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(abs < 10 * 1024 ** 2 ? 2 : 1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

export function formatProb(p: number): string {
  if (!Number.isFinite(p)) return '–';
  if (p >= 0.995) return '1.00';
  if (p >= 0.01) return p.toFixed(2);
  if (p >= 0.001) return p.toFixed(3);
  if (p === 0) return '0';
  return p.toExponential(0);
}

export function formatPercent(x: number, digits = 0): string {
  return `${(x * 100).toFixed(digits)}%`;
}

export function formatMs(ms: number): string {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/** A measured value for labels (errors, saliencies, singular values): 3 significant digits, an exponent below 0.001 and from 1e5. */
export function formatNumber(v: number): string {
  if (Number.isNaN(v)) return '–';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a < 0.001 || a >= 1e5) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}
