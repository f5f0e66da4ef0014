/**
 * ThinK — Xu et al., "ThinK: Thinner Key Cache by Query-Driven Pruning", ICLR 2025,
 * https://arxiv.org/abs/2407.21018. Reference read: SalesforceAIResearch/ThinK,
 * `ThinK_flash/src/kv_pruning_utils.py` and `ThinK_eager/…` (key_pruner_query_driven, update_thinkv),
 * `ThinK_flash/src/{mistral_model,cache_utils}.py` (GQA, decoding), `ThinK_kivi/models/llama_kivi_think.py`.
 *
 * Key-channel pruning after token selection (a later member of a composition, `snapkv:… +
 * think:ratio=0.4`, or alone on the whole cache). Per layer × KV head h and channel c, as the reference:
 *
 *   s_g[c] = mean_{last W queries of head g}(q_c²) · mean_{every key j the head holds}(k_jc²)
 *
 * (the reference's "efficient" form of the paper's ‖Q[:, c] K[:, c]ᵀ‖_F, which ranks the same; keys
 * after the selection, recent ones included, as ThinK_flash — ThinK_kivi averages only the keys it
 * prunes; queries and keys post-RoPE). GQA (`gqa`, default mean): the
 * reference repeats KV heads and keeps one mask per *query* head (a 4× larger cache under GQA, as
 * its SnapKV), so a KV head here reduces its query heads' s_g with pipeline/gqa.ts. The ⌊ratio·d⌋
 * lowest channels (ties: the lower channel index) are pruned from every key but the newest
 * `recent`; values are untouched. The graph sees pruned channels as 0 (q·k over the kept ones):
 * a Reencode with `keys`, codec `think` (kElements = d − pruned, kPruned = the channels), charged to
 * the head's channel mask, a CodecGroup of d bits rounded up to bytes (K side), once per head.
 *
 * Channel sets are decided once, at the first prefill with a window of queries (W' = min(W, prompt
 * rows), as the reference's `q[..., -32:, :]`), and kept until reset; a later prefill prunes its old
 * plain keys with the same sets. Decoding (`decode`): `keep` (default, the reference's
 * ThinK_flash/eager: decoded keys are appended unpruned for good); `prune`: keys leaving the recent
 * window are pruned with the head's set once `block` of them have left (ThinK_kivi prunes its
 * full-precision residual block when it fills); the policy's work is O(block) per step, but the
 * store applies any re-encoding decision in O(entries) per head, so block = 1 (every step) costs
 * that each step and the default 32 once every 32 steps.
 * Only plain fp32 entries are pruned (an entry under another codec, or a pruned one, is left).
 * Attached mid-run (no prefill window): it gathers the next W decode queries, then decides the
 * sets and prunes once as at prefill. Differences from the card: the card's formula is the
 * reference's; the card says nothing of GQA or decoding (above). Unbudgeted: every entry is kept.
 * Views: headMeasures `channel_saliency` (d numbers per head) and `pruned_channels`; measures
 * `pruned_fraction` (pruned key elements ÷ held key elements, per layer), on deciding decisions.
 */
import type { CodecGroup, EntryCodec, Reencode } from '../cache/decision.ts';
import type { PolicyCache } from '../cache/view.ts';
import { gqaParam, reduceGqaHead, type GqaReduce } from '../pipeline/gqa.ts';
import { defineMethod } from '../pipeline/pipeline.ts';
import type { DecisionDraft, Scorer, StageEnv, Transform } from '../pipeline/stages.ts';
import type { JsonValue } from '../types.ts';
import { enumParam, floatParam, intParam } from './types.ts';

export type ThinKDecode = 'keep' | 'prune';

export interface ThinKOptions {
  /** share of key channels pruned (⌊ratio·d⌋) */
  ratio: number;
  /** W: the last queries whose q_c² is averaged */
  window: number;
  /** the newest keys never pruned */
  recent: number;
  /** decode=prune: prune once this many keys have left the recent window */
  block: number;
  gqa: GqaReduce;
  decode: ThinKDecode;
}

/** mean over `rows` rows (d floats each, from `offset`) of x_c², per channel. */
export function meanSquares(data: ArrayLike<number>, offset: number, rows: number, d: number): Float64Array {
  const out = new Float64Array(d);
  for (let r = 0; r < rows; r++) for (let c = 0; c < d; c++) out[c] += data[offset + r * d + c] ** 2;
  if (rows > 0) for (let c = 0; c < d; c++) out[c] /= rows;
  return out;
}

/** A KV head's channel saliency: per query head g, qMeans[g][c] · kMean[c], reduced with `gqa`. */
export function channelSaliency(qMeans: readonly Float64Array[], kMean: Float64Array, gqa: GqaReduce): Float64Array {
  return reduceGqaHead(qMeans.map((q) => q.map((x, c) => x * kMean[c])), 0, 1, gqa);
}

/** The `count` lowest-saliency channels, ascending (ties: the lower index goes first). */
export function lowestChannels(saliency: ArrayLike<number>, count: number): number[] {
  const order = Array.from({ length: saliency.length }, (_, c) => c).sort((a, b) => saliency[a] - saliency[b] || a - b);
  return order.slice(0, count).sort((a, b) => a - b);
}

