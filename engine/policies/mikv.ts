/**
 * MiKV — Yang et al., 2024, "No Token Left Behind: Reliable KV Cache Compression via
 * Importance-Aware Mixed Precision Quantization" (https://arxiv.org/abs/2402.18096). No public
 * reference code was read (policy card ⚠, paper and its summaries only); what follows is our
 * reading, ambiguous choices as parameters. Quantizer: engine/quant/quantize.ts (asymmetric RTN,
 * fp16 scale + zero point per group).
 *
 * Importance as H2O (pipeline/in-play.ts: accumulated attention, sinks/recent/top-k): MiKV keeps
 * what H2O would evict at low precision, so the important set is H2O's cache — the `recent` newest
 * entries plus the `heavy` entries with the most accumulated attention among those not demoted
 * yet (as H2O picks among those it has not evicted). Attention is reduced to the KV head per row
 * with `gqa` (default sum, H2O's; sum and mean rank as H2O's per-query-head sums, max per row) and
 * accumulated for the entries still in play only. Nothing is evicted:
 * - important entries are held at `high_bits`: 1–8 = per-token asymmetric integers (the paper's
 *   INT8 option, default 8), 16 = fp16 (its FP16 option: the values rounded to fp16, no
 *   metadata), 32 = fp32 (left as computed);
 * - the rest are re-encoded at `low_bits` (default 2), per token, asymmetric, groups of `group`
 *   channels (default 32 = head_dim: one group per token). A demoted entry stays low: its
 *   precision is gone, so an entry that becomes heavy again is not promoted back. A demoted entry
 *   is quantized from what the cache holds (its high-precision codes, as a real cache would);
 *   errors are measured against the exact entry.
 * - Outlier balancer (`balance`, default on), per layer, KV head and channel c:
 *   b_c = sqrt(max|q_c| / max|k_c|) over the prompt, stored in fp16; low-precision keys are stored
 *   as quantize(k ⊙ b) and the graph sees dequantize(·) ⊘ b ≈ k. Reading: the engine hands a
 *   policy the queries of the last `window` prompt rows only (as SnapKV gets its window), so
 *   max|q_c| is over those rows and the KV head's query heads, max|k_c| over the head's keys at
 *   prefill. b is measured once (the first prefill, or — attached mid-run — the first decoding
 *   step it acts at, from that step's query) and kept until reset. Only low-precision keys are balanced (the paper's
 *   motivation is INT2–4 error); values and high-precision keys are not. Until b is known, entries
 *   that would be demoted are held at high precision. b is a CodecGroup per (layer, KV head):
 *   head_dim fp16 key bytes, charged while any balanced entry of the head lives.
 * An entry another method encoded is left as it is (never quantized twice). A store column
 * (pipeline/in-play.ts, max on merges) flags the entries still in play, so a step reads
 * O(heavy + recent) codecs and selects among them (H2O's fast path), not the head. For
 * the same reason decisions carry no per-entry scores for the trace (the precision each entry is
 * held at is in its codec).
 *
 * When it acts: after prefill, when attached, and while decoding once every `block` tokens
 * (default 8; 1 = every step, the paper's per-step H2O), decided by the token count so that it
 * needs no state. In between, new entries stay fp32 and entries leaving the important set stay
 * high: more precision than the method promises for up to block − 1 tokens, never less, and the
 * bytes are counted as stored. A decode step that does not act costs the accumulation only.
 *
 * Budgets: `heavy` / `recent` count high-precision entries, not held entries: MiKV holds every
 * entry, so its decisions record no entry budget (the contract suite's bound does not apply);
 * `kvscope eval` maps B to heavy + recent (halvedBudgetRule) as for H2O, and compares bytes.
 * P1: positions unchanged.
 */
import type { CodecGroup, EntryCodec, Reencode } from '../cache/decision.ts';
import { PolicySpecError } from '../errors.ts';
import { halvedBudgetRule, promptBudget, promptLength } from '../pipeline/allocators.ts';
import { gqaParam, type GqaReduce } from '../pipeline/gqa.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import { IN_PLAY_COLUMN, importantAmong, inPlayAttention, inPlayEntries, KNOWN, OUT_OF_PLAY } from '../pipeline/in-play.ts';
import type { StageEnv, Transform } from '../pipeline/stages.ts';
import { balancerOf } from '../quant/balancer.ts';
import { HALF_BYTES, roundHalf } from '../quant/half.ts';
import { groupCount, metadataBytes, quantizeBlock, relativeL2 } from '../quant/quantize.ts';
import type { JsonValue } from '../types.ts';
import { budgetParam, budgetValue } from './common.ts';
import { boolParam, enumParam, intParam, type PolicyParams } from './types.ts';

