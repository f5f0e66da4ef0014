/**
 * /compare's side of notebooks (issue 11): the comparison cell "Add to notebook" makes from a
 * figure — the /compare link of the page now (it reruns the lanes to the same step), one line, and
 * one row per lane with the numbers the lane's header shows.
 */
import type { ComparisonCell, DataTable, FigureSnapshot, NewCell } from '../notebooks/types.ts';
import type { CompareState } from './state.svelte.ts';

const round = (v: number | null, digits: number) => (v === null ? null : Number(v.toFixed(digits)));

/** The lanes as the page shows them: spec, drafter, tokens, memory, KL, agreement, divergence, speculation. */
export function laneTable(app: CompareState): DataTable {
  return {
    columns: ['lane', 'policy', 'drafter', 'tokens', 'memory (bytes)', 'memory / full', 'entries per head', 'KL now', 'mean KL', 'top-1 = full', 'differs from lane 1 from step', 'target calls / token', 'α'],
    rows: app.summaries.map((lane, i) => [
      i + 1,
      lane.spec,
      lane.drafter ?? '',
      lane.tokens.length,
      lane.memory?.bytes ?? null,
      round(lane.memory?.ratio ?? null, 4),
      round(lane.memory?.entriesPerHead ?? null, 1),
      round(lane.kl.at(-1) ?? null, 5),
      round(lane.meanKl, 5),
      round(lane.agreement, 4),
      i === 0 ? null : lane.firstDivergence,
      round(lane.specStats?.targetCallsPerToken ?? null, 3),
      round(lane.specStats?.acceptanceRate ?? null, 4),
    ]),
  };
}

/** The comparison cell of the page now, with `figure`; throws when no lanes are running. */
export async function comparisonCell(app: CompareState, figure: FigureSnapshot): Promise<NewCell> {
  if (!app.model || app.activeSpecs.length === 0) throw new Error('start the lanes first');
  const prompt = (app.ranWith?.prompt ?? app.prompt).replace(/\s+/g, ' ').trim();
  const start = prompt.length > 40 ? `${prompt.slice(0, 40)}…` : prompt;
  const cell: Omit<ComparisonCell, 'id'> = {
    kind: 'comparison',
    link: `/compare?${app.query()}`,
    summary: `${app.model.name} · “${start}” · ${app.activeSpecs.length} lanes · ${app.steps.length} steps`,
    table: laneTable(app),
    figure,
  };
  return cell;
}