/** Id of the channel-mask group of (layer, kvHead). */
export function thinkGroupId(prefix: string, layer: number, kvHead: number): string {
  return `${prefix}mask/L${layer}/kv${kvHead}`;
}

interface Sets {
  /** [layer·Hkv + kvHead] → saliency (d numbers) and pruned channels (ascending) */
  saliency: number[][];
  pruned: number[][];
}

/** The transform with its state; `sets` (null until decided) is exposed for tests. */
export function thinkTransform(options: ThinKOptions): Transform & { readonly sets: Sets | null } {
  let sets: Sets | null = null;
  /** attached mid-run: Σ q_c² per [layer·H + queryHead] over `gathered` decode queries */
  let sums: Float64Array[] | null = null;
  let gathered = 0;

  const decide = (env: StageEnv, qMean: (layer: number, qh: number) => Float64Array): Sets => {
    const { cache } = env;
    const d = cache.headDim;
    const group = env.dims.nHeads / cache.nKvHeads;
    const count = Math.floor(d * options.ratio);
    const out: Sets = { saliency: [], pruned: [] };
    for (let l = 0; l < cache.nLayers; l++) {
      for (let h = 0; h < cache.nKvHeads; h++) {
        const kMean = meanSquares(cache.keys(l, h), 0, cache.length(l, h), d);
        const qMeans = Array.from({ length: group }, (_, g) => qMean(l, h * group + g));
        const saliency = Array.from(channelSaliency(qMeans, kMean, options.gqa));
        out.saliency.push(saliency);
        out.pruned.push(lowestChannels(saliency, count));
      }
    }
    return out;
  };

  /** Decides the sets from this hook's queries when it has enough; true when they were just decided. */
  const observe = (env: StageEnv): boolean => {
    if (sets) return false;
    const d = env.cache.headDim;
    const prefill = env.prefill;
    if (env.phase === 'prefill' && prefill?.windowQueries && prefill.windowRows > 0) {
      const rows = Math.min(options.window, prefill.windowRows);
      const all = prefill.windowRows;
      sets = decide(env, (l, qh) => meanSquares(prefill.windowQueries![l], (qh * all + all - rows) * d, rows, d));
      sums = null;
      gathered = 0;
      return true;
    }
    const queries = env.step?.queries;
    if (env.phase !== 'step' || !queries) return false;
    const H = env.dims.nHeads;
    sums ??= Array.from({ length: env.cache.nLayers * H }, () => new Float64Array(d));
    for (let l = 0; l < env.cache.nLayers; l++) {
      for (let qh = 0; qh < H; qh++) {
        const acc = sums[l * H + qh];
        for (let c = 0; c < d; c++) acc[c] += queries[l][qh * d + c] ** 2;
      }
    }
    gathered++;
    if (gathered < options.window) return false;
    const mean = sums.map((s) => s.map((x) => x / gathered));
    sets = decide(env, (l, qh) => mean[l * H + qh]);
    sums = null;
    gathered = 0;
    return true;
  };

  /** Prunes entry i of (layer, kvHead) into the head's draft. */
  const prune = (cache: PolicyCache, reencode: Reencode[], layer: number, kvHead: number, i: number, codec: EntryCodec): void => {
    const d = cache.headDim;
    const keys = cache.keys(layer, kvHead).slice(i * d, (i + 1) * d);
    let all = 0;
    let dropped = 0;
    for (let c = 0; c < d; c++) all += keys[c] ** 2;
    for (const c of codec.kPruned!) {
      dropped += keys[c] ** 2;
      keys[c] = 0;
    }
    reencode.push({ index: i, codec, keys, kError: all > 0 ? Math.sqrt(dropped / all) : 0 });
  };

  const finish = (env: StageEnv, draft: DecisionDraft): void => {
    const fresh = observe(env);
    if (!sets) return;
    const bulk = fresh || env.phase === 'prefill';
    if (!bulk && options.decode === 'keep') return;
    const { cache } = env;
    const d = cache.headDim;
    const H = cache.nKvHeads;
    const fraction: number[] = [];
    let total = 0;
    for (let l = 0; l < cache.nLayers; l++) {
      let prunedElements = 0;
      let heldElements = 0;
      for (let h = 0; h < H; h++) {
        const channels = sets.pruned[l * H + h];
        const n = cache.length(l, h);
        const head = draft.layers[l][h];
        const before = head.reencode.length;
        const id = thinkGroupId(env.column(''), l, h);
        const codec: EntryCodec = { name: 'think', kBits: 32, vBits: 32, kElements: d - channels.length, vElements: d, kMetaBytes: 0, vMetaBytes: 0, group: id, kPruned: channels };
        if (channels.length > 0 && bulk) {
          for (let i = 0; i < n - options.recent; i++) if (cache.codec(l, h, i) === null) prune(cache, head.reencode, l, h, i, codec);
        } else if (channels.length > 0) {
          // the plain keys that have left the recent window since the last prune (one more per step)
          const newest = n - options.recent - 1;
          let i = newest;
          while (i >= 0 && newest - i < options.block && cache.codec(l, h, i) === null) i--;
          if (newest - i >= options.block) for (let j = i + 1; j <= newest; j++) prune(cache, head.reencode, l, h, j, codec);
        }
        const added = head.reencode.length - before;
        total += added;
        if (added > 0) draft.groups.push(maskGroup(id, l, h, channels.length, d));
        if (!bulk) continue;
        let pruned = added;
        for (let i = 0; i < n; i++) if (cache.codec(l, h, i)?.group === id) pruned++;
        prunedElements += pruned * channels.length;
        heldElements += n * d;
      }
      fraction.push(heldElements > 0 ? prunedElements / heldElements : Number.NaN);
    }
    if (!bulk) return;
    const grid = (rows: number[][]) => Array.from({ length: cache.nLayers }, (_, l) => rows.slice(l * H, (l + 1) * H).map((r) => [...r]));
    draft.headMeasures.channel_saliency = grid(sets.saliency);
    draft.headMeasures.pruned_channels = grid(sets.pruned);
    draft.measures.pruned_fraction = fraction;
    const count = sets.pruned[0]?.length ?? 0;
    draft.notes.push(`think: ${count} of ${d} key channels pruned per head from ${total} keys (the newest ${options.recent} kept whole)`);
  };

  return {
    needs: { queries: true, prefillWindow: options.window },
    get sets() {
      return sets;
    },
    finish,
    state: {
      get: (): JsonValue => ({ sets: sets ? { saliency: sets.saliency, pruned: sets.pruned } : null, sums: sums ? sums.map((s) => Array.from(s)) : null, gathered }),
      set(value) {
        const object = value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {};
        const stored = object.sets;
        sets = stored && typeof stored === 'object' && !Array.isArray(stored) ? { saliency: stored.saliency as number[][], pruned: stored.pruned as number[][] } : null;
        sums = Array.isArray(object.sums) ? (object.sums as number[][]).map((s) => Float64Array.from(s)) : null;
        gathered = typeof object.gathered === 'number' ? object.gathered : 0;
      },
      reset() {
        sets = null;
        sums = null;
        gathered = 0;
      },
    },
  };
}

