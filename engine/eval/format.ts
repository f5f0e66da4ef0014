/** Plain-text tables of an evaluation report (`kvscope eval` without --json). */
import type { EvalReport, EvalRow } from './index.ts';
import type { NeedleSettings } from './needle.ts';
import type { PplSettings } from './perplexity.ts';

function pad(text: string, width: number, left = false): string {
  return left ? text.padEnd(width) : text.padStart(width);
}

function pct(x: number): string {
  return `${Math.round(100 * x)}%`;
}

/** Bits per element of the full cache's tokens the policy spends: 32 (fp32) × bytes held / full bytes. */
function effectiveBits(memoryRatio: number): string {
  return (32 * memoryRatio).toFixed(1);
}

function rowFor(rows: readonly EvalRow[], budget: number | null): EvalRow | undefined {
  return rows.find((r) => r.budget === budget);
}

function table(header: string[], lines: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const fmt = (cells: string[]) => cells.map((c, i) => pad(c ?? '', widths[i], i === 0)).join('  ').trimEnd();
  return [fmt(header), fmt(widths.map((w) => '─'.repeat(w))), ...lines.map(fmt)];
}

export function formatEvalReport(report: EvalReport): string {
  const out: string[] = [];
  const { budgets } = report;
  const asGiven = report.records.flatMap((rec) => rec.rows.filter((r) => r.budget === null));
  const budgeted = report.records.filter((rec) => rec.rows.some((r) => r.budget !== null));

  if (report.task === 'ppl') {
    const s = report.settings as PplSettings;
    out.push(
      `Perplexity of held-out text — ${report.model.id}, ${s.windows} window(s) × ${s.tokens} tokens, prefill ${s.prefix}, ` +
        `then teacher-forced token by token with the policy evicting (seed ${s.seed})`,
    );
    out.push('');
    out.push('perplexity (mean entries held per KV head) at budget B:');
    const lines = budgeted.map((rec) => [
      rec.policy,
      ...budgets.map((b) => {
        const row = rowFor(rec.rows, b);
        return row?.ppl ? `${row.ppl.perplexity.toFixed(2)} (${row.ppl.entries.mean.toFixed(0)})` : '—';
      }),
    ]);
    out.push(...table(['policy', ...budgets.map((b) => `B=${b}`)], lines));
    if (asGiven.length) {
      out.push('');
      out.push('evaluated as given:');
      out.push(
        ...table(
          ['spec', 'perplexity', 'entries/head', 'memory', 'bits/element', 'ms/step fwd', 'policy'],
          asGiven.map((r) => [
            r.spec,
            r.ppl!.perplexity.toFixed(2),
            r.ppl!.entries.mean.toFixed(0),
            pct(r.ppl!.memoryRatio.mean),
            effectiveBits(r.ppl!.memoryRatio.mean),
            r.ppl!.msPerStep.forward.toFixed(2),
            r.ppl!.msPerStep.policy.toFixed(2),
          ]),
        ),
      );
    }
  } else {
    const s = report.settings as NeedleSettings;
    out.push(
      `Passkey retrieval — ${report.model.id}, lengths ${s.lengths.join(', ')} × depths ${s.depths.join(', ')}, ` +
        `${s.trials} trial(s) per cell, greedy, policy active from the prefill on (seed ${s.seed})`,
    );
    out.push('');
    out.push('accuracy (correct/trials · mean entries held per KV head) at budget B:');
    const lines = budgeted.map((rec) => [
      rec.policy,
      ...budgets.map((b) => {
        const row = rowFor(rec.rows, b);
        return row?.needle ? `${pct(row.needle.accuracy)} (${row.needle.correct}/${row.needle.trials} · ${row.needle.entries.mean.toFixed(0)})` : '—';
      }),
    ]);
    out.push(...table(['policy', ...budgets.map((b) => `B=${b}`)], lines));
    if (asGiven.length) {
      out.push('');
      out.push('evaluated as given:');
      out.push(
        ...table(
          ['spec', 'accuracy', 'entries/head', 'memory', 'bits/element'],
          asGiven.map((r) => [
            r.spec,
            `${pct(r.needle!.accuracy)} (${r.needle!.correct}/${r.needle!.trials})`,
            r.needle!.entries.mean.toFixed(0),
            pct(r.needle!.memoryRatio.mean),
            effectiveBits(r.needle!.memoryRatio.mean),
          ]),
        ),
      );
    }
    out.push('');
    out.push(`by prompt length (rows) × needle depth (columns ${s.depths.join(' ')}): correct of ${s.trials}`);
    for (const rec of report.records) {
      for (const row of rec.rows) {
        if (!row.needle) continue;
        const grid = s.lengths.map((length) => {
          const cells = row.needle!.cells.filter((c) => c.length === length);
          return `${length}: ${cells.map((c) => String(c.correct)).join(' ')}`;
        });
        out.push(`  ${row.budget === null ? row.spec : `${rec.policy} B=${row.budget}`}`.padEnd(24) + `  ${grid.join('  |  ')}`);
      }
    }
  }
  out.push('');
  out.push('budget mapping:');
  for (const m of report.budgetMapping) out.push(`  ${m.id.padEnd(11)} ${m.mapping}${m.scope ? ` — bounds ${m.scope}` : ''}`);
  out.push('');
  out.push(`${report.cancelled ? 'cancelled after' : 'took'} ${report.seconds.toFixed(1)} s`);
  return out.join('\n');
}