const FP16_BITS = 16;
const FP32_BITS = 32;

export interface MikvOptions {
  heavy: number;
  recent: number;
  /** 1–8 integer, 16 fp16, 32 fp32 */
  highBits: number;
  lowBits: number;
  /** channels per quantization group (per token) */
  group: number;
  balance: boolean;
  /** prompt query rows the balancer reads */
  window: number;
  /** decoding: act once every `block` tokens */
  block: number;
}

export function mikvBalancerGroupId(prefix: string, layer: number, kvHead: number): string {
  return `${prefix}L${layer}/kv${kvHead}/balancer`;
}

/** The query rows of KV head `kvHead` in a hook's observation (prefill window or step), or null. */
function headQueries(env: StageEnv, layer: number, kvHead: number): Float32Array | null {
  const { dims } = env;
  const d = dims.headDim;
  const group = dims.groupSize;
  const rows = env.prefill ? env.prefill.windowRows : 1;
  const all = env.prefill ? env.prefill.windowQueries?.[layer] : env.step?.queries?.[layer];
  if (!all || rows === 0) return null;
  // [H, rows, D]: the group's query heads are contiguous
  return all.subarray(kvHead * group * rows * d, (kvHead + 1) * group * rows * d);
}

/** `mikv-hi8`, `mikv-hi16` (fp16), `mikv-lo2`, `mikv-lo2-bal` (balanced keys). */
function codecName(bits: number, low: boolean, balanced: boolean): string {
  return `mikv-${low ? 'lo' : 'hi'}${bits}${balanced ? '-bal' : ''}`;
}

interface Encoded {
  codec: EntryCodec;
  keys?: Float32Array;
  values?: Float32Array;
}

/**
 * Entries `indices` of a head stored at `bits`: integers 1–8 per token, or fp16. Integers: one
 * block for all of them, a key and a value row per entry (per-token groups never span rows, so
 * this is each row quantized on its own); a low key is balanced when `balancer` is given. The
 * graph sees the dequantized rows; errors are relative L2 to the exact entry.
 */
function encodeEntries(env: StageEnv, layer: number, kvHead: number, indices: readonly number[], bits: number, low: boolean, options: MikvOptions, balancer: Float32Array | null, group: string | null): Reencode[] {
  const { cache } = env;
  const d = cache.headDim;
  const keys = cache.keys(layer, kvHead);
  const values = cache.values(layer, kvHead);
  const name = codecName(bits, low, balancer !== null);
  const m = indices.length;
  let dequantized: Float32Array;
  let codec: EntryCodec;
  if (bits === FP16_BITS) {
    dequantized = new Float32Array(2 * m * d);
    indices.forEach((i, r) => {
      for (let c = 0; c < d; c++) {
        dequantized[2 * r * d + c] = roundHalf(keys[i * d + c]);
        dequantized[(2 * r + 1) * d + c] = roundHalf(values[i * d + c]);
      }
    });
    codec = { name, kBits: FP16_BITS, vBits: FP16_BITS, kElements: d, vElements: d, kMetaBytes: 0, vMetaBytes: 0 };
  } else {
    const rows = new Float32Array(2 * m * d);
    indices.forEach((i, r) => {
      for (let c = 0; c < d; c++) rows[2 * r * d + c] = balancer ? keys[i * d + c] * balancer[c] : keys[i * d + c];
      rows.set(values.subarray(i * d, (i + 1) * d), (2 * r + 1) * d);
    });
    dequantized = quantizeBlock(rows, 2 * m, d, { bits, axis: 'token', groupSize: options.group }).dequantized;
    if (balancer) for (let r = 0; r < m; r++) for (let c = 0; c < d; c++) dequantized[2 * r * d + c] /= balancer[c];
    const metaBytes = metadataBytes(groupCount(1, d, 'token', options.group));
    codec = { name, kBits: bits, vBits: bits, kElements: d, vElements: d, kMetaBytes: metaBytes, vMetaBytes: metaBytes, groupSize: options.group };
    if (group !== null) codec.group = group;
  }
  return indices.map((i, r) => {
    const key = dequantized.slice(2 * r * d, (2 * r + 1) * d);
    const value = dequantized.slice((2 * r + 1) * d, (2 * r + 2) * d);
    const exact = cache.exact(layer, kvHead, i);
    return {
      index: i,
      codec,
      keys: key,
      values: value,
      kError: relativeL2(exact?.keys ?? keys.subarray(i * d, (i + 1) * d), key),
      vError: relativeL2(exact?.values ?? values.subarray(i * d, (i + 1) * d), value),
    };
  });
}

