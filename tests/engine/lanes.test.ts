/** engine/lanes.ts: policies stepping together, each measured against a full cache on its own tokens. */
import { describe, expect, it } from 'vitest';
import { ContextFullError } from '../../engine/errors.ts';
import { keepCheckpoint, LaneGroup } from '../../engine/lanes.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel, tokenSequence } from './helpers/fixture.ts';

const SAMPLER = { temperature: 0.9, topK: 20, topP: 0.95, seed: 7 };

describe('LaneGroup', () => {
  it('steps every lane; full lanes are their own reference; lanes equal plain sessions', async () => {
    const model = await fixtureModel();
    const prompt = tokenSequence(40, 3);
    const group = new LaneGroup(model, { policies: ['full', 'window:size=8', 'full'], sampler: SAMPLER });
    expect(group.policies[1]).toBe('window:size=8');
    await group.start(prompt);
    const steps = [];
    for (let i = 0; i < 12; i++) steps.push(await group.step());
    expect(steps.map((s) => s.step)).toEqual([...Array(12).keys()]);
    // two full lanes with the same seed produce the same tokens
    expect(group.tokens(0)).toEqual(group.tokens(2));
    for (const s of steps) {
      expect(s.lanes[0].kl).toBe(0);
      expect(s.lanes[0].top1).toBe(true);
      expect(s.lanes[0].memory.ratio).toBe(1);
      expect(s.lanes[1].kl).toBeGreaterThanOrEqual(0);
      expect(typeof s.lanes[1].top1).toBe('boolean');
      expect(s.lanes[1].mass).toBeGreaterThan(0);
      expect(s.lanes[1].mass).toBeLessThanOrEqual(1 + 1e-6);
      expect(s.lanes[1].memory.entriesPerHead).toBe(8);
    }
    // the window lane does what a plain session with that policy does
    const plain = new Session(model, { policy: 'window:size=8', sampler: SAMPLER });
    await plain.prefill(prompt);
    await plain.run(12, { stopAtEos: false });
    expect(group.tokens(1)).toEqual(plain.tokens);
    // the reference is teacher-forced on the lane's tokens: its KL is the lane's against a full cache
    expect(steps.some((s) => (s.lanes[1].kl ?? 0) > 1e-6)).toBe(true);
  });

  it('steps back exactly (checkpoint + replay) and continues with the same tokens', async () => {
    const model = await fixtureModel();
    const prompt = tokenSequence(30, 9);
    const group = new LaneGroup(model, { policies: ['h2o:heavy=4,recent=4', 'streaming:sinks=2,recent=6'], sampler: SAMPLER });
    await group.start(prompt);
    const first = [];
    for (let i = 0; i < 20; i++) first.push(await group.step());
    const tokens = [group.tokens(0).slice(), group.tokens(1).slice()];
    await group.rewind(7);
    expect(group.stepCount).toBe(7);
    expect(group.tokens(0)).toEqual(tokens[0].slice(0, prompt.length + 7));
    const again = [];
    for (let i = 7; i < 20; i++) again.push(await group.step());
    expect(group.tokens(0)).toEqual(tokens[0]);
    expect(group.tokens(1)).toEqual(tokens[1]);
    expect(again.map((s) => s.lanes.map((l) => l.kl))).toEqual(first.slice(7).map((s) => s.lanes.map((l) => l.kl)));
    await group.rewind(0);
    expect(group.tokens(1)).toEqual(prompt);
  });

  it('stops at a full context without changing anything and checks its inputs', async () => {
    const model = await fixtureModel();
    const context = model.forward.dims.contextLength;
    const group = new LaneGroup(model, { policies: ['full', 'window:size=4'], sampler: SAMPLER });
    await group.start(tokenSequence(context - 2, 1));
    await group.step();
    await group.step();
    await expect(group.step()).rejects.toThrow(ContextFullError);
    expect(group.stepCount).toBe(2);
    expect(() => new LaneGroup(model, { policies: [] })).toThrow(/1–4 lanes/);
    expect(() => new LaneGroup(model, { policies: ['full', 'full', 'full', 'full', 'full'] })).toThrow(/1–4 lanes/);
    expect(() => new LaneGroup(model, { policies: ['nope'] })).toThrow(/unknown policy/);
    await expect(new LaneGroup(model, { policies: ['full'] }).step()).rejects.toThrow(/start the lanes/);
  });

  it('keeps checkpoints thinned: every 8th recently, every 32nd and 128th further back', () => {
    const kept = Array.from({ length: 601 }, (_, s) => s).filter((s) => s % 8 === 0 && keepCheckpoint(s, 600, s === 0));
    expect(kept).toContain(0);
    expect(kept).toContain(600);
    expect(kept).toContain(544);
    expect(kept).not.toContain(528);
    expect(kept).toContain(352);
    expect(kept).not.toContain(200);
    expect(kept).toContain(256);
    expect(kept.length).toBeLessThan(20);
  });
});
