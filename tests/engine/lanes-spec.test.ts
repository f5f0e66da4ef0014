/**
 * engine/lanes.ts with speculative lanes, on the shipped model (kvscope-llama-8l) and its draft
 * (kvscope-draft-2l): at temperature 0 a lane with a drafter shows the same tokens, step for step,
 * as the same policy without one, with the same reference metrics (KL, top-1, attention mass held)
 * and memory; rounds hold tokens back until the other lanes catch up; stepping back shows the same
 * steps again; round statistics add up.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DraftSpecError } from '../../engine/errors.ts';
import { LaneGroup, type LanesStep } from '../../engine/lanes.ts';
import { loadModelFromDirectory } from '../../engine/model/load-node.ts';
import type { LoadedModel } from '../../engine/model/load.ts';

const MODELS = fileURLToPath(new URL('../../static/models/', import.meta.url));
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 5 };
const PROMPT_TEXT = 'The cat sat on the mat. The dog sat on the log. The cat sat on the mat. The dog sat on the';

const models = new Map<string, Promise<LoadedModel>>();
function model(id: string): Promise<LoadedModel> {
  let loading = models.get(id);
  if (!loading) {
    loading = loadModelFromDirectory(join(MODELS, id));
    models.set(id, loading);
  }
  return loading;
}

async function steps(group: LaneGroup, n: number): Promise<LanesStep[]> {
  const out: LanesStep[] = [];
  for (let i = 0; i < n; i++) out.push(await group.step());
  return out;
}

/** Lane `spec` (speculative) against lane `plain`: same tokens and, to float noise, the same metrics. */
function expectSameLanes(run: LanesStep[], plain: number, spec: number): void {
  for (const s of run) {
    const a = s.lanes[plain];
    const b = s.lanes[spec];
    expect(b.token.id, `step ${s.step}`).toBe(a.token.id);
    expect(b.top1, `top-1 at step ${s.step}`).toBe(a.top1);
    if (a.kl === null) expect(b.kl).toBeNull();
    else expect(Math.abs(b.kl! - a.kl), `KL at step ${s.step}`).toBeLessThan(1e-3 + 1e-2 * a.kl);
    if (a.mass === null) expect(b.mass).toBeNull();
    else expect(b.mass!).toBeCloseTo(a.mass, 4);
    expect(b.memory).toEqual(a.memory);
    expect(b.sampleProb).toBeCloseTo(a.sampleProb, 4);
    expect(a.speculative).toBeUndefined();
    expect(b.speculative).toBeDefined();
  }
}

