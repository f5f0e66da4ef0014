/**
 * Speculative decoding over held-out prompts (`kvscope eval --task spec`, bench/spec.ts): per
 * drafter run (spec-runs.ts) and text set — "prose" (every held-out source but the Python docs) and
 * "python-doc" — acceptance rate α, mean accepted length (bonus or correction included), target
 * calls per generated token, acceptance per draft position, and wall-clock ms per token of the
 * speculative decode against plain decoding of the same prompts, timed in the same run.
 *
 * Per prompt the plain decode runs first, then every drafter on a fresh target session of the same
 * prompt, so a change in the machine's load hits both sides alike. Timings cover decoding only (the
 * target's prefill is the same either way and left out); a drafter's own catch-up on the prompt (a
 * draft model's prefill) happens inside its first round and is counted. Every decode generates
 * exactly `tokens` tokens (EOS does not stop it) so that runs compare token for token. A drafter is
 * made once per text set and kept across its prompts, as a server would keep it (online drafters
 * learn across them). Framework-free and free of Node imports: the CLI and the bench run it in
 * Node (spec-node.ts reads the held-out file there), /bench in the engine worker.
 */
import { heldoutWindows } from '../metrics/heldout.ts';
import { Session, type EngineModel } from '../session.ts';
import { createDrafter, SpeculativeDecoder, SpeculativeStats, type Drafter, type DrafterEnv, type SpeculativeSummary } from '../spec/index.ts';
import { EvalSettingsError } from './index.ts';
import { expandSpecRuns, type SpecRun } from './spec-runs.ts';
import { evaluationDocuments, SPEC_TEXT_SETS, textSetOf, type HeldoutDocument, type SpecTextSet } from './spec-texts.ts';

export { expandSpecRuns, type SpecRun } from './spec-runs.ts';
export { evaluationDocuments, SPEC_TEXT_SETS, textSetOf, type HeldoutDocument, type SpecTextSet } from './spec-texts.ts';

export interface SpecSettings {
  /** prompts per text set */
  prompts: number;
  /** tokens per prompt, BOS included */
  promptTokens: number;
  /** tokens generated per prompt */
  tokens: number;
  temperature: number;
  seed: number;
  /** the target's KV-cache policy (canonical spec) */
  policy: string;
  texts: SpecTextSet[];
  /** γ values each drafter spec runs at (null: as given) */
  gammas: number[] | null;
}

export interface SpecConfig {
  drafts: string[];
  settings?: Partial<SpecSettings>;
}

/** One drafter run on one text set. */
export interface SpecRow {
  text: SpecTextSet;
  spec: string;
  gamma: number;
  prompts: number;
  /** tokens generated (all prompts) */
  tokens: number;
  acceptance_rate: number;
  mean_accepted_length: number;
  target_calls_per_token: number;
  per_position_acceptance: number[];
  plain_ms_per_token: number;
  speculative_ms_per_token: number;
  /** plain ÷ speculative ms per token: > 1 is faster */
  speedup: number;
  draft_ms_per_token: number;
  verify_ms_per_token: number;
  /** temperature 0: every prompt gave plain decoding's tokens; null when sampling */
  identical_to_plain: boolean | null;
  speculative: SpeculativeSummary;
  /** the drafter's own numbers after the run (Drafter.describe) */
  drafter: Record<string, number | string> | null;
}

export interface SpecRecord {
  /** the spec as given */
  draft: string;
  id: string;
  rows: SpecRow[];
}

export interface SpecReport {
  format: 'kvscope-eval';
  version: 1;
  task: 'spec';
  model: { id: string; name: string; layers: number; kvHeads: number; context: number };
  settings: SpecSettings;
  /** plain decoding of the same prompts, per text set */
  plain: { text: SpecTextSet; prompts: number; tokens: number; ms_per_token: number }[];
  records: SpecRecord[];
  cancelled: boolean;
  seconds: number;
}

export interface SpecProgress {
  done: number;
  total: number;
  message: string;
}

export interface SpecHooks {
  onProgress?: (progress: SpecProgress) => void;
  signal?: AbortSignal;
  /** an untimed short decode of each kind first, so that the WebAssembly is compiled before timing (default true) */
  warmup?: boolean;
  /** awaited before every decode, outside the timings (a worker lets its messages, e.g. a cancel, through) */
  yield?: () => Promise<void>;
}

const QUIET = { attention: false, fullSteps: 0, topTokens: 0, attentionTop: 0 };

function positiveInt(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw new EvalSettingsError(`${name} must be an integer in ${min}..${max}, got ${value}`);
  return value;
}

