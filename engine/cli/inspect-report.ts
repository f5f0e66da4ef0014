/**
 * The text report of `kvscope inspect`: the model's manifest summary and its measured phenomena
 * (sinks and the sink ablation, passkey retrieval, retrieval heads, the needle family, induction
 * heads, draft acceptance), as docs/cli.md shows it.
 */
import type { PhenomenaReport } from '../metrics/phenomena.ts';
import type { Manifest } from '../model/manifest.ts';
import { bar, formatBytes, formatCount, formatMillions, percent } from './format.ts';
import { asObject, num, str, type Json } from './json.ts';
import { displayPath } from './models.ts';

export interface ModelSummary {
  id: string;
  name: string;
  role: string;
  directory: string;
  draft: string | null;
  architecture: Manifest['architecture'];
  rope: Manifest['rope'];
  tokenizer: Manifest['tokenizer'];
  files: Manifest['files'];
  provenance: Json | null;
}

/** The provenance without bulky fields (training history), for the report. */
function provenanceSummary(provenance: Record<string, unknown> | undefined): Json | null {
  if (!provenance) return null;
  const out: Json = { ...provenance };
  const training = asObject(provenance.training);
  if (training) {
    const { history: _history, ...rest } = training;
    out.training = rest;
  }
  return out;
}

export function summarizeModel(dir: string, manifest: Manifest): ModelSummary {
  return {
    id: manifest.id,
    name: manifest.name,
    role: manifest.role,
    directory: dir,
    draft: manifest.draft ?? null,
    architecture: manifest.architecture,
    rope: manifest.rope,
    tokenizer: manifest.tokenizer,
    files: manifest.files,
    provenance: provenanceSummary(manifest.provenance),
  };
}

export function formatModel(summary: ModelSummary, draftDir: string | null): string {
  const a = summary.architecture;
  const r = summary.rope;
  const lines: string[] = [];
  lines.push(`${summary.id} — ${summary.name}  [${summary.role}${summary.draft ? `, draft: ${summary.draft}` : ''}]`);
  lines.push(`  directory     ${displayPath(summary.directory)}`);
  lines.push(
    `  architecture  ${a.family} · ${a.n_layers} layers · ${a.n_heads} query / ${a.n_kv_heads} KV heads · head dim ${a.head_dim} · hidden ${a.hidden_size} · MLP ${a.intermediate_size}`,
  );
  lines.push(
    `                vocab ${formatCount(a.vocab_size)} · context ${formatCount(a.context_length)} · RoPE θ=${r.theta} (${r.style}, dim ${r.dim}) · ` +
      `RMSNorm ε=${a.rms_norm_eps}${a.tie_word_embeddings ? ' · tied embeddings' : ''}`,
  );
  const kvPerToken = a.n_layers * a.n_kv_heads * a.head_dim * 2 * 4;
  lines.push(
    `  parameters    ${a.parameters !== undefined ? `${formatCount(a.parameters)} (${formatMillions(a.parameters)})` : 'not recorded'}` +
      `${a.macs_per_token !== undefined ? ` · ${formatMillions(a.macs_per_token)} MACs/token` : ''} · fp32 KV cache ${formatBytes(kvPerToken)}/token, ${formatBytes(kvPerToken * a.context_length)} at full context`,
  );
  summary.files.forEach((f, i) => {
    lines.push(`  ${i === 0 ? 'files        ' : '             '} ${f.path.padEnd(18)} ${formatBytes(f.bytes).padStart(10)}  sha256 ${f.sha256.slice(0, 12)}…`);
  });
  const p = summary.provenance;
  if (!p) {
    lines.push('  provenance    not recorded');
  } else {
    const commit = str(p.git_commit);
    lines.push(
      `  provenance    created ${str(p.created) ?? '?'}${str(p.exporter) ? ` by ${str(p.exporter)}` : ''}` +
        `${str(p.source_checkpoint) ? ` from checkpoint "${str(p.source_checkpoint)}"` : ''} · git commit ${commit ?? 'not recorded'}` +
        `${str(p.torch) ? ` · torch ${str(p.torch)}` : ''}${str(p.onnxruntime) ? ` · onnxruntime ${str(p.onnxruntime)}` : ''}`,
    );
    const t = asObject(p.training);
    if (t) {
      const parts: string[] = [];
      if (str(t.preset)) parts.push(`preset ${str(t.preset)}`);
      const steps = num(t.steps);
      const batch = num(t.batch);
      const window = num(t.window);
      if (steps !== null) parts.push(`${formatCount(steps)} steps${batch !== null ? ` × batch ${batch}` : ''}${window !== null ? ` × ${window} tokens` : ''}`);
      const tokens = num(t.training_tokens);
      if (tokens !== null) parts.push(`${(tokens / 1e6).toFixed(1)} M training tokens`);
      const secs = num(t.train_seconds);
      if (secs !== null) parts.push(`${secs.toFixed(0)} s${str(t.gpu) ? ` on ${str(t.gpu)}` : ''}`);
      if (num(t.seed) !== null) parts.push(`seed ${num(t.seed)}`);
      lines.push(`  training      ${parts.join(' · ') || 'recorded (no summary fields)'}`);
      const loss = num(t.heldout_loss);
      const ppl = num(t.heldout_ppl);
      if (loss !== null || ppl !== null) {
        lines.push(`                held-out loss ${loss?.toFixed(4) ?? '?'} nats/token${ppl !== null ? ` (perplexity ${ppl.toFixed(2)})` : ''}`);
      }
    }
    const checks = asObject(p.checks);
    if (checks) {
      const parts = Object.entries(checks).map(([k, v]) => `${k.replace(/_/g, ' ')} ${typeof v === 'number' ? v.toExponential(1) : JSON.stringify(v)}`);
      lines.push(`  export checks ${parts.join(' · ')}`);
    }
  }
  lines.push(`  draft model   ${summary.draft ? (draftDir ? displayPath(draftDir) : `${summary.draft} (not found next to the model)`) : 'none'}`);
  return lines.join('\n');
}

