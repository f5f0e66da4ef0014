/**
 * The held-out needle family: needle retrieval on prompts whose wordings, key formats and filler
 * never appear in training (static/data/needle-family.json, written by the corpus script). The
 * passkey of needle.ts asks in the training wording; this asks whether retrieval generalises.
 *
 * A prompt is BOS + filler sentences (fillerSentences of one filler source's documents, drawn
 * seeded) grown to a target length, the needle as its own line at the sentence boundary nearest
 * the depth, then "\n" + the question:
 *
 *   filler[:at].join(" ") + "\n" + NEEDLE(key) + "\n" + filler[at:].join(" ") + "\n" + QUESTION
 *
 * (an empty side of the filler drops its "\n"). Keys follow the wording's pattern: D → a digit,
 * L → a capital letter, anything else literal. (seed, wording, filler source, trial) fixes the
 * prompt. A trial decodes greedily with the full cache, at most |tokens of " " + key| + 2 tokens,
 * and succeeds when the decoded text, trimmed, starts with the key.
 */
import { KvscopeError } from '../errors.ts';
import { isObject } from '../json.ts';
import { Xoshiro128 } from '../sampling.ts';
import { Session, type EngineModel } from '../session.ts';
import { encodeBare, fillerSentences, randomIndex, type TokenEncoder } from './heldout.ts';
import { growFiller, trialDepth } from './needle.ts';

export interface FamilyWording {
  id: string;
  /** the needle line, with {key} where the key goes */
  needle: string;
  /** asked after the filler; the answer continues it */
  question: string;
  /** key pattern: D digit, L capital letter, other characters literal */
  key: string;
}

export interface FamilyFiller {
  src: string;
  licence: string;
  documents: string[];
}

export interface NeedleFamily {
  about: string;
  version: 1;
  wordings: FamilyWording[];
  filler: FamilyFiller[];
}

/** A needle-family file that does not match the schema; the message names the field. */
export class NeedleFamilyError extends KvscopeError {}

/**
 * Checks a parsed needle-family file against the schema (header) and returns it typed. `where`
 * (the file name) starts every message: `needle-family.json: wordings[1].needle must contain "{key}"`.
 */
export function parseNeedleFamily(json: unknown, where = 'needle family'): NeedleFamily {
  const fail = (field: string, problem: string): never => {
    throw new NeedleFamilyError(`${where}: ${field} ${problem}`);
  };
  const text = (value: unknown, field: string, allowEmpty = false): string => {
    if (typeof value !== 'string') return fail(field, `must be a string, got ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}`);
    if (!allowEmpty && value.trim() === '') return fail(field, 'must not be empty');
    return value;
  };
  const list = (value: unknown, field: string): unknown[] => {
    if (!Array.isArray(value)) return fail(field, 'must be an array');
    if (value.length === 0) return fail(field, 'must not be empty');
    return value;
  };
  if (!isObject(json)) return fail('the file', 'must be a JSON object {about, version, wordings, filler}');
  const about = text(json.about, 'about', true);
  if (json.version !== 1) fail('version', `must be 1, got ${JSON.stringify(json.version) ?? 'nothing'}`);
  const ids = new Set<string>();
  const wordings = list(json.wordings, 'wordings').map((w, i): FamilyWording => {
    const at = `wordings[${i}]`;
    if (!isObject(w)) return fail(at, 'must be an object {id, needle, question, key}');
    const id = text(w.id, `${at}.id`);
    if (ids.has(id)) fail(`${at}.id`, `"${id}" is used twice`);
    ids.add(id);
    const needle = text(w.needle, `${at}.needle`);
    if (!needle.includes('{key}')) fail(`${at}.needle`, 'must contain "{key}"');
    if (needle.includes('\n')) fail(`${at}.needle`, 'must be one line (no newline)');
    const question = text(w.question, `${at}.question`);
    const key = text(w.key, `${at}.key`);
    if (!/[DL]/.test(key)) fail(`${at}.key`, `must contain at least one D (digit) or L (letter), got "${key}"`);
    if (key.trim() !== key) fail(`${at}.key`, 'must not start or end with whitespace');
    return { id, needle, question, key };
  });
  const sources = new Set<string>();
  const filler = list(json.filler, 'filler').map((f, i): FamilyFiller => {
    const at = `filler[${i}]`;
    if (!isObject(f)) return fail(at, 'must be an object {src, licence, documents}');
    const src = text(f.src, `${at}.src`);
    if (sources.has(src)) fail(`${at}.src`, `"${src}" is used twice`);
    sources.add(src);
    const licence = text(f.licence, `${at}.licence`);
    const documents = list(f.documents, `${at}.documents`).map((d, k) => text(d, `${at}.documents[${k}]`, true));
    if (fillerSentences(documents).length === 0) fail(`${at}.documents`, 'hold no usable filler sentence (digit-free, 20–200 characters)');
    return { src, licence, documents };
  });
  return { about, version: 1, wordings, filler };
}

