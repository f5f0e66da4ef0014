/**
 * Tokenizer wrapper over @huggingface/tokenizers.
 *
 * The manifest, not tokenizer.json's post-processor, decides whether BOS is prepended, so
 * encoding never adds special tokens itself (that would double BOS with a TemplateProcessing
 * post-processor). `tokenPiece` renders one token readably for the UI: byte-level pieces are
 * mapped back to bytes, and bytes that are not (yet) a complete UTF-8 character are shown as
 * `<0xE2>` instead of "�" (the visualisers before us show "�" for every partial character).
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelError } from '../errors.ts';
import { isObject } from '../json.ts';
import type { TokenizerConfig } from './manifest.ts';

/** GPT-2's byte ↔ printable-unicode table used by byte-level BPE. */
function byteLevelDecoderTable(): Map<string, number> {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Map<string, number>();
  for (const b of printable) table.set(String.fromCharCode(b), b);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    if (!printable.includes(b)) table.set(String.fromCharCode(256 + next++), b);
  }
  return table;
}

const BYTE_LEVEL_TABLE = byteLevelDecoderTable();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function hexByte(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
}

/** Length of the UTF-8 sequence a lead byte announces; 0 for a byte that cannot lead one. */
function utf8SequenceLength(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/** Decodes bytes to text, rendering every byte that is not part of a complete character as <0xNN>. */
export function renderBytes(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const len = utf8SequenceLength(bytes[i]);
    if (len > 0 && i + len <= bytes.length) {
      try {
        out += strictUtf8.decode(bytes.subarray(i, i + len));
        i += len;
        continue;
      } catch {
        // invalid continuation bytes: fall through and show the lead byte as hex
      }
    }
    out += hexByte(bytes[i]);
    i += 1;
  }
  return out;
}

/** True when tokenizer.json decodes with a ByteLevel decoder (directly or inside a Sequence). */
function usesByteLevel(tokenizerJson: Record<string, unknown>): boolean {
  const decoder = tokenizerJson.decoder;
  if (!isObject(decoder)) return false;
  if (decoder.type === 'ByteLevel') return true;
  if (decoder.type === 'Sequence' && Array.isArray(decoder.decoders)) {
    return decoder.decoders.some((d) => isObject(d) && d.type === 'ByteLevel');
  }
  return false;
}

export class KvTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number | null;
  readonly addBos: boolean;
  private readonly tokenizer: Tokenizer;
  private readonly byteLevel: boolean;
  private readonly specialIds: Set<number>;
  private readonly pieceCache = new Map<number, string>();

  constructor(tokenizerJson: unknown, config: TokenizerConfig) {
    if (!isObject(tokenizerJson) || !isObject(tokenizerJson.model)) {
      throw new ModelError(`${config.file}: not a Hugging Face tokenizer.json (no "model" object)`);
    }
    try {
      // tokenizers.js reads display options from tokenizer_config.json; kvscope has none, so pass
      // the few it consults with values that keep decode() faithful to the bytes.
      this.tokenizer = new Tokenizer(tokenizerJson, { clean_up_tokenization_spaces: false });
      this.specialIds = new Set(this.tokenizer.get_added_tokens_decoder().keys());
    } catch (error) {
      throw new ModelError(`${config.file}: cannot build the tokenizer (${(error as Error).message})`);
    }
    this.bosId = config.bos_id;
    this.eosId = config.eos_id;
    this.padId = config.pad_id;
    this.addBos = config.add_bos;
    this.byteLevel = usesByteLevel(tokenizerJson);
  }

  /** Token ids of `text`, with bos_id prepended when the manifest says add_bos. */
  encode(text: string): number[] {
    const ids = this.tokenizer.encode(text, { add_special_tokens: false }).ids;
    return this.addBos ? [this.bosId, ...ids] : ids;
  }

  /** Text of `ids`; special tokens are kept unless skipSpecial. */
  decode(ids: readonly number[], options: { skipSpecial?: boolean } = {}): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: options.skipSpecial ?? false, clean_up_tokenization_spaces: false });
  }

  /** Raw vocabulary string of a token (e.g. "Ġthe"), or undefined for an unknown id. */
  rawToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /**
   * A readable rendering of one token: special tokens as their content ("<s>"), byte-level pieces
   * as the text they stand for, incomplete UTF-8 bytes as `<0xE2>`; never "�".
   */
  tokenPiece(id: number): string {
    const cached = this.pieceCache.get(id);
    if (cached !== undefined) return cached;
    const piece = this.computePiece(id);
    this.pieceCache.set(id, piece);
    return piece;
  }

  private computePiece(id: number): string {
    const raw = this.tokenizer.id_to_token(id);
    if (raw === undefined) return `<unk:${id}>`;
    if (this.specialIds.has(id)) return raw;
    if (this.byteLevel) {
      const bytes = new Uint8Array(raw.length);
      let n = 0;
      for (const ch of raw) {
        const b = BYTE_LEVEL_TABLE.get(ch);
        if (b === undefined) return raw; // not a byte-level string after all: show it verbatim
        bytes[n++] = b;
      }
      return renderBytes(bytes.subarray(0, n));
    }
    const decoded = this.tokenizer.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    return decoded.includes('\uFFFD') ? raw : decoded;
  }
}