interface MikvCounts {
  /** entries newly stored at high precision / demoted to low precision in this decision */
  raised: number;
  demoted: number;
}

export function mikvTransform(options: MikvOptions): Transform & { readonly balancers: readonly (readonly (Float32Array | null)[])[] } {
  /** [layer][kvHead] b, null until measured */
  let balancers: (Float32Array | null)[][] = [];
  const balancerAt = (env: StageEnv, layer: number, kvHead: number): Float32Array | null => {
    if (!options.balance) return null;
    balancers[layer] ??= [];
    const known = balancers[layer][kvHead];
    if (known) return known;
    const queries = headQueries(env, layer, kvHead);
    if (!queries) return null;
    const b = balancerOf(queries, env.cache.keys(layer, kvHead), env.cache.headDim);
    balancers[layer][kvHead] = b;
    return b;
  };
  const highName = codecName(options.highBits, false, false);
  let counts: MikvCounts = { raised: 0, demoted: 0 };
  /** balancer groups the decision being built names (declared by every decision that names them: a group may have died meanwhile) */
  let named: CodecGroup[] = [];
  return {
    needs: options.balance ? { queries: true, prefillWindow: options.window } : {},
    get balancers() {
      return balancers;
    },
    layer(env, layer, heads) {
      if (layer === 0) {
        counts = { raised: 0, demoted: 0 };
        named = [];
      }
      // decoding acts once every `block` tokens (stateless: by token count); in between, new
      // entries stay fp32 and leaving ones stay high — more precision, never less, and counted
      if (env.phase === 'step' && env.cache.tokenCount % options.block !== 0) return;
      const { cache } = env;
      const d = cache.headDim;
      const prompt = promptLength(env);
      const heavy = promptBudget(prompt, options.heavy);
      const recent = promptBudget(prompt, options.recent);
      for (const head of heads) {
        const h = head.kvHead;
        const { indices, known } = inPlayEntries(env, layer, h);
        // scores read for the candidates only (the trace gets no per-entry scores: copying the head's every step would cost its length)
        const important = importantAmong(indices, cache.column(layer, h, env.column('attention')), heavy, recent);
        const balancer = balancerAt(env, layer, h);
        const groupId = balancer ? mikvBalancerGroupId(env.column(''), layer, h) : null;
        // the column is updated with what this decision does (the session applies it in the same transaction)
        let column: Float64Array | null = null;
        const mark = (i: number, state: number) => {
          column ??= cache.writeColumn(layer, h, env.column(IN_PLAY_COLUMN));
          column[i] = state;
        };
        const raise: number[] = [];
        const demote: number[] = [];
        for (let k = 0; k < indices.length; k++) {
          const i = indices[k];
          // until the balancer is measured (attached mid-run, no query yet) nothing is demoted
          const leaving = important[k] === 0 && (!options.balance || balancer !== null);
          if (!leaving && known[k] === 1) continue;
          // only entries that change are looked up: a new one, or one leaving the important set
          const codec = cache.codec(layer, h, i);
          const state = codec === null ? 'plain' : codec.name === highName ? 'high' : 'other';
          if (state === 'other') {
            mark(i, OUT_OF_PLAY);
          } else if (leaving) {
            mark(i, OUT_OF_PLAY);
            demote.push(i);
          } else {
            mark(i, KNOWN);
            if (state === 'plain' && options.highBits !== FP32_BITS) raise.push(i);
          }
        }
        if (raise.length > 0) head.reencode.push(...encodeEntries(env, layer, h, raise, options.highBits, false, options, null, null));
        if (demote.length > 0) head.reencode.push(...encodeEntries(env, layer, h, demote, options.lowBits, true, options, balancer, groupId));
        counts.raised += raise.length;
        counts.demoted += demote.length;
        const balanced = demote.length > 0 && balancer !== null;
        if (balanced && groupId) named.push({ id: groupId, kBytes: d * HALF_BYTES, vBytes: 0, label: `MiKV key balancer (fp16 per channel), layer ${layer}, KV head ${h}` });
      }
    },
    finish(_env, draft) {
      draft.groups.push(...named);
      if (counts.raised + counts.demoted === 0) return;
      const high = options.highBits === FP32_BITS ? 'fp32' : options.highBits === FP16_BITS ? 'fp16' : `${options.highBits}-bit`;
      draft.notes.push(`mikv: ${counts.demoted} entries demoted to ${options.lowBits}-bit${options.balance ? ' (balanced keys)' : ''}, ${counts.raised} stored at ${high}`);
    },
    state: {
      get: (): JsonValue => ({ balancers: balancers.map((row) => row.map((b) => (b ? Array.from(b) : null))) }),
      set(value) {
        const object = value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
        const rows = Array.isArray(object.balancers) ? object.balancers : [];
        balancers = rows.map((row) => (Array.isArray(row) ? row.map((b) => (Array.isArray(b) ? Float32Array.from(b as number[]) : null)) : []));
        counts = { raised: 0, demoted: 0 };
      },
      reset() {
        balancers = [];
        counts = { raised: 0, demoted: 0 };
      },
    },
  };
}

