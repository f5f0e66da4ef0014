/**
 * An explorer session as a link (issue 11): the experiment the page records, through the codec,
 * replays in a fresh explorer to the same tokens bit for bit, the same policy timeline and the
 * same view — for plain sampled decoding with live switches, Backs and the reference lane, and for
 * speculative decoding under sampling (where the rounds are kept as the commands that made them).
 */
import { describe, expect, it } from 'vitest';
import { experimentQuery, readExperimentQuery } from '../../src/lib/links/codec.ts';
import { experimentOfRun, type Experiment } from '../../src/lib/links/experiment.ts';
import { modelProblem, replayExperiment, takeSetup } from '../../src/lib/explorer/open-experiment.ts';
import type { ExplorerState } from '../../src/lib/explorer/state.svelte.ts';
import { explorer, until } from './in-process.ts';

async function ready(app: ExplorerState): Promise<void> {
  void app.load();
  await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
}

function throughLink(experiment: Experiment): Experiment {
  const query = experimentQuery(experiment);
  expect(query).not.toBeNull();
  const reading = readExperimentQuery(`?${query}`);
  if (reading.kind !== 'experiment') throw new Error(`the link did not read back: ${JSON.stringify(reading)}`);
  return reading.experiment;
}

const ids = (app: ExplorerState) => app.steps.map((s) => s.token.id);

async function replayed(experiment: Experiment): Promise<ExplorerState> {
  const app = explorer();
  takeSetup(app, experiment);
  await ready(app);
  await replayExperiment(app, experiment);
  return app;
}