describe('LaneGroup with speculative lanes', () => {
  it('a lookup lane at temperature 0 equals the plain lane of its policy, step for step, metrics included', async () => {
    const target = await model('kvscope-llama-8l');
    const prompt = target.tokenizer.encode(PROMPT_TEXT);
    const group = new LaneGroup(target, { policies: ['window:size=32', 'window:size=32', 'full', 'full'], drafters: [null, 'lookup', null, 'lookup:k=4'], sampler: GREEDY });
    expect(group.drafters).toEqual([null, 'lookup:max_ngram=3,k=10', null, 'lookup:max_ngram=3,k=4']);
    const started = await group.start(prompt);
    expect(started[1]).toMatchObject({ drafter: 'lookup:max_ngram=3,k=10', ahead: 0, speculative: { rounds: 0, tokens: 0 } });
    expect(started[0]).toMatchObject({ drafter: null, ahead: 0, speculative: null });

    const run = await steps(group, 40);
    expectSameLanes(run, 0, 1);
    expectSameLanes(run, 2, 3);
    expect(group.tokens(1)).toEqual(group.tokens(0));
    expect(group.tokens(3)).toEqual(group.tokens(2));
    expect(group.tokens(1)).toHaveLength(prompt.length + 40);
    // the window lane is measured: it lost something somewhere
    expect(run.some((s) => (s.lanes[1].kl ?? 0) > 1e-6)).toBe(true);

    // the repetitive text lets lookup drafts through: fewer target calls than tokens
    const last = run.at(-1)!.lanes[1].speculative!;
    expect(last.stats.tokens).toBe(40);
    expect(last.stats.targetCallsPerToken).toBeLessThan(1);
    expect(last.stats.accepted).toBeGreaterThan(0);
    expect(last.stats.meanAcceptedLength).toBeCloseTo(1 / last.stats.targetCallsPerToken, 10);
    expect(run.some((s) => s.lanes[1].speculative!.origin === 'draft')).toBe(true);
    expect(run[0].lanes[1].speculative!.origin).toBe('target');
    // rounds: a round's rows are numbered from 0; each round's last row carries the verdict
    for (const [k, s] of run.entries()) {
      const sp = s.lanes[1].speculative!;
      if (sp.row === 0 && k > 0) expect(sp.round).toBe(run[k - 1].lanes[1].speculative!.round + 1);
      if (sp.row > 0) expect(sp.origin).toBe('draft');
    }
    // statistics agree with the decoder's own over the rounds finished by the shown token
    const state = group.state();
    const decoder = group.decoder(1)!.stats.summary();
    expect(decoder.tokens).toBe(40 + state[1].ahead);
    expect(state[1].speculative).toEqual(last.stats);
    expect(state[1].memory).toEqual(run.at(-1)!.lanes[1].memory);
  }, 120_000);

  it('a draft-model lane and self-speculation equal their plain lanes; a cache-changing policy verifies one token per call', async () => {
    const target = await model('kvscope-llama-8l');
    const prompt = target.tokenizer.encode(PROMPT_TEXT);
    const group = new LaneGroup(target, {
      policies: ['h2o:heavy=8,recent=8', 'h2o:heavy=8,recent=8', 'full', 'full'],
      drafters: [null, 'model:gamma=4', 'none', 'self:gamma=3,policy=window(size=24)'],
      drafterEnv: { loadModel: (id) => model(id) },
      sampler: GREEDY,
    });
    expect(group.drafters[1]).toBe('model:gamma=4,model=,policy=full');
    expect(group.drafters[2]).toBeNull();
    const started = await group.start(prompt);
    expect(started.map((l) => l.drafter)).toEqual([null, 'model:gamma=4,model=kvscope-draft-2l,policy=full', null, 'self:gamma=3,policy=window(size=24)']);
    const run = await steps(group, 24);
    expectSameLanes(run, 0, 1);
    expectSameLanes(run, 2, 3);
    // h2o over budget changes the cache every step: each round is cut after its first token
    expect(run.every((s) => s.lanes[1].speculative!.row === 0)).toBe(true);
    expect(run.at(-1)!.lanes[1].speculative!.stats.targetCallsPerToken).toBe(1);
    expect(run.at(-1)!.lanes[3].speculative!.stats.rounds).toBeLessThanOrEqual(24);
  }, 180_000);

  it('steps back: a speculative lane shows the same steps again, then decodes on', async () => {
    const target = await model('kvscope-llama-8l');
    const prompt = target.tokenizer.encode(PROMPT_TEXT);
    const group = new LaneGroup(target, { policies: ['streaming:sinks=4,recent=20', 'streaming:sinks=4,recent=20'], drafters: [null, 'lookup'], sampler: GREEDY });
    await group.start(prompt);
    const first = await steps(group, 30);
    const tokens = group.tokens(1).slice();
    const replayed: LanesStep[] = [];
    await group.rewind(11, (s) => replayed.push(s));
    expect(group.stepCount).toBe(11);
    expect(group.tokens(1)).toEqual(tokens.slice(0, prompt.length + 11));
    expect(group.state()[1].ahead).toBeGreaterThanOrEqual(19);
    const again = await steps(group, 25);
    expect(again.map((s) => s.lanes[1])).toEqual([...first.slice(11).map((s) => s.lanes[1]), ...again.slice(19).map((s) => s.lanes[1])]);
    expectSameLanes([...replayed, ...again], 0, 1);
    await group.rewind(0);
    expect(group.tokens(1)).toEqual(prompt);
    expect(group.state()[1].speculative).toMatchObject({ rounds: 0, tokens: 0 });
  }, 120_000);

  it('refuses a bad drafter spec before anything runs, and a draft model it cannot load at start', async () => {
    const target = await model('kvscope-llama-8l');
    expect(() => new LaneGroup(target, { policies: ['full', 'full'], drafters: [null, 'lookahead'] })).toThrow(DraftSpecError);
    expect(() => new LaneGroup(target, { policies: ['full', 'full'], drafters: [null, 'lookup:k=0'] })).toThrow(/k/);
    const group = new LaneGroup(target, { policies: ['full', 'full'], drafters: [null, 'model:model=nope'] });
    await expect(group.start(target.tokenizer.encode('Hello'))).rejects.toThrow(/no draft model can be loaded/);
  }, 60_000);
});
