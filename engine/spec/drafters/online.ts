/**
 * Online speculative decoding (Liu et al. 2024, "Online Speculative Decoding", ICML; code
 * LiuXiaoxuanPKU/OSD, read for its loop: keep a buffer of the positions where the target disagreed
 * with the draft, with the target's distribution there, and every so often distil the draft on it).
 *
 * Mechanism chosen: the draft's ONNX graph cannot be trained in the browser, so the drafter learns
 * a correction on top of its logits, z' = z + b + Σ_k B_k[last k tokens] (k = 1 … order): a
 * vocabulary bias plus biases keyed by the last tokens, so a correction learnt after "unto the"
 * does not leak everywhere. Each rejected draft puts (its keys, z, the target's p) in the buffer;
 * every `update_every` rounds, EPOCHS passes of gradient descent on the distillation loss
 * KL(p ‖ softmax(z'/T)) — gradient softmax(z'/T) − p on every bias that applied — then the buffer
 * is emptied, as OSD does after an update. The draft draws from q = the sampler's distribution of
 * z', and that q is what it reports, so verification stays lossless.
 */
import { samplingDistribution } from '../../sampling.ts';
import type { Drafter, DrafterDefinition, DraftProposal, DraftRequest, RoundOutcome } from '../drafter.ts';
import { formatDraftSpec } from '../spec.ts';
import { drawFromTarget } from '../verify.ts';
import { DraftCursor, loadDraftModel } from './session-drafter.ts';

/** passes over the buffer per update: one step moves a logit by at most lr, a margin needs a few */
const EPOCHS = 4;
/** keyed biases kept (the least recently trained dropped first, never the vocabulary-wide one): each is a vocabulary-sized vector */
const MAX_KEYS = 1024;
/** rounds the recent acceptance in describe() covers */
const RECENT = 8;

interface Correction {
  keys: string[];
  logits: Float32Array;
  target: Float64Array;
  temperature: number;
}

export interface OnlineOptions {
  gamma: number;
  lr: number;
  updateEvery: number;
  order: number;
  vocabSize: number;
}

function softmaxAt(logits: ArrayLike<number>, temperature: number): Float64Array {
  const out = new Float64Array(logits.length);
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += out[i] = Math.exp((logits[i] - max) / temperature);
  for (let i = 0; i < out.length; i++) out[i] /= total;
  return out;
}

export class OnlineDrafter implements Drafter {
  /** '' = the vocabulary bias; 'k:a,b' = the bias after the last k tokens a, b */
  private readonly biases = new Map<string, Float32Array>();
  private buffer: Correction[] = [];
  private pending: { contextLength: number; drafts: { keys: string[]; logits: Float32Array }[]; temperature: number } | null = null;
  private rounds = 0;
  private updates = 0;
  private trained = 0;
  private readonly recent: number[] = [];

  constructor(
    readonly spec: string,
    private readonly options: OnlineOptions,
    private readonly cursor: DraftCursor,
  ) {}

  get gamma(): number {
    return this.options.gamma;
  }

  private keysFor(context: readonly number[]): string[] {
    const keys = [''];
    for (let k = 1; k <= Math.min(this.options.order, context.length); k++) keys.push(`${k}:${context.slice(context.length - k).join(',')}`);
    return keys;
  }

  /** z' = z + the biases that apply after `keys` */
  private adapted(logits: Float32Array, keys: readonly string[]): Float32Array {
    const out = logits.slice();
    for (const key of keys) {
      const bias = this.biases.get(key);
      if (bias) for (let i = 0; i < out.length; i++) out[i] += bias[i];
    }
    return out;
  }

  async propose(request: DraftRequest): Promise<DraftProposal> {
    const cursor = this.cursor;
    await cursor.start(request.tokens);
    const context = [...request.tokens];
    const out: DraftProposal = { tokens: [], q: [], confidence: [] };
    const drafts: { keys: string[]; logits: Float32Array }[] = [];
    for (let i = 0; i < request.maxTokens; i++) {
      const keys = this.keysFor(context);
      const logits = cursor.logits.slice();
      const adapted = this.adapted(logits, keys);
      const q = samplingDistribution(adapted, request.sampler);
      const token = drawFromTarget(q, request.rng);
      out.tokens.push(token);
      out.q.push(q);
      out.confidence.push(softmaxAt(adapted, 1)[token]);
      drafts.push({ keys, logits });
      context.push(token);
      if (i === request.maxTokens - 1 || token === cursor.eos || !cursor.canFeed) break;
      await cursor.feed(token);
    }
    this.pending = { contextLength: request.tokens.length, drafts, temperature: request.sampler.temperature || 1 };
    return out;
  }

