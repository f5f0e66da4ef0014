/**
 * One block of K (or V) rows as CacheGen's bitstream (Liu et al., SIGCOMM 2024,
 * arXiv:2310.07240; reference UChi-JCL/CacheGen, LMCache/lmcache/storage_backend/serde/
 * cachegen_encoder.py / cachegen_decoder.py read): a block is `rows` tokens × `cols` channels
 * (one chunk × one layer × one KV head in policies/cachegen.ts), row-major.
 *
 * 1. Per-token symmetric quantization (the reference's torch_quant_vectorized): per row,
 *    m = max |x| (stored in fp16), C = ⌊bins/2⌋ − 1, q = clamp(round(x·C/m), −C, C), symbol q + C
 *    ∈ 0…2C (2C + 1 symbols), x̂ = q·(m/C). A row of zeros stores m = 0 and decodes to 0.
 * 2. Change-based encoding (the paper, §5.1; not in the released code, hence `anchor`, 0 = off):
 *    rows are grouped `anchor` at a time; the first of a group (the anchor) is quantized as is,
 *    every other row as its delta to the anchor's *decoded* row (x − x̂_anchor, with its own scale),
 *    x̂ = x̂_anchor + q·(m/C). Deltas and anchors share the channel's table.
 * 3. Per-channel empirical distribution (the reference's calculate_cdf, per layer × channel): the
 *    counts of each symbol in each channel over the block's rows, stored with the block (packed:
 *    entropy.ts packTables), then the rows are range-coded (entropy.ts), token-major, channel c
 *    with table c, in one stream (the reference codes one stream per layer × channel for GPU
 *    parallelism; one stream saves the per-stream flush bytes).
 *
 * Bytes of a block: stream + packed tables + 2 per row (fp16 scale) — `blockBytes`. Decoding
 * (decodeBlock) needs only the stored bytes, the block's shape, bins and anchor; its output is
 * what the graph sees.
 */
import { RangeDecoder, RangeEncoder, frequencyTable, packTables, packedTableBytes, unpackTables, type FrequencyTable } from './entropy.ts';
import { HALF_BYTES, roundHalf } from './half.ts';

const HALF_MAX = 65504;

export interface BlockShape {
  rows: number;
  cols: number;
  /** the reference's "bins": 2·(⌊bins/2⌋ − 1) + 1 symbols */
  bins: number;
  /** rows per anchor group (0 = no delta coding) */
  anchor: number;
}

export interface EncodedBlock extends BlockShape {
  /** the range-coded symbols */
  stream: Uint8Array;
  /** per-channel symbol counts, packed */
  tables: Uint8Array;
  /** per-row fp16 scale m (max |x| or max |delta|), held as numbers */
  scales: Float32Array;
}

/** C of a bins count: symbols are q + C for q in −C…C. */
export function halfLevels(bins: number): number {
  const c = Math.floor(bins / 2) - 1;
  if (!Number.isInteger(bins) || c < 1 || bins > 256) throw new RangeError(`cachegen bins must be an integer in 4…256, got ${bins}`);
  return c;
}

/** Number of symbols of a bins count (2C + 1). */
export function symbolCount(bins: number): number {
  return 2 * halfLevels(bins) + 1;
}

/** Whether row t is coded relative to an anchor row, and which. */
export function anchorOf(t: number, anchor: number): number {
  return anchor > 0 ? t - (t % anchor) : t;
}

/** Bytes of an encoded block: stream + tables + fp16 scales. */
export function blockBytes(block: EncodedBlock): number {
  return block.stream.length + block.tables.length + block.scales.length * HALF_BYTES;
}

function checkShape(shape: BlockShape): void {
  const { rows, cols, anchor } = shape;
  if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(cols) || cols < 1) throw new RangeError(`block must be at least 1 × 1, got ${rows} × ${cols}`);
  if (!Number.isInteger(anchor) || anchor < 0) throw new RangeError(`anchor group must be an integer ≥ 0, got ${anchor}`);
  halfLevels(shape.bins);
}

