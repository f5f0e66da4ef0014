/**
 * The phenomena report of `kvscope inspect` (and later the UI's model page): attention sinks,
 * passkey retrieval + retrieval heads, draft acceptance. Everything is seeded; the sizes default
 * to the full report and shrink with `quick`.
 */
import type { EngineModel } from '../session.ts';
import { measureDraftAcceptance, type AcceptanceReport } from './acceptance.ts';
import { fillerSentences, heldoutWindows } from './heldout.ts';
import { runNeedleEval, type NeedleReport, type NeedleTrial } from './needle.ts';
import { attentionSinks, type SinkReport } from './sinks.ts';

export interface PhenomenaOptions {
  /** fewer and shorter trials (tests, smoke checks) */
  quick?: boolean;
  /** needle trials (default 50, quick 10) */
  trials?: number;
  seed?: number;
  /** needle prompt length (default min(1000, context − decode tokens)) */
  needleTokens?: number;
  /** human-readable progress lines */
  onProgress?: (message: string) => void;
}

export interface PhenomenaSettings {
  seed: number;
  quick: boolean;
  sinks: { windows: number; tokens: number; minQueryPosition: number };
  needle: { trials: number; targetTokens: number; decodeTokens: number };
  acceptance: { prompts: number; promptTokens: number; tokens: number; gamma: number };
}

export interface PhenomenaReport {
  settings: PhenomenaSettings;
  sinks: SinkReport;
  needle: NeedleReport;
  /** null when no draft model was given */
  acceptance: AcceptanceReport | null;
  acceptanceNote?: string;
  seconds: { sinks: number; needle: number; acceptance: number };
}

/** Report sizes for a model of `context` tokens. */
export function phenomenaSettings(context: number, options: PhenomenaOptions = {}): PhenomenaSettings {
  const quick = options.quick ?? false;
  const decodeTokens = 7;
  const windowTokens = Math.min(quick ? 256 : 512, context);
  const promptTokens = Math.min(64, Math.floor(context / 4));
  return {
    seed: options.seed ?? 0,
    quick,
    sinks: { windows: quick ? 2 : 8, tokens: windowTokens, minQueryPosition: 16 },
    needle: {
      trials: options.trials ?? (quick ? 10 : 50),
      targetTokens: options.needleTokens ?? Math.min(1000, context - decodeTokens),
      decodeTokens,
    },
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
  const report: PhenomenaReport = { settings, sinks, needle, acceptance, seconds: { sinks: sinkSeconds, needle: needleSeconds, acceptance: seconds(t0) } };
  if (acceptanceNote) report.acceptanceNote = acceptanceNote;
  return report;
}