export function formatPhenomena(report: PhenomenaReport, nHeads: number, draftId: string | null): string {
  const lines: string[] = [];
  const { sinks, needle, acceptance, settings } = report;
  const headTable = (scores: number[][]) => {
    lines.push(`  score ×100  ${Array.from({ length: nHeads }, (_, h) => `h${h}`.padStart(4)).join('')}`);
    scores.forEach((row, l) => lines.push(`  layer ${String(l).padStart(2)}    ${row.map((s) => String(Math.round(100 * s)).padStart(4)).join('')}`));
  };

  lines.push('');
  lines.push(
    `Attention sinks — attention on token 0 (BOS) per layer, mean over heads and queries at positions ≥ ${sinks.minQueryPosition}` +
      ` (${sinks.windows} held-out windows of ${sinks.windowTokens} tokens; uniform attention would give ${sinks.uniform.toFixed(3)})`,
  );
  sinks.layers.forEach((mass, l) => {
    const heads = sinks.heads[l].map((m) => m.toFixed(2)).join(' ');
    lines.push(`  layer ${String(l).padStart(2)}  ${mass.toFixed(3)}  ${bar(mass)}  heads ${heads}`);
  });
  lines.push(`  mean      ${sinks.mean.toFixed(3)}`);

  lines.push('');
  formatSinkAblation(report, lines);

  lines.push('');
  const lengths = needle.promptTokens;
  lines.push(
    `Passkey retrieval — ${needle.trials} prompts of ${lengths.min}–${lengths.max} tokens (target ${needle.targetTokens}), ` +
      `needle depths 0..1, greedy decoding of ${needle.decodeTokens} tokens with the full cache`,
  );
  lines.push(`  accuracy  ${needle.correct}/${needle.trials} = ${percent(needle.accuracy)}`);
  for (const b of needle.byDepth) {
    const label = `depth ${b.from.toFixed(1)}–${b.to.toFixed(1)}`;
    lines.push(`  ${label.padEnd(15)} ${`${b.correct}/${b.trials}`.padStart(6)}  ${percent(b.accuracy).padStart(4)}  ${bar(b.accuracy, 20)}`);
  }
  const examples = needle.examples.map((e) => `${e.key}→${JSON.stringify(e.output.trim())}${e.success ? '' : ' ✗'}`).join('  ');
  lines.push(`  examples  ${examples}`);

  lines.push('');
  const rh = needle.retrieval;
  lines.push(
    `Retrieval heads (Wu et al. 2024) — score over ${rh.trials} successful trials; heads with score > ${rh.threshold}: ${rh.heads.length}` +
      (rh.heads.length ? ` (${rh.heads.map((h) => `L${h.layer}H${h.head} ${h.score.toFixed(2)}`).join(', ')})` : ''),
  );
  const layers = report.retrievalLayers;
  lines.push(`  in ${layers.length} distinct layer${layers.length === 1 ? '' : 's'}${layers.length ? ` (${layers.map((l) => `L${l}`).join(', ')})` : ''}`);
  if (rh.trials > 0) {
    headTable(rh.scores);
  } else {
    lines.push('  (no successful trial, so no scores)');
  }

  lines.push('');
  formatFamily(report, lines);

  lines.push('');
  const ind = report.induction;
  lines.push(
    `Induction heads — BOS + ${ind.repeatLength} random tokens + the same again (${ind.sequences} sequence${ind.sequences === 1 ? '' : 's'}): attention of each second-copy query ` +
      `on the token after that token's first copy (uniform attention would give ${ind.uniform.toFixed(3)})`,
  );
  lines.push(
    `  heads with score ≥ ${ind.threshold}: ${ind.heads.length}${ind.heads.length ? ` (${ind.heads.map((h) => `L${h.layer}H${h.head} ${h.score.toFixed(2)}`).join(', ')})` : ''}`,
  );
  lines.push(`  best        ${ind.best.map((h) => `L${h.layer}H${h.head} ${h.score.toFixed(2)}`).join('  ')}`);
  lines.push(`  loss        first copy ${ind.firstCopyLoss.toFixed(2)} nats/token · second copy ${ind.secondCopyLoss.toFixed(2)} nats/token`);
  headTable(ind.scores);

  lines.push('');
  if (acceptance) {
    const s = acceptance.speculative;
    lines.push(
      `Draft acceptance — ${draftId ?? 'draft'} proposing for the target, greedy verification ` +
        `(${acceptance.prompts} held-out prompts of ${acceptance.promptTokens} tokens, ${acceptance.tokensPerPrompt} greedy target tokens each)`,
    );
    lines.push(`  per-token acceptance α  ${acceptance.alpha.toFixed(3)}  (${percent(acceptance.alpha)} of positions: draft argmax = target token)`);
    lines.push(
      `  γ = ${s.gamma}: mean accepted length ${s.meanAcceptedLength.toFixed(2)} tokens per target call (bonus/correction token included) ` +
        `over ${s.blocks} simulated blocks; ${s.accepted}/${s.proposed} proposals accepted; ${s.targetCallsPerToken.toFixed(3)} target calls per token`,
    );
    lines.push(`  i.i.d. formula (1−α^(γ+1))/(1−α) = ${acceptance.expectedAcceptedLength.toFixed(2)}`);
  } else {
    lines.push(`Draft acceptance — skipped: ${report.acceptanceNote ?? 'no draft model'}`);
  }
  lines.push('');
  lines.push(
    `(seed ${settings.seed}${settings.quick ? ', quick' : ''}; ${report.seconds.sinks.toFixed(1)} s sinks, ${report.seconds.sinkAblation.toFixed(1)} s sink ablation, ` +
      `${report.seconds.needle.toFixed(1)} s passkey, ${report.seconds.family.toFixed(1)} s needle family, ${report.seconds.induction.toFixed(1)} s induction, ${report.seconds.acceptance.toFixed(1)} s acceptance)`,
  );
  return lines.map((line) => line.trimEnd()).join('\n');
}