export function mikvOptions(params: PolicyParams): MikvOptions {
  const options: MikvOptions = {
    heavy: budgetValue(params, 'heavy'),
    recent: budgetValue(params, 'recent'),
    highBits: intParam(params, 'high_bits'),
    lowBits: intParam(params, 'low_bits'),
    group: intParam(params, 'group'),
    balance: boolParam(params, 'balance'),
    window: intParam(params, 'window'),
    block: intParam(params, 'block'),
  };
  const high = options.highBits;
  if (!((high >= 1 && high <= 8) || high === FP16_BITS || high === FP32_BITS)) {
    throw new PolicySpecError(`mikv: high_bits must be 1–8 (integers per token), 16 (fp16) or 32 (fp32), got ${high}`);
  }
  if (options.lowBits >= high) throw new PolicySpecError(`mikv: low_bits ${options.lowBits} must be below high_bits ${high}`);
  return options;
}

export const mikvPolicy = defineMethod({
  id: 'mikv',
  label: 'MiKV (important entries high, the rest low precision)',
  description:
    'Keeps every entry: the heavy hitters and recent entries (as H2O picks them) at high precision, the rest quantized to a few bits per token, keys balanced per channel against the queries’ outliers.',
  paper: {
    short: 'Yang et al., 2024 (MiKV)',
    title: 'No Token Left Behind: Reliable KV Cache Compression via Importance-Aware Mixed Precision Quantization',
    url: 'https://arxiv.org/abs/2402.18096',
  },
  params: [
    budgetParam('heavy', 0.1, 'heavy-hitter entries held at high precision'),
    budgetParam('recent', 0.1, 'most recent entries held at high precision'),
    { name: 'high_bits', kind: 'int', default: 8, min: 1, max: 32, description: 'precision of important entries: 1–8 bits per token, 16 = fp16, 32 = fp32' },
    { name: 'low_bits', kind: 'int', default: 2, min: 1, max: 8, description: 'bits of the other entries (per token, asymmetric); a demoted entry stays low' },
    { name: 'group', kind: 'int', default: 32, min: 1, description: 'channels per quantization group (per token; ≥ head_dim = one group)' },
    { name: 'balance', kind: 'bool', default: true, description: 'outlier balancer: quantize k ⊙ b, b_c = sqrt(max|q_c| / max|k_c|), for low-precision keys' },
    { name: 'window', kind: 'int', default: 32, min: 1, description: 'last prompt queries the balancer reads' },
    {
      name: 'block',
      kind: 'int',
      default: 8,
      min: 1,
      description: 'decoding: demote and encode once every `block` tokens (1 = every step); in between new entries stay fp32',
    },
    gqaParam('sum', "how the query heads' attention of a KV head combine for importance"),
  ],
  // B high-precision entries per head (the rest stay, at low precision)
  budget: halvedBudgetRule('heavy', 'recent', 'high-precision entries per head (the rest kept at low precision)'),
  needs: { attention: true, queries: false, calibration: false },
  build(params, context) {
    const options = mikvOptions(params);
    const balancer = options.balance ? '; the key balancer is measured from the query of the first decoding step it acts at (until then entries are not demoted)' : '';
    const scorer = inPlayAttention(context.dims.groupSize, enumParam(params, 'gqa') as GqaReduce);
    return {
      scorer: { ...scorer, withoutHistory: `${scorer.withoutHistory}${balancer}` },
      transforms: [mikvTransform(options)],
    };
  },
});
