/**
 * A drafter that is a model decoding under its own KV-cache policy: the shipped draft model (or any
 * model with the target's tokenizer), or the target itself on a compressed cache (self-speculation).
 *
 * The draft session feeds every context token, then drafts inside a speculative section
 * (Session.speculate): it draws d1 from its pending logits, feeds it, draws d2, … . Next round it
 * keeps the longest prefix of what it fed that the new context shares — rewinding the rejected
 * drafts exactly, cache and policy state included (Session.rewindSpeculation) — and feeds the
 * rest (the target's correction or bonus) step by step, so its policy sees a token-by-token decode.
 * A context that leaves the previous one before its last round (the user stepped the target back
 * or reset it) cannot be rewound to: the draft session starts over and prefills it.
 */
import { DraftSpecError } from '../../errors.ts';
import { tokenizerSha256 } from '../../model/manifest.ts';
import { softmax } from '../../metrics/softmax.ts';
import { samplingDistribution } from '../../sampling.ts';
import { Session, type EngineModel } from '../../session.ts';
import type { Drafter, DrafterEnv, DraftProposal, DraftRequest } from '../drafter.ts';
import { drawFromTarget } from '../verify.ts';

const QUIET_TRACE = { attention: false, fullSteps: 0, topTokens: 0, attentionTop: 0 };

/** Why two models cannot share draft tokens, or null when their tokenizers agree. */
export function tokenizerMismatch(target: EngineModel, draft: EngineModel): string | null {
  const a = target.manifest;
  const b = draft.manifest;
  if (a.architecture.vocab_size !== b.architecture.vocab_size) return `its vocabulary has ${b.architecture.vocab_size} tokens, the target's ${a.architecture.vocab_size}`;
  for (const key of ['bos_id', 'eos_id', 'pad_id', 'add_bos'] as const) {
    if (a.tokenizer[key] !== b.tokenizer[key]) return `its tokenizer.${key} is ${String(b.tokenizer[key])}, the target's ${String(a.tokenizer[key])}`;
  }
  const sha = tokenizerSha256(a);
  if (sha !== undefined && sha === tokenizerSha256(b)) return null;
  const ta = target.tokenizer;
  const tb = draft.tokenizer;
  if (!ta || !tb) return 'its tokenizer.json differs from the target\'s (another sha256) and cannot be compared token by token';
  for (let id = 0; id < a.architecture.vocab_size; id++) {
    if (ta.rawToken(id) !== tb.rawToken(id)) return `its token ${id} is ${JSON.stringify(tb.rawToken(id))}, the target's ${JSON.stringify(ta.rawToken(id))}`;
  }
  return null;
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** The draft model `id` names ('' = the one the target's manifest names), checked to share the target's tokenizer. */
export async function loadDraftModel(id: string, env: DrafterEnv, drafter: string): Promise<EngineModel> {
  const wanted = id || env.target.manifest.draft || '';
  if (!wanted) throw new DraftSpecError(`${drafter}: the target ${env.target.manifest.id} names no draft model; give one with model=ID`);
  if (!MODEL_ID.test(wanted)) throw new DraftSpecError(`${drafter}: ${JSON.stringify(wanted)} is not a model id`);
  if (!env.loadModel) throw new DraftSpecError(`${drafter}: no draft model can be loaded here`);
  const draft = await env.loadModel(wanted);
  const mismatch = tokenizerMismatch(env.target, draft);
  if (mismatch) throw new DraftSpecError(`${drafter}: ${draft.manifest.id} cannot draft for ${env.target.manifest.id}: ${mismatch}`);
  return draft;
}

/**
 * A draft model's session, one draft token at a time: start() makes it hold a round's context and
 * opens a speculative section, `logits` is its next-token prediction, feed() appends a draft. A
 * wrapper decides per token whether to go on (OmniDraft's adaptive length) or what to draw (an
 * online-adapted distribution); next round's start() rewinds the rejected drafts exactly.
 */
export class DraftCursor {
  readonly session: Session;

  constructor(
    readonly model: EngineModel,
    policy: string,
  ) {
    this.session = new Session(model, { policy, trace: QUIET_TRACE });
  }

  get eos(): number {
    return this.model.manifest.tokenizer.eos_id;
  }

  /** the draft's next-token logits after the tokens held */
  get logits(): Float32Array {
    return this.session.nextTokenLogits!;
  }

  /** whether one more draft can be fed inside the draft model's context */
  get canFeed(): boolean {
    return this.session.position <= this.session.dims.contextLength - 1;
  }

  /** Holds exactly `tokens` and opens the round's speculative section. */
  async start(tokens: readonly number[]): Promise<void> {
    await this.catchUp(tokens);
    this.session.speculate();
  }

  async feed(token: number): Promise<void> {
    await this.session.step({ token });
  }

  /** Keeps the prefix the session shares with `tokens` (rewinding rejected drafts), feeds the rest. */
  private async catchUp(tokens: readonly number[]): Promise<void> {
    const session = this.session;
    const shared = commonPrefix(session.tokens, tokens);
    if (session.speculating) {
      const settled = session.tokens.length - session.speculativeSteps;
      if (shared >= settled) session.rewindSpeculation(shared - settled);
      session.settle();
      if (shared < settled) session.reset();
    } else if (shared < session.tokens.length) {
      session.reset();
    }
    if (session.tokens.length === 0) {
      if (tokens.length > session.dims.contextLength) throw new DraftSpecError(`the draft model's context (${session.dims.contextLength}) is shorter than the ${tokens.length} tokens so far`);
      await session.prefill(tokens);
      return;
    }
    for (let i = session.tokens.length; i < tokens.length; i++) await session.step({ token: tokens[i] });
  }
}

export class SessionDrafter implements Drafter {
  private readonly cursor: DraftCursor;

  constructor(
    readonly spec: string,
    readonly gamma: number,
    model: EngineModel,
    policy: string,
  ) {
    this.cursor = new DraftCursor(model, policy);
  }

  /** the draft session's current KV-cache policy (canonical) */
  get policySpec(): string {
    return this.cursor.session.policySpec;
  }

  /** the draft session, for reading (tests compare its cache after a rewind); drive it only through propose() */
  get draftSession(): Session {
    return this.cursor.session;
  }

  async propose(request: DraftRequest): Promise<DraftProposal> {
    const cursor = this.cursor;
    await cursor.start(request.tokens);
    const out: DraftProposal = { tokens: [], q: [], confidence: [] };
    for (let i = 0; i < request.maxTokens; i++) {
      const logits = cursor.logits;
      const q = samplingDistribution(logits, request.sampler);
      const token = drawFromTarget(q, request.rng);
      out.tokens.push(token);
      out.q.push(q);
      out.confidence.push(softmax(logits)[token]);
      // the last draft needs no forward; nor does one at EOS or where the draft's context ends
      if (i === request.maxTokens - 1 || token === cursor.eos || !cursor.canFeed) break;
      await cursor.feed(token);
    }
    return out;
  }
}