/** A key drawn from `pattern`: D → digit 0–9, L → capital letter A–Z, other characters literal. */
export function drawKey(pattern: string, rng: Xoshiro128): string {
  let key = '';
  for (const c of pattern) {
    if (c === 'D') key += String(randomIndex(rng, 10));
    else if (c === 'L') key += String.fromCharCode(65 + randomIndex(rng, 26));
    else key += c;
  }
  return key;
}

/** FNV-1a over the trial's identity: (seed, wording, filler source, trial) → the prompt's seed. */
export function familySeed(seed: number, wording: string, source: string, trial: number): number {
  let h = 0x811c9dc5;
  for (const c of `${seed}\u0000${wording}\u0000${source}\u0000${trial}`) {
    h ^= c.codePointAt(0)!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Greedy tokens a trial may decode for `key`: the tokens of " " + key, plus 2. */
export function familyDecodeTokens(tokenizer: TokenEncoder, key: string): number {
  return encodeBare(tokenizer, ` ${key}`).length + 2;
}

export interface FamilyPrompt {
  text: string;
  ids: number[];
  key: string;
  wording: string;
  source: string;
  /** requested depth */
  depth: number;
  /** filler sentences before the needle / all filler sentences */
  sentenceDepth: number;
  decodeTokens: number;
}

function assembleFamily(wording: FamilyWording, key: string, sentences: readonly string[], at: number): string {
  const lines = [sentences.slice(0, at).join(' '), wording.needle.replaceAll('{key}', key), sentences.slice(at).join(' ')].filter((l) => l !== '');
  return `${lines.join('\n')}\n${wording.question}`;
}

/**
 * One family prompt of at most `targetTokens` tokens (BOS included; within a sentence of it).
 * The key is the first draw of the seed's generator, so familyKey(pattern, seed) names it first.
 */
export function buildFamilyPrompt(
  tokenizer: TokenEncoder,
  sentences: readonly string[],
  wording: FamilyWording,
  options: { targetTokens: number; depth: number; seed: number; source: string },
): FamilyPrompt {
  const { targetTokens, depth, seed, source } = options;
  if (!(depth >= 0 && depth <= 1)) throw new RangeError(`needle depth must be in [0, 1], got ${depth}`);
  if (sentences.length === 0) throw new RangeError(`filler source "${source}" has no filler sentences`);
  const rng = new Xoshiro128(seed);
  const key = drawKey(wording.key, rng);
  const grown = growFiller(tokenizer, sentences, rng, { targetTokens, depth }, (chosen, at) => assembleFamily(wording, key, chosen, at));
  return {
    text: grown.text,
    ids: grown.ids,
    key,
    wording: wording.id,
    source,
    depth,
    sentenceDepth: grown.sentences.length ? grown.at / grown.sentences.length : 0,
    decodeTokens: familyDecodeTokens(tokenizer, key),
  };
}

/** The key a prompt of `seed` gets (the generator's first draws). */
export function familyKey(pattern: string, seed: number): string {
  return drawKey(pattern, new Xoshiro128(seed));
}

export interface FamilyTrial {
  wording: string;
  source: string;
  key: string;
  depth: number;
  promptTokens: number;
  output: string;
  success: boolean;
}

/** Whether a decoded answer retrieves `key`: trimmed, it starts with the key. */
export function familySuccess(output: string, key: string): boolean {
  return output.trim().startsWith(key);
}

/** Greedy decoding with the full cache until the answer is decided (or decodeTokens, or EOS). */
export async function runFamilyTrial(model: EngineModel, prompt: FamilyPrompt): Promise<FamilyTrial> {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new RangeError('needle-family trials need a model with a tokenizer');
  const session = new Session(model, { policy: 'full', sampler: { temperature: 0 }, trace: { attention: false, fullSteps: 0, topTokens: 0 } });
  await session.prefill(prompt.ids);
  const eos = model.manifest.tokenizer.eos_id;
  const generated: number[] = [];
  let output = '';
  for (let i = 0; i < prompt.decodeTokens; i++) {
    const step = await session.step();
    if (step.token.id === eos) break;
    generated.push(step.token.id);
    output = tokenizer.decode(generated, { skipSpecial: true });
    // decided once the trimmed text is as long as the key: more tokens cannot change startsWith
    if (output.trimStart().length >= prompt.key.length) break;
  }
  return {
    wording: prompt.wording,
    source: prompt.source,
    key: prompt.key,
    depth: prompt.depth,
    promptTokens: prompt.ids.length,
    output,
    success: familySuccess(output, prompt.key),
  };
}

export interface FamilySettings {
  /** trials per wording × filler source */
  trials: number;
  /** prompt lengths are spread over [min, max] tokens (each capped at context − decode tokens) */
  lengths: { min: number; max: number };
  seed: number;
}

/**
 * Length and depth of trial i of n: depths evenly over [0, 1] (both ends), lengths over
 * [min, max] by the golden-ratio sequence so that they do not move in step with the depths.
 */
export function familyTrialShape(i: number, n: number, lengths: { min: number; max: number }): { depth: number; targetTokens: number } {
  const spread = (i * 0.6180339887498949) % 1;
  return { depth: trialDepth(i, n), targetTokens: Math.round(lengths.min + (lengths.max - lengths.min) * spread) };
}

export interface FamilyTally {
  trials: number;
  correct: number;
  accuracy: number;
}

export interface NeedleFamilyReport {
  about: string;
  trialsPerCell: number;
  lengths: { min: number; max: number };
  promptTokens: { min: number; max: number; mean: number };
  overall: FamilyTally;
  byWording: ({ id: string; key: string } & FamilyTally)[];
  bySource: ({ src: string } & FamilyTally)[];
  /** every wording × filler source */
  cells: ({ wording: string; src: string } & FamilyTally)[];
  /** the first trial of each wording (key, output) */
  examples: { wording: string; src: string; key: string; output: string; success: boolean }[];
}

function tally(trials: readonly FamilyTrial[]): FamilyTally {
  const correct = trials.filter((t) => t.success).length;
  return { trials: trials.length, correct, accuracy: trials.length ? correct / trials.length : 0 };
}

/** Sums trials into the report's tallies (pure, so the report's shape is testable without a model). */
export function summarizeFamily(family: NeedleFamily, settings: FamilySettings, trials: readonly FamilyTrial[]): NeedleFamilyReport {
  const lengths = trials.map((t) => t.promptTokens);
  return {
    about: family.about,
    trialsPerCell: settings.trials,
    lengths: settings.lengths,
    promptTokens: {
      min: lengths.length ? Math.min(...lengths) : 0,
      max: lengths.length ? Math.max(...lengths) : 0,
      mean: lengths.reduce((a, b) => a + b, 0) / Math.max(1, lengths.length),
    },
    overall: tally(trials),
    byWording: family.wordings.map((w) => ({ id: w.id, key: w.key, ...tally(trials.filter((t) => t.wording === w.id)) })),
    bySource: family.filler.map((f) => ({ src: f.src, ...tally(trials.filter((t) => t.source === f.src)) })),
    cells: family.wordings.flatMap((w) => family.filler.map((f) => ({ wording: w.id, src: f.src, ...tally(trials.filter((t) => t.wording === w.id && t.source === f.src)) }))),
    examples: family.wordings.flatMap((w) => {
      const first = trials.find((t) => t.wording === w.id);
      return first ? [{ wording: w.id, src: first.source, key: first.key, output: first.output, success: first.success }] : [];
    }),
  };
}

/** Every prompt of the family evaluation, in run order (wording, then filler source, then trial). */
export function familyPrompts(tokenizer: TokenEncoder, family: NeedleFamily, settings: FamilySettings, contextLength: number): FamilyPrompt[] {
  const prompts: FamilyPrompt[] = [];
  const sentencesOf = new Map(family.filler.map((f) => [f.src, fillerSentences(f.documents)]));
  for (const wording of family.wordings) {
    for (const filler of family.filler) {
      for (let i = 0; i < settings.trials; i++) {
        const seed = familySeed(settings.seed, wording.id, filler.src, i);
        const shape = familyTrialShape(i, settings.trials, settings.lengths);
        const room = contextLength - familyDecodeTokens(tokenizer, familyKey(wording.key, seed));
        prompts.push(
          buildFamilyPrompt(tokenizer, sentencesOf.get(filler.src)!, wording, { targetTokens: Math.min(shape.targetTokens, room), depth: shape.depth, seed, source: filler.src }),
        );
      }
    }
  }
  return prompts;
}

/** Runs every wording × filler source × trial and tallies them. */
export async function runNeedleFamily(
  model: EngineModel,
  family: NeedleFamily,
  settings: FamilySettings,
  onProgress?: (done: number, total: number, trial: FamilyTrial) => void,
): Promise<NeedleFamilyReport> {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new RangeError('needle-family trials need a model with a tokenizer');
  const prompts = familyPrompts(tokenizer, family, settings, model.forward.dims.contextLength);
  const trials: FamilyTrial[] = [];
  for (const prompt of prompts) {
    const trial = await runFamilyTrial(model, prompt);
    trials.push(trial);
    onProgress?.(trials.length, prompts.length, trial);
  }
  return summarizeFamily(family, settings, trials);
}