  observe(outcome: RoundOutcome): void {
    const pending = this.pending;
    this.pending = null;
    this.rounds++;
    if (outcome.drafted.length) {
      this.recent.push(outcome.accepted / outcome.drafted.length);
      if (this.recent.length > RECENT) this.recent.shift();
    }
    const rejected = outcome.accepted;
    // the target corrected draft `rejected` when it verified it and did not keep it
    if (pending && pending.contextLength === outcome.context.length && rejected < outcome.drafted.length && rejected < outcome.targetProbs.length) {
      const draft = pending.drafts[rejected];
      this.buffer.push({ keys: draft.keys, logits: draft.logits, target: outcome.targetProbs[rejected], temperature: pending.temperature });
    }
    if (this.rounds % this.options.updateEvery === 0 && this.buffer.length) this.update();
  }

  /** Drops the least recently trained keyed bias; the vocabulary-wide bias ('') is never dropped. */
  private evictStalest(): void {
    for (const key of this.biases.keys()) {
      if (key === '') continue;
      this.biases.delete(key);
      return;
    }
  }

  /** OSD's periodic distillation on the recorded corrections, then a fresh buffer. */
  private update(): void {
    const { lr, vocabSize } = this.options;
    for (let epoch = 0; epoch < EPOCHS; epoch++) {
      for (const entry of this.buffer) {
        const q = softmaxAt(this.adapted(entry.logits, entry.keys), entry.temperature);
        for (const key of entry.keys) {
          let bias = this.biases.get(key);
          if (bias) {
            // least recently trained last: re-insert, so eviction takes the stalest keyed bias
            this.biases.delete(key);
            this.biases.set(key, bias);
          } else {
            if (this.biases.size >= MAX_KEYS) this.evictStalest();
            this.biases.set(key, (bias = new Float32Array(vocabSize)));
          }
          for (let i = 0; i < vocabSize; i++) bias[i] -= lr * (q[i] - entry.target[i]);
        }
      }
    }
    this.trained += this.buffer.length;
    this.updates++;
    this.buffer = [];
  }

  describe(): Record<string, number | string> {
    return {
      updates: this.updates,
      buffer: this.buffer.length,
      trained_positions: this.trained,
      learned_biases: this.biases.size,
      recent_acceptance: this.recent.length ? this.recent.reduce((s, a) => s + a, 0) / this.recent.length : 0,
    };
  }
}

export const onlineDrafter: DrafterDefinition = {
  id: 'online',
  label: 'Online speculative decoding',
  description: 'the draft model with a logit correction learnt during the session: every few rounds, gradient steps of KL(target ‖ draft) at the positions where the target corrected the draft',
  paper: { short: 'Liu et al., 2024 (ICML)', title: 'Online Speculative Decoding', url: 'https://arxiv.org/abs/2310.07177', code: 'LiuXiaoxuanPKU/OSD' },
  params: [
    { kind: 'int', name: 'gamma', description: 'most tokens drafted per round (γ)', default: 4, min: 1, max: 32 },
    { kind: 'text', name: 'model', description: 'draft model id (empty = the one the target\'s manifest names)', default: '', pattern: /^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, patternText: 'a model id such as kvscope-draft-2l' },
    { kind: 'policy', name: 'policy', description: 'the draft model\'s own KV-cache policy', default: 'full' },
    { kind: 'float', name: 'lr', description: 'learning rate of the logit correction', default: 0.5, min: 0.001, max: 10 },
    { kind: 'int', name: 'update_every', description: 'rounds between distillation updates', default: 4, min: 1, max: 1000 },
    { kind: 'int', name: 'order', description: 'the correction is keyed by the last 1 … order tokens (0 = a vocabulary bias only)', default: 2, min: 0, max: 4 },
  ],
  gammaParam: 'gamma',
  example: { spec: 'online:gamma=4', what: 'draft model with a correction learnt online' },
  async create(params, env) {
    const id = String(params.model);
    const draft = await loadDraftModel(id, env, 'online');
    const canonical = formatDraftSpec({ id: 'online', params: { ...params, model: id || env.target.manifest.draft || '' } }, [onlineDrafter]);
    const options: OnlineOptions = {
      gamma: Number(params.gamma),
      lr: Number(params.lr),
      updateEvery: Number(params.update_every),
      order: Number(params.order),
      vocabSize: env.target.manifest.architecture.vocab_size,
    };
    return new OnlineDrafter(canonical, options, new DraftCursor(draft, String(params.policy)));
  },
};
