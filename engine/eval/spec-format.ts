/** Plain-text tables of a speculative evaluation (`kvscope eval --task spec` without --json). */
import type { SpecReport } from './spec.ts';

/** Columns before `left` are left-aligned (names), the rest right-aligned (numbers). */
export function table(header: string[], lines: string[][], left = 1): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i < left ? (c ?? '').padEnd(widths[i]) : (c ?? '').padStart(widths[i]))).join('  ').trimEnd();
  return [fmt(header), fmt(widths.map((w) => '─'.repeat(w))), ...lines.map(fmt)];
}

const same = (v: boolean | null) => (v === null ? '—' : v ? 'yes' : 'NO');

export function formatSpecReport(report: SpecReport): string {
  const s = report.settings;
  const out: string[] = [];
  out.push(
    `Speculative decoding — ${report.model.id}, ${s.prompts} held-out prompt(s) of ${s.promptTokens} tokens per text set, ` +
      `${s.tokens} tokens generated each, ${s.temperature === 0 ? 'greedy' : `temperature ${s.temperature}`}, target policy ${s.policy} (seed ${s.seed})`,
  );
  out.push('');
  out.push('plain decoding: ' + report.plain.map((p) => `${p.text} ${p.ms_per_token.toFixed(2)} ms/token`).join(' · '));
  out.push('');
  const rows = report.records.flatMap((rec) => rec.rows);
  out.push(
    ...table(
      ['drafter', 'text', 'α', 'accepted len', 'calls/token', 'ms/token', 'plain', 'speed-up', 'draft', 'verify', 'same as plain'],
      rows.map((r) => [
        r.spec,
        r.text,
        r.acceptance_rate.toFixed(3),
        r.mean_accepted_length.toFixed(2),
        r.target_calls_per_token.toFixed(3),
        r.speculative_ms_per_token.toFixed(2),
        r.plain_ms_per_token.toFixed(2),
        `${r.speedup.toFixed(2)}×`,
        r.draft_ms_per_token.toFixed(2),
        r.verify_ms_per_token.toFixed(2),
        same(r.identical_to_plain),
      ]),
      2,
    ),
  );
  out.push('');
  out.push('acceptance by draft position (share of rounds that reached it):');
  const width = Math.max(...rows.map((r) => r.spec.length + r.text.length + 1));
  for (const r of rows) out.push(`  ${`${r.spec} ${r.text}`.padEnd(width)}  ${r.per_position_acceptance.map((a) => a.toFixed(2)).join(' ') || '—'}`);
  out.push('');
  out.push('α = accepted ÷ verified drafts (drafts after a rejection, a cache change or EOS go unchecked);');
  out.push('accepted len = tokens per target call (bonus or correction included);');
  out.push('ms/token = wall clock of the speculative decode (draft + verify + bookkeeping), plain = the same prompts decoded');
  out.push('token by token in the same run; draft / verify = ms per token spent in the drafter / the target\'s block forwards.');
  out.push('');
  out.push(`${report.cancelled ? 'cancelled after' : 'took'} ${report.seconds.toFixed(1)} s`);
  return out.join('\n');
}
