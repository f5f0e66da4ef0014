/**
 * The ∞-gram drafter (Liu et al. 2024, "Infini-gram: Scaling Unbounded n-gram Language Models to
 * a Trillion Tokens"; the FM-index variant: Xu et al. 2025, "Infini-gram mini: Exact n-gram
 * Search at the Internet Scale with FM-Index"; liujch1998/infini-gram read for the semantics).
 *
 * Each draft token comes from the ∞-gram over a token corpus (engine/spec/ngram/): the longest
 * suffix of the context (prompt, output, tokens drafted so far) that occurs in the corpus with a
 * continuation gives q = counts of the tokens that follow it / their sum. Unlike prompt lookup q
 * is a real distribution, so at temperature > 0 the token is drawn from q and verification uses
 * q(x) (verify.ts): acceptance min(1, p(x)/q(x)) is the overlap of model and corpus statistics.
 * q is the corpus's, not reshaped by the target's temperature / top-k / top-p: any q keeps
 * verification exact. At temperature 0 the draft is q's argmax (one-hot, so q = null). Drafting
 * stops when not even the last token occurs, or after an end-of-sequence token.
 *
 * `context=true` (the default) adds the text so far to the corpus as one more document
 * (ngram/context-tokens.ts), so a passage the session repeats is found like a corpus passage and
 * counts add up where both match — prompt lookup's strength with a real q. `context=false` is the
 * corpus alone, as Infini-gram defines it.
 */
import { DraftSpecError } from '../../errors.ts';
import { tokenizerSha256 } from '../../model/manifest.ts';
import type { Drafter, DrafterDefinition, DraftProposal, DraftRequest } from '../drafter.ts';
import { INDEX_MANIFEST_FILE, isIndexId, parseIndexManifest, VARIANT_FILES, type IndexManifest } from '../ngram/files.ts';
import { parseIndex } from '../ngram/format.ts';
import { withContext } from '../ngram/context-tokens.ts';
import { countsToDistribution, infiniGram, type IndexVariant, type NextTokenCounts, type TokenIndex } from '../ngram/token-index.ts';
import { formatDraftSpec } from '../spec.ts';
import { drawFromTarget } from '../verify.ts';

export interface InfiniGramDrafterOptions {
  gamma: number;
  /** the fewest continuations a suffix needs (1 = Infini-gram's count > 0) */
  minCount: number;
  /** search the text so far too, as one more document */
  context: boolean;
  eos: number;
  /** for describe(): the index's id, file size and corpus size */
  indexId: string;
  fileBytes: number;
  corpusBytes: number;
}

/** The most frequent next token; the smallest id among equals, so greedy drafts are deterministic. */
function mostFrequent(counts: NextTokenCounts): number {
  let best = 0;
  for (let i = 1; i < counts.tokens.length; i++) if (counts.counts[i] > counts.counts[best]) best = i;
  return counts.tokens[best];
}

export class InfiniGramDrafter implements Drafter {
  private lookups = 0;
  private lookupMs = 0;
  private matchedTokens = 0;

  constructor(
    readonly spec: string,
    readonly index: TokenIndex,
    private readonly options: InfiniGramDrafterOptions,
  ) {}

  get gamma(): number {
    return this.options.gamma;
  }

  private lookup(context: readonly number[], maxLength: number) {
    const started = globalThis.performance.now();
    const source = this.options.context ? withContext(this.index, context) : this.index;
    const match = infiniGram(source, context, { minCount: this.options.minCount, maxLength });
    this.lookupMs += globalThis.performance.now() - started;
    this.lookups++;
    this.matchedTokens += match?.suffixLength ?? 0;
    return match;
  }

  async propose(request: DraftRequest): Promise<DraftProposal> {
    const proposal: DraftProposal = { tokens: [], q: [], confidence: [] };
    const context = request.tokens.slice();
    const sampling = request.sampler.temperature > 0;
    // after drafting t the longest corpus match is at most one longer (its occurrences are the old ones
    // followed by t); the text so far grows with t, so with it every length is tried again
    let maxLength = context.length;
    for (let i = 0; i < Math.min(this.gamma, request.maxTokens); i++) {
      const match = this.lookup(context, maxLength);
      if (!match) break;
      const q = countsToDistribution(match, this.index.vocabSize);
      const token = sampling ? drawFromTarget(q, request.rng) : mostFrequent(match);
      proposal.tokens.push(token);
      proposal.q.push(sampling ? q : null);
      proposal.confidence.push(q[token]);
      if (token === this.options.eos) break;
      context.push(token);
      maxLength = this.options.context ? context.length : match.suffixLength + 1;
    }
    return proposal;
  }

