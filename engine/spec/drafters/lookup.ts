/**
 * Prompt lookup decoding (Saxena 2023, "Prompt Lookup Decoding"; transformers'
 * PromptLookupCandidateGenerator, read for its semantics; vLLM's n-gram proposer is the same idea).
 *
 * For n from max_ngram down to 1: take the context's last n tokens and find their first (leftmost)
 * earlier occurrence whose continuation is not empty; propose the k tokens that followed it (fewer
 * at the context's end). Proposals stop before an end-of-sequence token (transformers #31301).
 * q is one-hot: the drafter proposes, it does not weigh, so at temperature > 0 a draft token is
 * accepted with probability p(x) and a rejection draws from p without it (verify.ts).
 */
import type { Drafter, DraftProposal, DraftRequest } from '../drafter.ts';

export interface LookupOptions {
  maxNgram: number;
  k: number;
  eos: number;
}

/** The continuation prompt lookup proposes for `tokens` (at most k ids; [] when nothing matches). */
export function lookupContinuation(tokens: readonly number[], options: LookupOptions, limit = options.k): number[] {
  const length = tokens.length;
  const take = Math.min(options.k, limit);
  for (let n = Math.min(options.maxNgram, length - 1); n >= 1; n--) {
    const tail = length - n;
    for (let start = 0; start + n <= length; start++) {
      let match = true;
      for (let j = 0; j < n; j++) {
        if (tokens[start + j] !== tokens[tail + j]) {
          match = false;
          break;
        }
      }
      if (!match) continue;
      const from = start + n;
      const to = Math.min(from + take, length);
      if (from >= to) continue; // the tail itself: nothing follows it yet
      const continuation = tokens.slice(from, to);
      const eos = continuation.indexOf(options.eos);
      return eos >= 0 ? continuation.slice(0, eos) : continuation;
    }
  }
  return [];
}

export class LookupDrafter implements Drafter {
  constructor(
    readonly spec: string,
    private readonly options: LookupOptions,
  ) {}

  get gamma(): number {
    return this.options.k;
  }

  async propose(request: DraftRequest): Promise<DraftProposal> {
    const tokens = lookupContinuation(request.tokens, this.options, request.maxTokens);
    return { tokens, q: tokens.map(() => null), confidence: tokens.map(() => 1) };
  }
}
