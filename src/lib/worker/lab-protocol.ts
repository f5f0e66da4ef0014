/**
 * Worker messages of the /compare lanes and the /bench evaluations (an extension of protocol.ts:
 * the same worker, ids and reply rules). Commands:
 *
 *   compare-start  prompt + sampler + 1–4 lane policies (each one policy or a composition's
 *                  members), optionally a drafter spec per lane (speculative decoding: `lookup`,
 *                  `model:gamma=4` …; null = plain) and the models URL draft models load from
 *                  → reply compare-started (LaneState.drafter: the canonical drafter spec)
 *   compare-step   N steps of every lane; a compare-step event per step → reply compare-done
 *                  (the existing `pause` command stops it between steps)
 *   compare-back   back N steps (checkpoint + replay) → reply compare-rewound
 *   eval           an evaluation (engine/eval) over held-out text; eval-progress and eval-row
 *                  events → reply eval-done (`pause` cancels: the report holds what finished).
 *                  With `parallel`, its runs go to that many evaluation workers (eval-pool.ts)
 *                  and rows arrive in the order they finish (`run` says where each belongs)
 *   eval-spec      the speculative-decoding evaluation (engine/eval/spec.ts, `kvscope eval --task
 *                  spec`) of drafters over held-out prompts, run in this worker one decode after
 *                  another (never in parallel: that would distort the wall-clock speed-up); draft
 *                  models load from modelsUrl, token indexes from indexesUrl as for compare-start.
 *                  eval-spec-progress events → reply eval-spec-done (`pause` cancels)
 */
import type { EvalConfig, EvalProgress, EvalReport, EvalRow } from '../../../engine/eval/index.ts';
import type { SpecConfig, SpecProgress, SpecReport, SpecRow } from '../../../engine/eval/spec.ts';
import type { LaneMemory, LaneSpecStats, LaneSpeculation, LaneState, LaneStep, LanesStep } from '../../../engine/lanes.ts';
import type { PolicyComposition, PromptView, SamplerSettings, StopReason } from './protocol.ts';

export type { EvalConfig, EvalProgress, EvalReport, EvalRow, SpecConfig, SpecProgress, SpecReport, SpecRow, LaneMemory, LaneSpecStats, LaneSpeculation, LaneState, LaneStep, LanesStep };

export type LabCommand =
  | {
      type: 'compare-start';
      id: number;
      prompt: string;
      sampler: SamplerSettings;
      lanes: PolicyComposition[];
      /** drafter spec per lane (null / absent: plain decoding) */
      drafters?: (string | null)[];
      /** models/ URL (its index.json) that a `model` drafter's draft model is loaded from */
      modelsUrl?: string;
      /** indexes/ URL (its index.json) that token-index drafters (∞-gram, FM-index) read their files from */
      indexesUrl?: string;
    }
  | { type: 'compare-step'; id: number; steps: number }
  | { type: 'compare-back'; id: number; steps: number }
  | { type: 'eval'; id: number; config: EvalConfig; heldoutUrl: string; parallel?: EvalParallel }
  | { type: 'eval-spec'; id: number; config: SpecConfig; heldoutUrl: string; modelsUrl?: string; indexesUrl?: string };

/** Runs of an evaluation at once, each worker loading the model from `modelsUrl` (1: in the engine worker). */
export interface EvalParallel {
  workers: number;
  modelsUrl: string;
  wasmUrl: string;
}

export type LabEvent =
  | { type: 'compare-started'; id: number; prompt: PromptView; lanes: LaneState[]; prefillMs: number }
  | { type: 'compare-step'; id: number; view: LanesStep }
  | { type: 'compare-done'; id: number; reason: StopReason; message?: string; steps: number; stepCount: number; lanes: LaneState[] }
  | { type: 'compare-rewound'; id: number; stepCount: number; lanes: LaneState[] }
  | { type: 'eval-progress'; id: number; progress: EvalProgress }
  /** `run`: the row's index in the evaluation's runs (expandRuns order) */
  | { type: 'eval-row'; id: number; record: number; policy: string; row: EvalRow; run: number }
  | { type: 'eval-done'; id: number; report: EvalReport }
  | { type: 'eval-spec-progress'; id: number; progress: SpecProgress }
  | { type: 'eval-spec-done'; id: number; report: SpecReport };

export const LAB_COMMANDS: ReadonlySet<string> = new Set(['compare-start', 'compare-step', 'compare-back', 'eval', 'eval-spec']);

/** Lab events that stream before a command's reply (not replies themselves). */
export const LAB_STREAM_EVENTS: ReadonlySet<string> = new Set(['compare-step', 'eval-progress', 'eval-row', 'eval-spec-progress']);
