/**
 * Policy overhead benchmark (part of `npm run bench`; alone: `npm run bench:policies -- …`): what
 * each KV-cache policy costs per decode step on top of the model's forward, at contexts 512 and
 * 1024 of the real default model.
 *
 *   tsx bench/policies.ts [--model DIR] [--contexts 512,1024] [--budget 256] [--steps 32] [--repeats 3] [--out FILE]
 *                          [--policies h2o,tova | --policies "window:size=64 h2o + tova:budget=32"]
 *
 * Per policy (budget parameters from engine/eval/budgets.ts at --budget, so every evicting policy
 * evicts at every step) and context C: prefill C − steps held-out tokens, then teacher-force the
 * next `steps` held-out tokens (the same tokens for every policy) with tracing off. The engine's
 * StepTrace timings split each step into
 *   forward   the graph's forward (what onnxruntime takes; a policy that reads attention makes the
 *             graph return it, which this includes)
 *   policy    the policy's decision plus applying it to the cache (afterStep + cache.apply)
 *   other     the rest of Session.step: feeds, appending the new K/V, the attention views a policy
 *             reads, logits summary
 * Each step's fastest time over the repeats, averaged over the steps. The goal figure is
 * policy ÷ forward (≤ 10%); (policy + other) ÷ forward is the engine's whole overhead; the last
 * column compares the policy's forward with the full cache's at the same context (eviction makes
 * the forward cheaper, reading attention makes it dearer). Prints a table; writes JSON to
 * bench-results/policies.json.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { expandRuns } from '../engine/eval/budgets.ts';
import { heldoutWindows } from '../engine/metrics/heldout.ts';
import { loadModelFromDirectory } from '../engine/model/load-node.ts';
import type { LoadedModel } from '../engine/model/load.ts';
import { POLICIES } from '../engine/policies/index.ts';
import { splitPolicyList } from '../engine/policies/spec.ts';
import { Session } from '../engine/session.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    contexts: { type: 'string', default: '512,1024' },
    budget: { type: 'string', default: '256' },
    steps: { type: 'string', default: '32' },
    repeats: { type: 'string', default: '3' },
    policies: { type: 'string' },
    out: { type: 'string', default: join(ROOT, 'bench-results', 'policies.json') },
  },
  strict: true,
});

async function defaultModelDir(): Promise<string> {
  const index = JSON.parse(await readFile(join(ROOT, 'static/models/index.json'), 'utf8')) as { default: string; models: { id: string; path: string }[] };
  const entry = index.models.find((m) => m.id === index.default);
  if (!entry) throw new Error(`static/models/index.json: default ${index.default} is not listed`);
  return join(ROOT, 'static/models', entry.path);
}

interface StepTimes {
  forward: number[];
  policy: number[];
  total: number[];
}

/** Teacher-forces `steps` tokens after a prefill of tokens[0 .. C − steps); per-step timings. */
async function timeRun(model: LoadedModel, tokens: readonly number[], context: number, steps: number, spec: string): Promise<StepTimes & { entries: number }> {
  const session = new Session(model, { policy: spec, trace: { attention: false, fullSteps: 0, topTokens: 0 } });
  await session.prefill(tokens.slice(0, context - steps));
  const times: StepTimes = { forward: [], policy: [], total: [] };
  for (let i = context - steps; i < context; i++) {
    const step = await session.step({ token: tokens[i] });
    times.forward.push(step.timings.forwardMs);
    times.policy.push(step.timings.policyMs);
    times.total.push(step.timings.totalMs);
  }
  const heads = session.dims.nLayers * session.dims.nKvHeads;
  return { ...times, entries: session.memory().heldEntries / heads };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

const modelDir = args.model ? resolve(args.model) : await defaultModelDir();
const steps = Number(args.steps);
const repeats = Number(args.repeats);
const budget = Number(args.budget);
const model = await loadModelFromDirectory(modelDir);
const contextLength = model.manifest.architecture.context_length;
const contexts = args.contexts
  .split(',')
  .map(Number)
  .filter((c) => c > steps && c <= contextLength);
const documents = (JSON.parse(await readFile(join(ROOT, 'static/data/heldout.json'), 'utf8')) as { documents: { text: string }[] }).documents.map((d) => d.text);
const [text] = heldoutWindows(model.tokenizer, documents, { windows: 1, tokens: contextLength, seed: 2 });
// --policies: ids separated by commas (h2o,tova), or whole specs / compositions separated by spaces
const ids = args.policies ? (/[:+]/.test(args.policies) ? splitPolicyList(args.policies) : args.policies.split(',').map((s) => s.trim())) : POLICIES.map((p) => p.id);
const runs = expandRuns(ids, [budget]).filter((r) => model.calibration || !POLICIES.find((p) => p.id === r.id)?.needs.calibration);

console.log(`kvscope policy overhead — ${model.manifest.id}; node ${process.version}, onnxruntime-web wasm, 1 thread, ${cpus().length} cores`);
console.log(`budget B = ${budget} (engine/eval/budgets.ts), ${steps} teacher-forced decode steps ending at position C − 1, best of ${repeats} per step`);

// warm-up: let V8 tier up onnxruntime's WebAssembly before timing
for (const run of runs.slice(0, 3)) await timeRun(model, text, Math.min(512, contextLength), 16, run.spec);

interface Row {
  context: number;
  spec: string;
  id: string;
  entries: number;
  forwardMs: number;
  policyMs: number;
  otherMs: number;
  totalMs: number;
}
const rows: Row[] = [];
for (const context of contexts) {
  for (const run of runs) {
    const best: StepTimes = { forward: new Array(steps).fill(Infinity), policy: new Array(steps).fill(Infinity), total: new Array(steps).fill(Infinity) };
    let entries = 0;
    for (let r = 0; r < repeats; r++) {
      const t = await timeRun(model, text, context, steps, run.spec);
      entries = t.entries;
      for (let i = 0; i < steps; i++) {
        best.forward[i] = Math.min(best.forward[i], t.forward[i]);
        best.policy[i] = Math.min(best.policy[i], t.policy[i]);
        best.total[i] = Math.min(best.total[i], t.total[i]);
      }
    }
    const forwardMs = mean(best.forward);
    const policyMs = mean(best.policy);
    const totalMs = mean(best.total);
    rows.push({ context, spec: run.spec, id: run.id, entries, forwardMs, policyMs, otherMs: Math.max(0, totalMs - forwardMs - policyMs), totalMs });
    process.stderr.write(`  C=${context} ${run.spec}: forward ${forwardMs.toFixed(2)} ms, policy ${policyMs.toFixed(3)} ms\n`);
  }
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
console.log('\nper decode step (ms) and overhead as a share of the forward');
console.log('context  policy       entries/head  forward   policy    other   policy/fwd  (policy+other)/fwd  fwd vs full');
for (const context of contexts) {
  const fullForward = rows.find((r) => r.context === context && r.id === 'full')?.forwardMs ?? NaN;
  for (const r of rows.filter((x) => x.context === context)) {
    console.log(
      `${String(context).padStart(7)}  ${r.id.padEnd(11)} ${r.entries.toFixed(0).padStart(13)} ${r.forwardMs.toFixed(2).padStart(8)} ${r.policyMs.toFixed(3).padStart(8)} ${r.otherMs.toFixed(3).padStart(8)}` +
        `   ${pct(r.policyMs / r.forwardMs).padStart(9)} ${pct((r.policyMs + r.otherMs) / r.forwardMs).padStart(19)}  ${(r.forwardMs / fullForward).toFixed(2).padStart(10)}×`,
    );
  }
}
const worst = rows.reduce((a, r) => Math.max(a, r.policyMs / r.forwardMs), 0);
console.log(`\nlargest policy/forward: ${pct(worst)} (goal ≤ 10%); load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);

const result = {
  model: { id: model.manifest.id, directory: modelDir, context: contextLength },
  node: process.version,
  date: new Date().toISOString(),
  settings: { budget, steps, repeats, contexts },
  rows: rows.map((r) => ({
    context: r.context,
    policy: r.id,
    spec: r.spec,
    entries_per_head: r.entries,
    forward_ms: r.forwardMs,
    policy_ms: r.policyMs,
    other_ms: r.otherMs,
    total_ms: r.totalMs,
    policy_over_forward: r.policyMs / r.forwardMs,
    overhead_over_forward: (r.policyMs + r.otherMs) / r.forwardMs,
  })),
  load_average: loadavg(),
};
await mkdir(dirname(args.out), { recursive: true });
await writeFile(args.out, `${JSON.stringify(result, null, 2)}\n`);
console.log(`\nwrote ${args.out}`);
await model.release();