  describe(): Record<string, number | string> {
    return {
      index: this.options.indexId,
      variant: this.index.variant,
      index_bytes: this.index.bytes,
      index_file_bytes: this.options.fileBytes,
      corpus_tokens: this.index.tokenCount,
      corpus_bytes: this.options.corpusBytes,
      lookups: this.lookups,
      mean_lookup_us: this.lookups ? (this.lookupMs * 1000) / this.lookups : 0,
      mean_suffix_tokens: this.lookups ? this.matchedTokens / this.lookups : 0,
    };
  }
}

const VARIANTS: readonly IndexVariant[] = ['suffix-array', 'fm-index'];

export const infinigramDrafter: DrafterDefinition = {
  id: 'infinigram',
  label: '∞-gram (corpus index)',
  description: 'the longest suffix of the context found in a token corpus gives the next-token distribution q; γ tokens are drawn from it (suffix array, or a compact FM-index)',
  paper: {
    short: 'Liu et al., 2024 (Infini-gram); Xu et al., 2025 (Infini-gram mini)',
    title: 'Infini-gram: Scaling Unbounded n-gram Language Models to a Trillion Tokens / Infini-gram mini: Exact n-gram Search at the Internet Scale with FM-Index',
    url: 'https://arxiv.org/abs/2401.17377',
    code: 'liujch1998/infini-gram',
  },
  params: [
    { kind: 'int', name: 'gamma', description: 'most tokens drafted per round (γ)', default: 4, min: 1, max: 32 },
    { kind: 'text', name: 'index', description: 'token index id in static/indexes (empty = the shipped default)', default: '', pattern: /^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/, patternText: 'an index id such as heldout-even (empty = the default)' },
    { kind: 'enum', name: 'variant', description: 'suffix array (corpus + array, fastest) or FM-index (compact)', default: 'suffix-array', choices: VARIANTS },
    { kind: 'int', name: 'min_count', description: 'continuations a suffix needs to be used (1 = count > 0)', default: 1, min: 1, max: 1_000_000 },
    { kind: 'bool', name: 'context', description: 'also search the text so far, as one more document of the corpus', default: true },
  ],
  gammaParam: 'gamma',
  example: { spec: 'infinigram:gamma=4', what: '∞-gram: longest suffix match in a token index and the text so far' },
  async create(params, env) {
    const id = String(params.index);
    const variant = String(params.variant) as IndexVariant;
    if (id !== '' && !isIndexId(id)) throw new DraftSpecError(`infinigram: ${JSON.stringify(id)} is not an index id`);
    if (!env.loadIndex) throw new DraftSpecError('infinigram: no token index can be loaded here');
    const manifest: IndexManifest = parseIndexManifest(await env.loadIndex(id, INDEX_MANIFEST_FILE), `index ${id || '(default)'} ${INDEX_MANIFEST_FILE}`);
    const target = env.target.manifest;
    const expected = tokenizerSha256(target);
    if (expected && manifest.tokenizer_sha256 !== expected) {
      throw new DraftSpecError(`infinigram: index ${manifest.id} was built with another tokenizer (sha256 ${manifest.tokenizer_sha256.slice(0, 12)}…) than ${target.id} uses (${expected.slice(0, 12)}…): rebuild it with kvscope index build --model ${target.id}`);
    }
    const entry = manifest.files[variant];
    if (!entry) throw new DraftSpecError(`infinigram: index ${manifest.id} has no ${variant} file (it has: ${Object.keys(manifest.files).join(', ') || 'none'})`);
    const bytes = await env.loadIndex(id, entry.path ?? VARIANT_FILES[variant]);
    const index = parseIndex(bytes, `index ${manifest.id} ${entry.path}`);
    if (index.variant !== variant) throw new DraftSpecError(`infinigram: index ${manifest.id} ${entry.path} holds a ${index.variant} index, not ${variant}`);
    if (index.vocabSize !== target.architecture.vocab_size) {
      throw new DraftSpecError(`infinigram: index ${manifest.id} covers a vocabulary of ${index.vocabSize}, ${target.id} has ${target.architecture.vocab_size}`);
    }
    return new InfiniGramDrafter(formatDraftSpec({ id: 'infinigram', params }, [infinigramDrafter]), index, {
      gamma: Number(params.gamma),
      minCount: Number(params.min_count),
      context: params.context === true,
      eos: target.tokenizer.eos_id,
      indexId: manifest.id,
      fileBytes: bytes.length,
      corpusBytes: manifest.corpus_bytes,
    });
  },
};