function maskGroup(id: string, layer: number, kvHead: number, pruned: number, d: number): CodecGroup {
  return { id, kBytes: Math.ceil(d / 8), vBytes: 0, label: `ThinK channel mask (${pruned} of ${d} key channels pruned), layer ${layer}, KV head ${kvHead}` };
}

/** No per-entry scores: it only says what the method does when attached without a prefill window. */
function withoutHistory(options: ThinKOptions): Scorer {
  return {
    columns: [],
    withoutHistory: `without a prefill window of queries it gathers the next ${options.window} decode queries, then picks the channels and prunes every key but the newest ${options.recent}`,
    headScores: () => null,
  };
}

export const thinkPolicy = defineMethod({
  id: 'think',
  holdsEveryEntry: 'keeps every entry; saves bytes by pruning key channels',
  label: 'ThinK (query-driven key-channel pruning)',
  description:
    'Per head, scores key channels by the last queries’ q_c² times the keys’ mean k_c², and prunes the lowest share of channels from every key but the newest; values and entries stay. Composes after a token selection.',
  paper: {
    short: 'Xu et al., 2025 (ICLR)',
    title: 'ThinK: Thinner Key Cache by Query-Driven Pruning',
    url: 'https://arxiv.org/abs/2407.21018',
    code: 'https://github.com/SalesforceAIResearch/ThinK',
  },
  params: [
    { name: 'ratio', kind: 'float', default: 0.4, min: 0, max: 1, description: 'share of key channels pruned per head (⌊ratio·d⌋)' },
    { name: 'window', kind: 'int', default: 32, min: 1, description: 'W: the last queries whose squared channels score (prefill window, or decode queries when attached)' },
    { name: 'recent', kind: 'int', default: 32, min: 0, description: 'the newest keys kept whole' },
    { name: 'block', kind: 'int', default: 32, min: 1, description: 'decode=prune: prune once this many keys have left the recent window (1: every step)' },
    gqaParam('mean', 'how the query heads of a KV head combine their channel scores (the reference keeps one mask per query head)'),
    {
      name: 'decode',
      kind: 'enum',
      default: 'keep',
      choices: ['keep', 'prune'],
      description: 'keep: decoded keys stay whole (the reference); prune: keys leaving the recent window are pruned with the head’s channels',
    },
  ],
  needs: { attention: false, queries: true, calibration: false },
  build(params) {
    const options: ThinKOptions = {
      ratio: floatParam(params, 'ratio'),
      window: intParam(params, 'window'),
      recent: intParam(params, 'recent'),
      block: intParam(params, 'block'),
      gqa: enumParam(params, 'gqa') as GqaReduce,
      decode: enumParam(params, 'decode') as ThinKDecode,
    };
    return { scorer: withoutHistory(options), transforms: [thinkTransform(options)] };
  },
});
