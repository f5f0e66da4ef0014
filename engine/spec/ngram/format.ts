/**
 * Token index files: one binary file per index variant (static/indexes/<id>/).
 *
 *   0   8 bytes   magic "KVSNGRAM"
 *   8   u32       format version (INDEX_FORMAT_VERSION)
 *   12  u32       variant: 1 suffix array, 2 FM-index
 *   16  u32       vocabulary size (the document separator is this id)
 *   20  u32       corpus tokens, separators included
 *   24  u32       section count
 *   28  u32       CRC-32 of every byte from 32 to the end
 *   32  16 bytes per section: name (8 bytes ASCII, NUL-padded), offset u32, length u32
 *   …   sections, each starting at a multiple of 8
 *
 * Little-endian throughout; sections are typed arrays copied out as they are (every platform
 * kvscope runs on is little-endian, and decoding refuses one that is not). A file is at most
 * 16 MiB, so the app can fetch it as one static asset.
 */
import { DraftSpecError } from '../../errors.ts';
import { FmIndex } from './fm-index.ts';
import { SuffixArrayIndex } from './suffix-array.ts';
import { corpusArray, type IndexVariant, type TokenIndex } from './token-index.ts';
import { RankBitVector, WaveletMatrix } from './wavelet-matrix.ts';

/** An index file is malformed: the message names the file and the problem. */
export class IndexFormatError extends DraftSpecError {}

