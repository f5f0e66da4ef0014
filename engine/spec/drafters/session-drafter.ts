/**
 * A drafter that is a model decoding under its own KV-cache policy: the shipped draft model (or any
 * model with the target's tokenizer), or the target itself on a compressed cache (self-speculation).
 *
 * The draft session feeds every context token, then drafts inside a speculative section
 * (Session.speculate): it draws d1 from its pending logits, feeds it, draws d2, … . Next round it
 * keeps the longest prefix of what it fed that the new context shares — rewinding the rejected
 * drafts exactly, cache and policy state included (Session.rewindSpeculation) — and feeds the
 * rest (the target's correction or bonus) step by step, so its policy sees a token-by-token decode.
 */
import { DraftSpecError } from '../../errors.ts';
import { softmax } from '../../metrics/softmax.ts';
import { samplingDistribution } from '../../sampling.ts';
import { Session, type EngineModel } from '../../session.ts';
import type { Drafter, DraftProposal, DraftRequest } from '../drafter.ts';
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
  const shaOf = (m: typeof a) => m.files.find((f) => f.path === m.tokenizer.file)?.sha256;
  if (shaOf(a) !== undefined && shaOf(a) === shaOf(b)) return null;
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

export class SessionDrafter implements Drafter {
  private readonly session: Session;

  constructor(
    readonly spec: string,
    readonly gamma: number,
    private readonly model: EngineModel,
    policy: string,
  ) {
    this.session = new Session(model, { policy, trace: QUIET_TRACE });
  }

  /** the draft session's current KV-cache policy (canonical) */
  get policySpec(): string {
    return this.session.policySpec;
  }

  async propose(request: DraftRequest): Promise<DraftProposal> {
    await this.catchUp(request.tokens);
    const session = this.session;
    const { contextLength } = session.dims;
    const eos = this.model.manifest.tokenizer.eos_id;
    const out: DraftProposal = { tokens: [], q: [], confidence: [] };
    session.speculate();
    for (let i = 0; i < request.maxTokens; i++) {
      const logits = session.nextTokenLogits!;
      const q = samplingDistribution(logits, request.sampler);
      const token = drawFromTarget(q, request.rng);
      out.tokens.push(token);
      out.q.push(q);
      out.confidence.push(softmax(logits)[token]);
      // the last draft needs no forward; nor does one at EOS or where the draft's context ends
      if (i === request.maxTokens - 1 || token === eos || session.position > contextLength - 1) break;
      await session.step({ token });
    }
    return out;
  }

  /** Makes the draft session hold exactly `tokens`: keep the prefix it shares with them, feed the rest. */
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
