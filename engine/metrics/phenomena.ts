/**
 * The phenomena report of `kvscope inspect` (and later the UI's model page): attention sinks and
 * what dropping them costs (sink ablation, with the held-out perplexity of the full cache),
 * passkey retrieval + retrieval heads, the held-out needle family, induction heads, draft
 * acceptance. Everything is seeded; the sizes default to the full report and shrink with `quick`.
 */
import type { EngineModel } from '../session.ts';
import { measureDraftAcceptance, type AcceptanceReport } from './acceptance.ts';
import { fillerSentences, heldoutWindows } from './heldout.ts';
import { inductionHeads, type InductionReport } from './induction.ts';
import { runNeedleEval, type NeedleReport, type NeedleTrial } from './needle.ts';
import { runNeedleFamily, type FamilySettings, type NeedleFamily, type NeedleFamilyReport } from './needle-family.ts';
import { sinkAblation, sinkAblationPlan, type SinkAblationPlan, type SinkAblationReport } from './sink-window.ts';
import { attentionSinks, type SinkReport } from './sinks.ts';

export interface PhenomenaOptions {
  /** fewer and shorter trials (tests, smoke checks) */
  quick?: boolean;
  /** needle trials (default 50, quick 10) */
  trials?: number;
  seed?: number;
  /** needle prompt length (default min(1000, context − decode tokens)) */
  needleTokens?: number;
  /** the held-out needle family (needle-family.ts); null or absent: that section is skipped */
  family?: NeedleFamily | null;
  /** why the family section is skipped (default: no family file given) */
  familyNote?: string;
  /** human-readable progress lines */
  onProgress?: (message: string) => void;
}

export interface PhenomenaSettings {
  seed: number;
  quick: boolean;
  sinks: { windows: number; tokens: number; minQueryPosition: number };
  needle: { trials: number; targetTokens: number; decodeTokens: number };
  /** perplexity windows (the full cache's is the held-out perplexity), late positions ≥ lateFrom; budgets that do not fit the window are left out */
  sinkAblation: { windows: number; tokens: number } & SinkAblationPlan;
  /** trials per wording × filler source */
  family: FamilySettings;
  induction: { sequences: number; repeatLength: number; threshold: number };
  acceptance: { prompts: number; promptTokens: number; tokens: number; gamma: number };
}

/** The full cache's perplexity of held-out text: docs/evaluation.md's "full cache" row for the same windows. */
export interface HeldoutPerplexity {
  windows: number;
  tokens: number;
  prefix: number;
  seed: number;
  scored: number;
  meanNll: number;
  perplexity: number;
}

export interface PhenomenaReport {
  settings: PhenomenaSettings;
  sinks: SinkReport;
  sinkAblation: SinkAblationReport;
  heldoutPerplexity: HeldoutPerplexity;
  needle: NeedleReport;
  /** distinct layers holding a retrieval head (score > needle.retrieval.threshold), ascending */
  retrievalLayers: number[];
  /** null when no needle-family file was given */
  family: NeedleFamilyReport | null;
  familyNote?: string;
  induction: InductionReport;
  /** null when no draft model was given */
  acceptance: AcceptanceReport | null;
  acceptanceNote?: string;
  seconds: { sinks: number; needle: number; acceptance: number; sinkAblation: number; family: number; induction: number };
}

/** Report sizes for a model of `context` tokens. */
export function phenomenaSettings(context: number, options: PhenomenaOptions = {}): PhenomenaSettings {
  const quick = options.quick ?? false;
  const decodeTokens = 7;
  const windowTokens = Math.min(quick ? 256 : 512, context);
  const promptTokens = Math.min(64, Math.floor(context / 4));
  const pplTokens = Math.min(quick ? 256 : 1024, context);
  const familyMax = Math.min(1000, context - 16);
  const familySources = Math.max(1, options.family?.filler.length ?? 1);
  return {
    seed: options.seed ?? 0,
    quick,
    sinks: { windows: quick ? 2 : 8, tokens: windowTokens, minQueryPosition: 16 },
    needle: {
      trials: options.trials ?? (quick ? 10 : 50),
      targetTokens: options.needleTokens ?? Math.min(1000, context - decodeTokens),
      decodeTokens,
    },
    sinkAblation: { windows: quick ? 1 : 2, tokens: pplTokens, ...sinkAblationPlan(pplTokens) },
    // ≥ 20 prompts per wording in the full report, whatever the number of filler sources
    family: { trials: quick ? 3 : Math.ceil(20 / familySources), lengths: { min: Math.min(256, Math.floor(familyMax / 2)), max: familyMax }, seed: options.seed ?? 0 },
    induction: { sequences: quick ? 1 : 4, repeatLength: Math.min(quick ? 64 : 256, Math.floor((context - 1) / 2)), threshold: 0.3 },
    acceptance: { prompts: quick ? 4 : 20, promptTokens, tokens: quick ? 16 : 32, gamma: 4 },
  };
}