export const INDEX_MAGIC = 'KVSNGRAM';
export const INDEX_FORMAT_VERSION = 1;
export const MAX_INDEX_FILE_BYTES = 16 * 1024 * 1024;
const HEADER_BYTES = 32;
const SECTION_ENTRY_BYTES = 16;
const VARIANT_CODES: Record<IndexVariant, number> = { 'suffix-array': 1, 'fm-index': 2 };

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE 802.3, as zlib computes it). */
export function crc32(bytes: Uint8Array, from = 0): number {
  let crc = 0xffffffff;
  for (let i = from; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

export interface IndexFileContents {
  variant: IndexVariant;
  vocabSize: number;
  tokenCount: number;
  sections: Map<string, Uint8Array>;
}

const align8 = (n: number) => Math.ceil(n / 8) * 8;

function bytesOf(array: Uint16Array | Uint32Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

export function encodeIndexFile(contents: IndexFileContents): Uint8Array {
  if (!LITTLE_ENDIAN) throw new IndexFormatError('token index files are little-endian; this platform is not');
  const entries = [...contents.sections];
  let size = align8(HEADER_BYTES + entries.length * SECTION_ENTRY_BYTES);
  const offsets = entries.map(([, data]) => {
    const offset = size;
    size = align8(size + data.length);
    return offset;
  });
  if (size > MAX_INDEX_FILE_BYTES) {
    throw new IndexFormatError(`a ${contents.variant} index of ${contents.tokenCount} tokens takes ${size} bytes, over the ${MAX_INDEX_FILE_BYTES}-byte limit of one index file: index less text`);
  }
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  for (let i = 0; i < INDEX_MAGIC.length; i++) out[i] = INDEX_MAGIC.charCodeAt(i);
  view.setUint32(8, INDEX_FORMAT_VERSION, true);
  view.setUint32(12, VARIANT_CODES[contents.variant], true);
  view.setUint32(16, contents.vocabSize, true);
  view.setUint32(20, contents.tokenCount, true);
  view.setUint32(24, entries.length, true);
  entries.forEach(([name, data], i) => {
    if (!/^[a-z0-9]{1,8}$/.test(name)) throw new IndexFormatError(`section name ${JSON.stringify(name)} must be 1–8 lower-case letters or digits`);
    const entry = HEADER_BYTES + i * SECTION_ENTRY_BYTES;
    for (let c = 0; c < name.length; c++) out[entry + c] = name.charCodeAt(c);
    view.setUint32(entry + 8, offsets[i], true);
    view.setUint32(entry + 12, data.length, true);
    out.set(data, offsets[i]);
  });
  view.setUint32(28, crc32(out, HEADER_BYTES), true);
  return out;
}

/** Reads the container; every problem is an IndexFormatError naming `file`. */
export function decodeIndexFile(bytes: Uint8Array, file = 'index file'): IndexFileContents {
  if (!LITTLE_ENDIAN) throw new IndexFormatError(`${file}: token index files are little-endian; this platform is not`);
  const fail = (problem: string): never => {
    throw new IndexFormatError(`${file}: ${problem}`);
  };
  if (bytes.length < HEADER_BYTES) fail(`truncated: ${bytes.length} bytes, shorter than the ${HEADER_BYTES}-byte header`);
  const magic = String.fromCharCode(...bytes.subarray(0, 8));
  if (magic !== INDEX_MAGIC) fail(`wrong magic ${JSON.stringify(magic)}: not a kvscope token index (expected ${JSON.stringify(INDEX_MAGIC)})`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version > INDEX_FORMAT_VERSION) fail(`format version ${version} is newer than this kvscope reads (${INDEX_FORMAT_VERSION}): update kvscope or rebuild the index`);
  if (version < 1) fail(`unknown format version ${version}`);
  const code = view.getUint32(12, true);
  const variant = (Object.keys(VARIANT_CODES) as IndexVariant[]).find((v) => VARIANT_CODES[v] === code);
  if (!variant) fail(`unknown index variant ${code}`);
  const count = view.getUint32(24, true);
  const tableEnd = HEADER_BYTES + count * SECTION_ENTRY_BYTES;
  if (tableEnd > bytes.length) fail(`truncated: ${count} sections need a ${tableEnd}-byte table, the file has ${bytes.length} bytes`);
  const sections = new Map<string, Uint8Array>();
  const ranges: [string, number, number][] = [];
  for (let i = 0; i < count; i++) {
    const entry = HEADER_BYTES + i * SECTION_ENTRY_BYTES;
    const name = String.fromCharCode(...bytes.subarray(entry, entry + 8)).replace(/\0+$/, '');
    ranges.push([name, view.getUint32(entry + 8, true), view.getUint32(entry + 12, true)]);
  }
  for (const [name, offset, length] of ranges) {
    if (offset + length > bytes.length) fail(`truncated: section "${name}" ends at byte ${offset + length}, the file has ${bytes.length}`);
  }
  const expected = view.getUint32(28, true);
  const actual = crc32(bytes, HEADER_BYTES);
  if (actual !== expected) fail(`checksum mismatch (CRC-32 ${actual.toString(16).padStart(8, '0')}, header says ${expected.toString(16).padStart(8, '0')}): the file is corrupt`);
  for (const [name, offset, length] of ranges) sections.set(name, bytes.slice(offset, offset + length));
  return { variant: variant!, vocabSize: view.getUint32(16, true), tokenCount: view.getUint32(20, true), sections };
}

/** Typed views over a decoded file's sections, with size checks that name the section. */
class SectionReader {
  constructor(
    private readonly contents: IndexFileContents,
    private readonly file: string,
  ) {}

  private take(name: string): Uint8Array {
    const data = this.contents.sections.get(name);
    if (!data) throw new IndexFormatError(`${this.file}: section "${name}" is missing`);
    return data;
  }

  u32(name: string, expectedLength?: number): Uint32Array {
    const data = this.take(name);
    if (data.length % 4 !== 0) throw new IndexFormatError(`${this.file}: section "${name}" has ${data.length} bytes, not a whole number of 32-bit values`);
    const array = new Uint32Array(data.buffer, data.byteOffset, data.length / 4);
    if (expectedLength !== undefined && array.length !== expectedLength) throw new IndexFormatError(`${this.file}: section "${name}" has ${array.length} values, expected ${expectedLength}`);
    return array;
  }

  corpus(name: string, vocabSize: number, expectedLength: number) {
    const data = this.take(name);
    const corpus = corpusArray(vocabSize, 0);
    const width = corpus.BYTES_PER_ELEMENT;
    if (data.length !== expectedLength * width) throw new IndexFormatError(`${this.file}: section "${name}" has ${data.length} bytes, expected ${expectedLength * width} (${expectedLength} tokens)`);
    return width === 2 ? new Uint16Array(data.buffer, data.byteOffset, expectedLength) : new Uint32Array(data.buffer, data.byteOffset, expectedLength);
  }
}

const levelName = (level: number) => `level${String(level).padStart(2, '0')}`;

/** The file of an index (either variant). */
export function serializeIndex(index: TokenIndex): Uint8Array {
  const sections = new Map<string, Uint8Array>();
  if (index instanceof SuffixArrayIndex) {
    sections.set('corpus', bytesOf(index.corpus));
    sections.set('sa', bytesOf(index.suffixArray));
  } else if (index instanceof FmIndex) {
    const p = index.parts;
    sections.set('params', bytesOf(Uint32Array.of(p.sampleRate, p.bwt.levels)));
    sections.set('alphabet', bytesOf(p.alphabet));
    sections.set('counts', bytesOf(p.symbolStarts));
    sections.set('zeros', bytesOf(p.bwt.zeros));
    // only the bits are stored: rank samples are rebuilt on load (one pass), a smaller file
    p.bwt.bits.forEach((bits, level) => sections.set(levelName(level), bytesOf(bits.words)));
    sections.set('marks', bytesOf(p.sampledRows.words));
    sections.set('samples', bytesOf(p.samples));
  } else {
    throw new IndexFormatError(`cannot store a ${index.variant} index`);
  }
  return encodeIndexFile({ variant: index.variant, vocabSize: index.vocabSize, tokenCount: index.tokenCount, sections });
}

/** An index from its file; IndexFormatError names `file` and what is wrong. */
export function parseIndex(bytes: Uint8Array, file = 'index file'): TokenIndex {
  const contents = decodeIndexFile(bytes, file);
  const { vocabSize, tokenCount } = contents;
  const read = new SectionReader(contents, file);
  if (contents.variant === 'suffix-array') {
    return new SuffixArrayIndex(read.corpus('corpus', vocabSize, tokenCount), read.u32('sa', tokenCount), vocabSize);
  }
  const [sampleRate, levels] = read.u32('params', 2);
  if (!(sampleRate >= 1) || !(levels >= 1 && levels <= 32)) throw new IndexFormatError(`${file}: bad FM-index parameters (sample rate ${sampleRate}, ${levels} levels)`);
  const rows = tokenCount + 1;
  const words = RankBitVector.wordsFor(rows);
  const alphabet = read.u32('alphabet');
  if (alphabet.some((token) => token > vocabSize)) throw new IndexFormatError(`${file}: section "alphabet" names a token outside the vocabulary of ${vocabSize}`);
  const bits = Array.from({ length: levels }, (_, level) => new RankBitVector(read.u32(levelName(level), words), rows));
  return new FmIndex({
    vocabSize,
    tokenCount,
    sampleRate,
    alphabet,
    symbolStarts: read.u32('counts', alphabet.length + 2),
    bwt: new WaveletMatrix(rows, levels, bits, read.u32('zeros', levels)),
    sampledRows: new RankBitVector(read.u32('marks', words), rows),
    samples: read.u32('samples', Math.floor(tokenCount / sampleRate) + 1),
  });
}
