/** `kvscope inspect` with the sections issue 12 adds: needle family (--family), sink ablation, held-out perplexity, induction heads. */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { main } from '../../engine/cli/index.ts';
import { FIXTURE_DIR } from '../engine/helpers/fixture.ts';

const FAMILY = fileURLToPath(new URL('../fixtures/needle-family/needle-family.json', import.meta.url));

async function inspect(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(['inspect', '--model', FIXTURE_DIR, ...args], { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) });
  return { code, stdout, stderr };
}

describe('kvscope inspect: needle family, sink ablation, induction (tiny fixture, --quick)', () => {
  it('reports every new section in the JSON', async () => {
    const run = await inspect(['--quick', '--trials', '2', '--family', FAMILY, '--json']);
    expect(run.code).toBe(0);
    const out = JSON.parse(run.stdout) as {
      family: string | null;
      phenomena: {
        family: { overall: { trials: number }; byWording: { id: string; trials: number }[]; bySource: { src: string; trials: number }[]; cells: unknown[]; promptTokens: { max: number } };
        sinkAblation: { windowTokens: number; lateFrom: number; leftOut: unknown[]; full: { perplexity: number; latePerplexity: number }; budgets: { budget: number; ratio: number; withSinks: { latePerplexity: number }; withoutSinks: { latePerplexity: number } }[] };
        heldoutPerplexity: { perplexity: number; scored: number; tokens: number };
        induction: { scores: number[][]; threshold: number; firstCopyLoss: number; secondCopyLoss: number };
        retrievalLayers: number[];
        needle: { trials: number };
        seconds: Record<string, number>;
      };
    };
    expect(out.family).toBe(FAMILY);
    const p = out.phenomena;
    expect(p.needle.trials).toBe(2);
    expect(p.family.overall.trials).toBe(2 * 2 * 3);
    expect(p.family.byWording.map((w) => [w.id, w.trials])).toEqual([
      ['vault-code', 6],
      ['locker-number', 6],
    ]);
    expect(p.family.bySource.map((s) => [s.src, s.trials])).toEqual([
      ['harbour-notes', 6],
      ['garden-manual', 6],
    ]);
    expect(p.family.cells).toHaveLength(4);
    expect(p.family.promptTokens.max).toBeLessThanOrEqual(256);
    // budget 128 first drops a token at position 130, so the late positions start there, not at 256 / 2
    expect(p.sinkAblation).toMatchObject({ windowTokens: 256, lateFrom: 130, leftOut: [] });
    expect(p.sinkAblation.budgets.map((b) => b.budget)).toEqual([64, 128]);
    for (const b of p.sinkAblation.budgets) expect(b.ratio).toBeCloseTo(b.withoutSinks.latePerplexity / b.withSinks.latePerplexity, 12);
    expect(p.heldoutPerplexity).toMatchObject({ tokens: 256, scored: 256 - 32 });
    expect(p.heldoutPerplexity.perplexity).toBe(p.sinkAblation.full.perplexity);
    expect(p.induction.scores).toHaveLength(2);
    expect(p.induction.scores[0]).toHaveLength(4);
    expect(p.induction.threshold).toBe(0.3);
    expect(p.retrievalLayers).toEqual([]);
    for (const key of ['sinks', 'sinkAblation', 'needle', 'family', 'induction', 'acceptance']) expect(typeof p.seconds[key]).toBe('number');
    expect(run.stderr).toContain('needle family: trial 12/12');
    expect(run.stderr).toContain('induction heads: sequence 1/1');
  });

  it('prints the new sections in the text report', async () => {
    const run = await inspect(['--quick', '--trials', '1', '--family', FAMILY]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/\nSink ablation — teacher-forced perplexity of 1 held-out window of 256 tokens after a 32-token prefill, late = positions ≥ 130;/);
    expect(run.stdout).toMatch(/\n {2}held-out perplexity, full cache {2}\d+\.\d\d \(224 tokens, /);
    expect(run.stdout).toMatch(/\n {6}64 +\d+\.\d\d +\d+\.\d\d +\d\.\d{3}\n/);
    expect(run.stdout).toContain('\n  in 0 distinct layers\n');
    expect(run.stdout).toMatch(/\nNeedle family \(wordings, keys and filler never trained on\) — 12 prompts of \d+–\d+ tokens \(3 per wording × filler source\)/);
    expect(run.stdout).toMatch(/\n {2}wording vault-code \(LL-DDDD\) +\d+\/6 /);
    expect(run.stdout).toMatch(/\n {2}filler garden-manual +\d+\/6 /);
    expect(run.stdout).toMatch(/\nInduction heads — BOS \+ 64 random tokens \+ the same again \(1 sequence\)/);
    expect(run.stdout).toMatch(/\n {2}loss {8}first copy \d+\.\d\d nats\/token · second copy \d+\.\d\d nats\/token\n/);
  });

  it('fails on a malformed or missing family file, naming the file and the field, before loading the model', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kvscope-family-'));
    const bad = join(dir, 'family.json');
    const json = JSON.parse(await readFile(FAMILY, 'utf8')) as { wordings: { needle: string }[] };
    json.wordings[1].needle = 'Locker seven holds the lantern.';
    await writeFile(bad, JSON.stringify(json));
    const malformed = await inspect(['--quick', '--family', bad]);
    expect(malformed.code).toBe(1);
    expect(malformed.stderr).toBe(`kvscope inspect: ${bad}: wordings[1].needle must contain "{key}"\n`);
    expect(malformed.stdout).toBe('');

    await writeFile(bad, '{"version": 1,');
    const broken = await inspect(['--quick', '--family', bad]);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/^kvscope inspect: cannot read the needle family .*family\.json: /);

    const missing = await inspect(['--quick', '--family', join(dir, 'nope.json')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^kvscope inspect: cannot read the needle family .*nope\.json: no such file\n$/);

    const blank = await inspect(['--family', ' ']);
    expect(blank.code).toBe(2);
    expect(blank.stderr).toBe('kvscope inspect: --family needs a file name\n');
    const kv = await inspect(['--kv-similarity', '--family', FAMILY]);
    expect(kv.code).toBe(2);
    expect(kv.stderr).toBe('kvscope inspect: --family does not apply to --kv-similarity\n');
  });
});