function seconds(since: number): number {
  return (globalThis.performance.now() - since) / 1000;
}

export async function runPhenomena(
  target: EngineModel,
  draft: EngineModel | null,
  documents: readonly string[],
  options: PhenomenaOptions = {},
): Promise<PhenomenaReport> {
  const tokenizer = target.tokenizer;
  if (!tokenizer) throw new RangeError('the phenomena report needs a model with a tokenizer');
  const settings = phenomenaSettings(target.forward.dims.contextLength, options);
  const say = options.onProgress ?? (() => {});
  const { seed } = settings;

  let t0 = globalThis.performance.now();
  const windows = heldoutWindows(tokenizer, documents, { windows: settings.sinks.windows, tokens: settings.sinks.tokens, seed: seed + 1 });
  const sinks = await attentionSinks(target.forward, windows, {
    minQueryPosition: settings.sinks.minQueryPosition,
    onProgress: (done, total) => say(`attention sinks: window ${done}/${total}`),
  });
  const sinkSeconds = seconds(t0);

  // The same windows as `kvscope eval --task ppl` at this seed, so the full cache's figure is docs/evaluation.md's.
  t0 = globalThis.performance.now();
  const ablation = settings.sinkAblation;
  const pplWindows = heldoutWindows(tokenizer, documents, { windows: ablation.windows, tokens: ablation.tokens, seed });
  // the default plan for this window length: settings.sinkAblation, left-out budgets included
  const sinkWindow = await sinkAblation(target, pplWindows, {
    prefix: ablation.prefix,
    onProgress: (spec, done, total) => {
      if (done % 128 === 0 || done === total) say(`sink ablation: ${spec} token ${done}/${total}`);
    },
  });
  const heldoutPerplexity: HeldoutPerplexity = {
    windows: ablation.windows,
    tokens: ablation.tokens,
    prefix: ablation.prefix,
    seed,
    scored: sinkWindow.scored,
    meanNll: sinkWindow.full.meanNll,
    perplexity: sinkWindow.full.perplexity,
  };
  const ablationSeconds = seconds(t0);

  t0 = globalThis.performance.now();
  const sentences = fillerSentences(documents);
  let correct = 0;
  const needle = await runNeedleEval(target, sentences, {
    trials: settings.needle.trials,
    targetTokens: settings.needle.targetTokens,
    decodeTokens: settings.needle.decodeTokens,
    seed: seed + 2,
    onProgress: (done: number, total: number, trial: NeedleTrial) => {
      if (trial.success) correct++;
      say(`passkey: trial ${done}/${total} (depth ${trial.depth.toFixed(2)}, key ${trial.key} → ${JSON.stringify(trial.output.trim())}), ${correct} correct`);
    },
  });
  const needleSeconds = seconds(t0);
  const retrievalLayers = [...new Set(needle.retrieval.heads.map((h) => h.layer))].sort((a, b) => a - b);

  t0 = globalThis.performance.now();
  let family: NeedleFamilyReport | null = null;
  if (options.family) {
    let found = 0;
    family = await runNeedleFamily(target, options.family, settings.family, (done, total, trial) => {
      if (trial.success) found++;
      say(`needle family: trial ${done}/${total} (${trial.wording}, ${trial.source}, key ${trial.key} → ${JSON.stringify(trial.output.trim())}), ${found} correct`);
    });
  }
  const familySeconds = seconds(t0);

  t0 = globalThis.performance.now();
  const induction = await inductionHeads(target, {
    sequences: settings.induction.sequences,
    repeatLength: settings.induction.repeatLength,
    threshold: settings.induction.threshold,
    seed: seed + 4,
    onProgress: (done, total) => say(`induction heads: sequence ${done}/${total}`),
  });
  const inductionSeconds = seconds(t0);

  t0 = globalThis.performance.now();
  let acceptance: AcceptanceReport | null = null;
  let acceptanceNote: string | undefined;
  if (draft) {
    const { prompts, promptTokens, tokens, gamma } = settings.acceptance;
    const promptIds = heldoutWindows(tokenizer, documents, { windows: prompts, tokens: promptTokens, seed: seed + 3 });
    acceptance = await measureDraftAcceptance(target, draft, promptIds, {
      tokens,
      gamma,
      onProgress: (done, total) => say(`draft acceptance: prompt ${done}/${total}`),
    });
  } else {
    acceptanceNote = 'no draft model (the manifest names none, or it was not found)';
  }
  const report: PhenomenaReport = {
    settings,
    sinks,
    sinkAblation: sinkWindow,
    heldoutPerplexity,
    needle,
    retrievalLayers,
    family,
    induction,
    acceptance,
    seconds: { sinks: sinkSeconds, needle: needleSeconds, acceptance: seconds(t0), sinkAblation: ablationSeconds, family: familySeconds, induction: inductionSeconds },
  };
  if (!family) report.familyNote = options.familyNote ?? 'no needle-family file given';
  if (acceptanceNote) report.acceptanceNote = acceptanceNote;
  return report;
}