/**
 * Quantizes and codes a rows × cols block. Returns the stored block, the symbols and the
 * encoder's own reconstruction (which decodeBlock(block) reproduces exactly).
 */
export function encodeBlock(x: ArrayLike<number>, shape: BlockShape): { block: EncodedBlock; symbols: Uint8Array; reconstruction: Float32Array } {
  checkShape(shape);
  const { rows, cols, bins, anchor } = shape;
  if (x.length !== rows * cols) throw new RangeError(`block of ${rows} × ${cols} needs ${rows * cols} values, got ${x.length}`);
  const c = halfLevels(bins);
  const size = 2 * c + 1;
  const symbols = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows);
  const xHat = new Float32Array(rows * cols);
  const target = new Float64Array(cols);
  for (let t = 0; t < rows; t++) {
    const a = anchorOf(t, anchor);
    const base = t * cols;
    const ref = a * cols;
    const delta = a !== t;
    let max = 0;
    for (let j = 0; j < cols; j++) {
      const v = delta ? x[base + j] - xHat[ref + j] : x[base + j];
      target[j] = v;
      const abs = v < 0 ? -v : v;
      if (abs > max) max = abs;
    }
    const m = Math.min(HALF_MAX, roundHalf(max));
    scales[t] = m;
    const step = m / c;
    const inverse = m > 0 ? c / m : 0;
    for (let j = 0; j < cols; j++) {
      let q = Math.round(target[j] * inverse);
      if (q > c) q = c;
      else if (q < -c) q = -c;
      symbols[base + j] = q + c;
      xHat[base + j] = (delta ? xHat[ref + j] : 0) + q * step;
    }
  }
  const counts: Uint32Array[] = Array.from({ length: cols }, () => new Uint32Array(size));
  for (let t = 0; t < rows; t++) for (let j = 0; j < cols; j++) counts[j][symbols[t * cols + j]]++;
  const tablesOf = counts.map((k) => frequencyTable(k));
  const encoder = new RangeEncoder();
  for (let t = 0, i = 0; t < rows; t++) for (let j = 0; j < cols; j++, i++) encoder.encode(symbols[i], tablesOf[j]);
  const stream = encoder.finish();
  const block: EncodedBlock = { rows, cols, bins, anchor, stream, tables: packTables(counts, rows), scales };
  return { block, symbols, reconstruction: xHat };
}

/** The symbols of a stored block (tables unpacked from its bytes, then the stream decoded). */
export function decodeSymbols(block: EncodedBlock): Uint16Array {
  checkShape(block);
  const { rows, cols } = block;
  const size = symbolCount(block.bins);
  if (block.tables.length !== packedTableBytes(cols, size, rows)) throw new RangeError(`block tables: ${block.tables.length} bytes, expected ${packedTableBytes(cols, size, rows)}`);
  const tables: FrequencyTable[] = unpackTables(block.tables, cols, size, rows).map((k) => frequencyTable(k, { lookup: true }));
  const out = new Uint16Array(rows * cols);
  const decoder = new RangeDecoder(block.stream);
  for (let t = 0, i = 0; t < rows; t++) for (let j = 0; j < cols; j++, i++) out[i] = decoder.decode(tables[j]);
  return out;
}

/** x̂ from the stored block alone: what a CacheGen decoder gives and what the graph sees. */
export function decodeBlock(block: EncodedBlock): Float32Array {
  const symbols = decodeSymbols(block);
  const { rows, cols, anchor } = block;
  const c = halfLevels(block.bins);
  const out = new Float32Array(rows * cols);
  for (let t = 0; t < rows; t++) {
    const a = anchorOf(t, anchor);
    const step = block.scales[t] / c;
    for (let j = 0; j < cols; j++) out[t * cols + j] = (a === t ? 0 : out[a * cols + j]) + (symbols[t * cols + j] - c) * step;
  }
  return out;
}