function formatSinkAblation(report: PhenomenaReport, lines: string[]): void {
  const a = report.sinkAblation;
  const h = report.heldoutPerplexity;
  lines.push(
    `Sink ablation — teacher-forced perplexity of ${a.windows} held-out window${a.windows === 1 ? '' : 's'} of ${a.windowTokens} tokens after a ${a.prefix}-token prefill, ` +
      `late = positions ≥ ${a.lateFrom}; streaming keeps 4 sinks + recent, window only recent, at the same budget (entries per KV head)`,
  );
  lines.push(`  held-out perplexity, full cache  ${h.perplexity.toFixed(2)} (${h.scored} tokens, ${h.meanNll.toFixed(4)} nats/token); late ${a.full.latePerplexity.toFixed(2)}`);
  lines.push(`  budget   late ppl with sinks   without sinks   without / with`);
  for (const row of a.budgets) {
    lines.push(
      `  ${String(row.budget).padStart(6)}   ${row.withSinks.latePerplexity.toFixed(2).padStart(18)}   ${row.withoutSinks.latePerplexity.toFixed(2).padStart(13)}   ${row.ratio.toFixed(3).padStart(14)}`,
    );
  }
  if (a.leftOut.length > 0) lines.push(`  left out: ${a.leftOut.map((b) => `B = ${b.budget} (${b.reason})`).join('; ')}`);
}

function formatFamily(report: PhenomenaReport, lines: string[]): void {
  const f = report.family;
  if (!f) {
    lines.push(`Needle family — skipped: ${report.familyNote ?? 'no needle-family file given'}`);
    return;
  }
  const row = (label: string, t: { correct: number; trials: number; accuracy: number }) =>
    `  ${label.padEnd(28)} ${`${t.correct}/${t.trials}`.padStart(7)}  ${percent(t.accuracy).padStart(4)}  ${bar(t.accuracy, 20)}`;
  lines.push(
    `Needle family (wordings, keys and filler never trained on) — ${f.overall.trials} prompts of ${f.promptTokens.min}–${f.promptTokens.max} tokens ` +
      `(${f.trialsPerCell} per wording × filler source), needle depths 0..1, greedy decoding with the full cache`,
  );
  lines.push(row('overall', f.overall));
  for (const w of f.byWording) lines.push(row(`wording ${w.id} (${w.key})`, w));
  for (const s of f.bySource) lines.push(row(`filler ${s.src}`, s));
  lines.push(`  examples  ${f.examples.map((e) => `${e.wording}: ${e.key}→${JSON.stringify(e.output.trim())}${e.success ? '' : ' ✗'}`).join('  ')}`);
}
