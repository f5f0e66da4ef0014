/**
 * /bench's side of notebooks (issue 11): the evaluation cell "Add to notebook" makes from a figure
 * — the /bench link of the setup the report ran with (it sets the evaluation up again), one line, and the results
 * table as the page shows it (a perplexity / accuracy per policy and budget, or the spec rows).
 */
import { formatPercent } from '../format.ts';
import type { DataTable, EvaluationCell, FigureSnapshot, NewCell } from '../notebooks/types.ts';
import type { EvalRow } from '../worker/lab-protocol.ts';
import type { BenchState } from './state.svelte.ts';
import { identicalText, specTableRows } from './spec.ts';

/** One result as the table cell shows it: "12.34 (64)" (perplexity, mean entries per head) or "75% (3/4 · 64)". */
function resultText(row: EvalRow | undefined): string | null {
  if (row?.ppl) return `${row.ppl.perplexity.toFixed(2)} (${row.ppl.entries.mean.toFixed(0)})`;
  if (row?.needle) return `${formatPercent(row.needle.accuracy)} (${row.needle.correct}/${row.needle.trials} · ${row.needle.entries.mean.toFixed(0)})`;
  return null;
}

/** The results table of the task shown (null: no results yet). */
export function resultTable(app: BenchState): DataTable | null {
  if (app.task === 'spec') {
    const report = app.specReport;
    if (!report) return null;
    return {
      columns: ['drafter', 'text', 'α', 'accepted len', 'calls/token', 'plain ms/tok', 'spec ms/tok', 'speed-up', 'same as plain'],
      rows: specTableRows(report).map(({ row }) => [
        row.spec,
        row.text,
        Number(row.acceptance_rate.toFixed(3)),
        Number(row.mean_accepted_length.toFixed(2)),
        Number(row.target_calls_per_token.toFixed(3)),
        Number(row.plain_ms_per_token.toFixed(2)),
        Number(row.speculative_ms_per_token.toFixed(2)),
        Number(row.speedup.toFixed(2)),
        identicalText(row.identical_to_plain),
      ]),
    };
  }
  const report = app.report;
  if (!report) return null;
  return {
    columns: ['policy', ...report.budgets.map((b) => `B = ${b}`), 'as given'],
    rows: report.records.map((r) => [r.policy, ...report.budgets.map((b) => resultText(r.rows.find((row) => row.budget === b))), resultText(r.rows.find((row) => row.budget === null))]),
  };
}

/** The evaluation cell of the page now, with `figure`; throws before any results. */
export async function evaluationCell(app: BenchState, figure: FigureSnapshot): Promise<NewCell> {
  const table = resultTable(app);
  const report = app.task === 'spec' ? app.specReport : app.report;
  // the model the report ran on, not the one loaded now (the page keeps a report across a model switch)
  const ranOn = (app.task === 'spec' ? app.reportModels.spec : app.reportModels.eval)?.info ?? app.model;
  if (!table || !report || !ranOn) throw new Error('run an evaluation first');
  const task = { ppl: 'perplexity', needle: 'passkey retrieval', spec: 'speculative decoding' }[report.task];
  const cell: Omit<EvaluationCell, 'id'> = {
    kind: 'evaluation',
    link: `/bench?${app.reportQuery()}`,
    summary: `${ranOn.name} · ${task} · ${table.rows.length} row${table.rows.length === 1 ? '' : 's'}${report.cancelled ? ' (cancelled)' : ''} · ${report.seconds.toFixed(1)} s`,
    table,
    figure,
  };
  return cell;
}