describe('explorer links', () => {
  it('replay sampled decoding with live switches, Backs and the reference lane to the same tokens and view', async () => {
    const app = explorer();
    app.sampler = { temperature: 0.9, topK: 20, topP: 0.95, seed: 11 };
    app.policyMembers = [{ id: 'window', params: { size: 12 } }];
    await ready(app);
    for (let i = 0; i < 3; i++) await app.step();
    await app.run(5, false);
    await app.applySpec('h2o:heavy=4,recent=4');
    await app.step();
    await app.step();
    await app.back(3); // crosses the switch: the session drops it, and so does the log
    expect(app.activePolicy).toBe('window:size=12');
    await app.step();
    await app.setReference(true);
    await app.run(4, false);
    await app.applySpec('streaming:sinks=2,recent=6');
    await app.step();
    app.layer = 1;
    app.head = 1;
    app.scale = 'log';
    app.forgottenMode = 'head';
    app.select(6);
    const experiment = app.experiment!;
    expect(experiment.steps).toBe(13);
    // 3 Steps and a Run of 5 fold into one count; the Back over the two steps after the switch
    // takes the switch and one step before it away
    expect(experiment.actions).toEqual([
      { kind: 'decode', steps: 8 },
      { kind: 'reference', on: true },
      { kind: 'decode', steps: 4 },
      { kind: 'policy', spec: 'streaming:sinks=2,recent=6,positions=p2' },
      { kind: 'decode', steps: 1 },
    ]);

    const copy = await replayed(throughLink(experiment));
    expect(ids(copy)).toEqual(ids(app));
    expect(copy.steps.map((s) => s.token.prob)).toEqual(app.steps.map((s) => s.token.prob));
    expect(copy.activePolicy).toBe(app.activePolicy);
    expect(copy.switches.map((s) => [s.atStep, s.from, s.to])).toEqual(app.switches.map((s) => [s.atStep, s.from, s.to]));
    expect(copy.reference).toBe(true);
    expect([copy.currentStep, copy.layer, copy.head, copy.scale, copy.forgottenMode]).toEqual([6, 1, 1, 'log', 'head']);
    // the replayed session's own link is the link it was opened from
    expect(copy.experiment).toEqual(experiment);
  });

  it('replay speculative decoding under sampling round for round, a Back among the rounds included', async () => {
    const app = explorer();
    app.prompt = 'the cat sat on the mat and the cat sat on the mat and the cat sat on the';
    app.sampler = { temperature: 0.7, topK: 0, topP: 1, seed: 5 };
    await ready(app);
    expect(await app.spec.apply('lookup:max_ngram=3,k=4')).toBe(true);
    await app.step();
    await app.step();
    await app.run(7, false);
    await app.back(2);
    await app.step();
    const experiment = app.experiment!;
    expect(experiment.actions.map((a) => a.kind)).toEqual(['drafter', 'round', 'run', 'back', 'round']);
    expect(experiment.actions[1]).toEqual({ kind: 'round', count: 2 });

    const copy = await replayed(throughLink(experiment));
    expect(ids(copy)).toEqual(ids(app));
    expect(copy.spec.active).toBe('lookup:max_ngram=3,k=4');
    expect(copy.experiment).toEqual(experiment);
  });

  it('make a learning drafter afresh on Reset, so a Reset decodes what a new tab decodes', async () => {
    const app = explorer();
    app.prompt = 'the cat sat on the mat and the dog sat on the log and the cat sat on the';
    app.sampler = { temperature: 0.8, topK: 0, topP: 1, seed: 3 };
    await ready(app);
    expect(await app.spec.apply('online:gamma=3,model=tiny-fixture,policy=window(size=2),update_every=1,lr=5')).toBe(true);
    await app.run(16, false);
    const first = ids(app);
    await app.start();
    await app.run(16, false);
    expect(ids(app)).toEqual(first);
    const copy = await replayed(throughLink(app.experiment!));
    expect(ids(copy)).toEqual(first);
  });

  it('replay a speculative Run cut short by Pause exactly: its rounds cut to the Run, stopped where it was paused', async () => {
    const app = explorer();
    app.sampler = { temperature: 1, topK: 0, topP: 1, seed: 9 };
    await ready(app);
    await app.spec.apply('self:gamma=4,policy=window(size=2)');
    const running = app.run(200, false);
    await until(() => app.steps.length >= 5, 'a few rounds');
    app.pause();
    await running;
    const taken = app.steps.length;
    await app.run(12, false);
    const experiment = app.experiment!;
    expect(experiment.actions.slice(1)).toEqual([
      { kind: 'run', steps: 200, stopAtEos: false, cut: taken },
      { kind: 'run', steps: 12, stopAtEos: false },
    ]);
    const copy = await replayed(throughLink(experiment));
    expect(ids(copy)).toEqual(ids(app));
  });

  it('replay a /compare lane with a drafter as its uncut rounds kept to the step it showed', async () => {
    const app = explorer();
    app.sampler = { temperature: 1, topK: 0, topP: 1, seed: 4 };
    await ready(app);
    await app.spec.apply('self:gamma=4,policy=window(size=2)');
    for (let i = 0; i < 4; i++) await app.step();
    const shown = app.steps.length - 1;
    const lane = experimentOfRun({ model: app.experiment!.model, prompt: app.prompt, sampler: app.sampler, policy: 'full', drafter: 'self:gamma=4,policy=window(size=2)', steps: shown, rounds: 4 });
    expect(lane.actions).toEqual([
      { kind: 'drafter', spec: 'self:gamma=4,policy=window(size=2)' },
      { kind: 'round', count: 4 },
      { kind: 'keep', steps: shown },
    ]);
    const copy = await replayed(throughLink(lane));
    expect(ids(copy)).toEqual(ids(app).slice(0, shown));
  });

  it('refuse a link made with another model, and one whose policy the model cannot run, saying why', async () => {
    const app = explorer();
    await ready(app);
    const experiment = app.experiment!;
    expect(modelProblem(app, { ...experiment, model: { id: 'kvscope-llama-8l', sha256: 'b'.repeat(64) } })).toMatch(/made with the model kvscope-llama-8l .*this app has tiny-fixture loaded/);
    expect(modelProblem(app, { ...experiment, model: { id: 'tiny-fixture', sha256: 'b'.repeat(64) } })).toMatch(/another version of tiny-fixture/);
    await expect(replayExperiment(app, { ...experiment, model: { id: 'other', sha256: 'b'.repeat(64) } })).rejects.toThrow(/load other to open it/);
    await expect(replayExperiment(app, { ...experiment, actions: [{ kind: 'decode', steps: 2 }, { kind: 'policy', spec: 'window:size=0' }], steps: 2 })).rejects.toThrow(
      /action 2 of 2 \(switching to window:size=0\) failed: /,
    );
    // the explorer stays usable where the replay got to
    expect(app.steps.length).toBe(2);
    await app.step();
    expect(app.steps.length).toBe(3);
  });
});
