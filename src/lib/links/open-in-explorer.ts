/**
 * "Open in explorer" links from the lab pages: a /compare lane or a /bench cell as an explorer
 * experiment (src/lib/links/: `/?v=1&x=…`), which the explorer replays step for step. An experiment
 * too long for a link (a long prompt) has no link: the reason (linkTooLong) is shown instead.
 */
import { experimentOfRun, type Experiment } from './experiment.ts';
import { experimentQuery, linkTooLong } from './codec.ts';
import type { ModelInfo, SamplerSettings } from '../worker/protocol.ts';

/** A link to the explorer, or why there is none (one sentence). */
export type ExplorerHref = { href: string } | { href: null; reason: string };

/** The explorer link of an experiment; `root` is the app's root path (resolve('/') in a page). */
export function explorerLink(root: string, experiment: Experiment): ExplorerHref {
  const query = experimentQuery(experiment);
  if (query === null) return { href: null, reason: linkTooLong(experiment) ?? 'this experiment is too long for a link' };
  return { href: `${root}?${query}` };
}

/** What a /compare lane ran: its policy and drafter as the worker resolved them, its prompt and sampler. */
export interface LaneRun {
  model: Pick<ModelInfo, 'id' | 'sha256'>;
  prompt: string;
  sampler: SamplerSettings;
  policy: string;
  drafter: string | null;
  /** the steps the lane decoded (before any: the run length) */
  steps: number;
  /** a speculative lane: the index of the round that fed its last shown step (null: none yet, or plain) */
  lastRound?: number | null;
  /** the selected step (null: follow the newest) */
  step: number | null;
}

/** A lane's explorer link: the same prompt, sampler, policy and drafter decoded to the same step, that step selected. */
export function laneExplorerLink(root: string, lane: LaneRun): ExplorerHref {
  const experiment = experimentOfRun({
    model: { id: lane.model.id, sha256: lane.model.sha256 },
    prompt: lane.prompt,
    sampler: lane.sampler,
    policy: lane.policy,
    drafter: lane.drafter,
    steps: lane.steps,
    rounds: lane.lastRound === null || lane.lastRound === undefined ? null : lane.lastRound + 1,
    view: { step: lane.step },
  });
  return explorerLink(root, experiment);
}