/** Completes and checks the settings for a model of `context` tokens. */
export function specSettings(context: number, given: Partial<SpecSettings> = {}): SpecSettings {
  const tokens = positiveInt('tokens', given.tokens ?? 64, 1, context - 2);
  const promptTokens = positiveInt('prompt tokens', given.promptTokens ?? Math.min(128, context - tokens), 2, context - tokens);
  const temperature = given.temperature ?? 0;
  if (!(temperature >= 0 && Number.isFinite(temperature))) throw new EvalSettingsError(`temperature must be a number ≥ 0, got ${temperature}`);
  const texts = given.texts ?? [...SPEC_TEXT_SETS];
  if (texts.length === 0) throw new EvalSettingsError('no text sets given');
  for (const t of texts) if (!SPEC_TEXT_SETS.includes(t)) throw new EvalSettingsError(`text sets are ${SPEC_TEXT_SETS.join(', ')}, got ${JSON.stringify(t)}`);
  if (new Set(texts).size !== texts.length) throw new EvalSettingsError('a text set is listed twice');
  return {
    prompts: positiveInt('prompts', given.prompts ?? 4, 1, 1000),
    promptTokens,
    tokens,
    temperature,
    seed: positiveInt('seed', given.seed ?? 0, 0, 0xffffffff),
    policy: given.policy ?? 'full',
    texts: [...texts],
    gammas: given.gammas ? [...given.gammas] : null,
  };
}

/** Held-out prompts of one text set: seeded windows of its evaluation documents (heldoutWindows). */
export function specPrompts(model: EngineModel, documents: readonly HeldoutDocument[], text: SpecTextSet, settings: SpecSettings): number[][] {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new EvalSettingsError('the speculative evaluation needs a model with a tokenizer');
  const texts = evaluationDocuments(documents)
    .filter((d) => textSetOf(d.src) === text)
    .map((d) => d.text);
  if (texts.length === 0) throw new EvalSettingsError(`the held-out documents have no ${text} text`);
  try {
    return heldoutWindows(tokenizer, texts, { windows: settings.prompts, tokens: settings.promptTokens, seed: settings.seed });
  } catch (error) {
    if (error instanceof RangeError) throw new EvalSettingsError(`${text}: ${error.message}`);
    throw error;
  }
}

function now(): number {
  return globalThis.performance.now();
}

interface Decode {
  tokens: number[];
  ms: number;
}

/** Sampler of prompt `i`: every decode of one prompt draws from the same seed. */
function samplerFor(settings: SpecSettings, i: number) {
  return { temperature: settings.temperature, seed: (settings.seed + i) >>> 0 };
}

async function plainDecode(model: EngineModel, prompt: readonly number[], settings: SpecSettings, i: number, tokens: number): Promise<Decode> {
  const session = new Session(model, { policy: settings.policy, sampler: samplerFor(settings, i), trace: QUIET });
  await session.prefill(prompt);
  const t0 = now();
  const result = await session.run(tokens, { stopAtEos: false });
  return { tokens: result.steps.map((s) => s.token.id), ms: now() - t0 };
}

async function speculativeDecode(model: EngineModel, drafter: Drafter, prompt: readonly number[], settings: SpecSettings, i: number, tokens: number, stats: SpeculativeStats | null): Promise<Decode> {
  const session = new Session(model, { policy: settings.policy, sampler: samplerFor(settings, i), trace: QUIET });
  await session.prefill(prompt);
  const decoder = new SpeculativeDecoder(session, drafter);
  const t0 = now();
  const result = await decoder.run(tokens, { stopAtEos: false, onRound: (round) => stats?.add(round.verify, round.steps.length) });
  return { tokens: result.steps.map((s) => s.token.id), ms: now() - t0 };
}

/** Checks everything that fails without model time: the drafter specs, γ values and settings. */
export function planSpecEval(model: EngineModel, config: SpecConfig): { runs: SpecRun[]; settings: SpecSettings } {
  const settings = specSettings(model.forward.dims.contextLength, config.settings);
  new Session(model, { policy: settings.policy, trace: QUIET }); // a bad or uncalibrated target policy fails here
  return { runs: expandSpecRuns(config.drafts, settings.gammas), settings };
}

const sameTokens = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((t, i) => t === b[i]);

/** Runs the evaluation (see the header); `env` makes the drafters (engine/spec/env-node.ts in Node). */
export async function runSpecEval(env: DrafterEnv, documents: readonly HeldoutDocument[], config: SpecConfig, hooks: SpecHooks = {}): Promise<SpecReport> {
  const started = now();
  const model = env.target;
  const { runs, settings } = planSpecEval(model, config);
  const dims = model.forward.dims;
  const report: SpecReport = {
    format: 'kvscope-eval',
    version: 1,
    task: 'spec',
    model: { id: model.manifest.id, name: model.manifest.name, layers: dims.nLayers, kvHeads: dims.nKvHeads, context: dims.contextLength },
    settings,
    plain: [],
    records: [],
    cancelled: false,
    seconds: 0,
  };
  // rows per run, text sets in order; put into records (one per spec given) at the end
  const rowsOfRun: SpecRow[][] = runs.map(() => []);
  const promptsBySet = settings.texts.map((text) => specPrompts(model, documents, text, settings));
  const total = settings.texts.length * settings.prompts * (1 + runs.length);
  let done = 0;
  const progress = (message: string) => hooks.onProgress?.({ done, total, message });

  if (hooks.warmup ?? true) {
    progress('warming up…');
    const prompt = promptsBySet[0][0];
    const warm = Math.min(16, settings.tokens);
    await plainDecode(model, prompt, settings, 0, warm);
    // its own drafter instances, so online drafters learn nothing from the warm-up
    for (const run of runs) {
      await hooks.yield?.();
      if (hooks.signal?.aborted) break;
      await speculativeDecode(model, (await createDrafter(run.spec, env))!, prompt, settings, 0, warm, null);
    }
  }

  for (let s = 0; s < settings.texts.length; s++) {
    const text = settings.texts[s];
    const prompts = promptsBySet[s];
    const drafters: Drafter[] = [];
    for (const run of runs) drafters.push((await createDrafter(run.spec, env))!);
    const stats = runs.map((run, r) => new SpeculativeStats(drafters[r].spec, run.gamma));
    const plain = { ms: 0, tokens: 0 };
    const spec = runs.map(() => ({ ms: 0, tokens: 0, identical: true }));
    let finished = 0;
    for (let i = 0; i < prompts.length; i++) {
      await hooks.yield?.();
      if (hooks.signal?.aborted) break;
      progress(`${text} prompt ${i + 1}/${prompts.length}: plain decoding`);
      const reference = await plainDecode(model, prompts[i], settings, i, settings.tokens);
      plain.ms += reference.ms;
      plain.tokens += reference.tokens.length;
      done++;
      for (let r = 0; r < runs.length; r++) {
        await hooks.yield?.();
        if (hooks.signal?.aborted) break;
        progress(`${text} prompt ${i + 1}/${prompts.length}: ${runs[r].spec}`);
        const decoded = await speculativeDecode(model, drafters[r], prompts[i], settings, i, settings.tokens, stats[r]);
        spec[r].ms += decoded.ms;
        spec[r].tokens += decoded.tokens.length;
        spec[r].identical &&= sameTokens(decoded.tokens, reference.tokens);
        done++;
      }
      if (!hooks.signal?.aborted) finished++;
    }
    if (finished === 0) {
      report.cancelled = true;
      break;
    }
    const plainPerToken = plain.ms / Math.max(1, plain.tokens);
    report.plain.push({ text, prompts: finished, tokens: plain.tokens, ms_per_token: plainPerToken });
    runs.forEach((run, r) => {
      const summary = stats[r].summary();
      const perToken = spec[r].ms / Math.max(1, spec[r].tokens);
      rowsOfRun[r].push({
        text,
        // the drafter's own canonical spec: what it resolved (the draft model's id) included
        spec: drafters[r].spec,
        gamma: run.gamma,
        prompts: finished,
        tokens: spec[r].tokens,
        acceptance_rate: summary.acceptance_rate,
        mean_accepted_length: summary.mean_accepted_length,
        target_calls_per_token: summary.target_calls_per_token,
        per_position_acceptance: summary.per_position_acceptance,
        plain_ms_per_token: plainPerToken,
        speculative_ms_per_token: perToken,
        speedup: perToken > 0 ? plainPerToken / perToken : 0,
        draft_ms_per_token: summary.draft_ms / Math.max(1, summary.tokens),
        verify_ms_per_token: summary.verify_ms / Math.max(1, summary.tokens),
        identical_to_plain: settings.temperature === 0 ? spec[r].identical : null,
        speculative: summary,
        drafter: drafters[r].describe?.() ?? null,
      });
    });
    if (hooks.signal?.aborted) {
      report.cancelled = true;
      break;
    }
  }
  runs.forEach((run, r) => {
    let record = report.records.find((rec) => rec.draft === run.input);
    if (!record) report.records.push((record = { draft: run.input, id: run.id, rows: [] }));
    record.rows.push(...rowsOfRun[r]);
  });
  report.seconds = (now() - started) / 1000;
  return report;
}
