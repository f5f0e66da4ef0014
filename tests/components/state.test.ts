/**
 * ExplorerState (runes) driving the real worker host in-process over the tiny fixture model: the
 * page logic from load to step / back / run / pause / policy switch / inspect, without a browser.
 */
import { describe, expect, it } from 'vitest';
import { RING } from '../../src/lib/explorer/state.svelte.ts';
import { choicesFromSpec, choicesFromSpecOrNull, specOfChoices } from '../../src/lib/explorer/policy-choice.ts';
import { explorer, until } from './in-process.ts';

describe('ExplorerState', () => {
  it('loads, prefills the prompt, steps, steps back and keeps the views of the selected step', async () => {
    const app = explorer();
    void app.load();
    await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
    expect(app.model!.id).toBe('tiny-fixture');
    expect(app.promptView!.pieces.length).toBe(app.promptView!.ids.length);
    expect(app.next!.length).toBe(10);
    expect(app.cacheMap!.tokens).toBe(app.promptView!.ids.length);
    expect(app.policies.map((p) => p.id)).toContain('window');

    for (let i = 0; i < 5; i++) {
      await app.step();
      await until(() => app.steps.length === i + 1, `step ${i}`);
    }
    expect(app.currentStep).toBe(4);
    expect(app.history).toHaveLength(5);
    expect(app.view!.attention!.tokens).toBe(app.current!.tokenIndex + 1);
    expect(app.pieces).toHaveLength(app.promptView!.ids.length + 5);
    const tokens = app.steps.map((s) => s.token.id);

    app.select(1);
    expect(app.currentStep).toBe(1);
    expect(app.history.map((r) => r.step)).toEqual([0, 1]);
    expect(app.chosenNext).toBe(tokens[2]);

    await app.back(2);
    expect(app.steps.map((s) => s.token.id)).toEqual(tokens.slice(0, 3));
    expect(app.selected).toBeNull();
    expect(app.session!.stepCount).toBe(3);
    await app.step();
    await until(() => app.steps.length === 4, 'replayed step');
    expect(app.steps.map((s) => s.token.id)).toEqual(tokens.slice(0, 4));
  });

  it('runs and pauses, switches the policy live, and recomputes views older than the kept window', async () => {
    const app = explorer();
    app.stopAtEos = false;
    app.runSteps = 150;
    void app.load();
    await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
    const running = app.run();
    await until(() => app.steps.length >= RING + 10, 'a long run');
    app.pause();
    await running;
    expect(app.lastStop).toBe('paused');
    const n = app.steps.length;
    expect(n).toBeLessThan(150);

    // the newest RING steps keep full views; an older one is recomputed by the worker
    app.select(2);
    expect(app.view).toBeNull();
    app.ensureView();
    await until(() => app.view !== null, 'inspected view');
    expect(app.view!.step).toBe(2);
    expect(app.view!.token.id).toBe(app.steps[2].token.id);

    app.select(null);
    app.choosePolicy('window');
    app.policyMembers = [{ id: 'window', params: { size: 8 } }];
    expect(app.policyChanged).toBe(true);
    await app.applyPolicy();
    expect(app.activePolicy).toBe('window:size=8');
    expect(app.policyChanged).toBe(false);
    expect(app.memory!.heldEntries).toBe(2 * 2 * 8);
    expect(app.notice).toMatch(/window:size=8/);

    // stepping back across the switch restores the old policy in the picker
    await app.back(1);
    expect(app.activePolicy).toBe('full');
    expect(app.policyMembers).toEqual([{ id: 'full', params: {} }]);
  });

  it('reports a prompt longer than the context and stays usable', async () => {
    const app = explorer();
    void app.load();
    await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
    app.setPrompt('word '.repeat(400));
    expect(app.setupChanged).toBe(true);
    await app.start();
    expect(app.error).toMatchObject({ kind: 'prompt', action: 'dismiss' });
    expect(app.status).toBe('ready');
    app.dismissError();
    app.setPrompt('short again');
    await app.start();
    expect(app.error).toBeNull();
    expect(app.setupChanged).toBe(false);
  });

  it('round-trips policy specs and compositions through the typed members (the engine parses and formats)', () => {
    expect(choicesFromSpec('window:size=8')).toEqual([{ id: 'window', params: { size: 8 } }]);
    expect(choicesFromSpec('window')).toEqual([{ id: 'window', params: { size: 128 } }]);
    const composed = choicesFromSpec('window:size=32 + h2o:heavy=8,recent=8');
    expect(composed).toEqual([
      { id: 'window', params: { size: 32 } },
      { id: 'h2o', params: { heavy: 8, recent: 8, accumulate: 'sum', gqa: 'sum' } },
    ]);
    expect(specOfChoices(composed)).toBe('window:size=32 + h2o:heavy=8,recent=8,accumulate=sum,gqa=sum');
    expect(specOfChoices([{ id: 'full', params: {} }])).toBe('full');
    // an invalid parameter has no canonical spec; an unknown or malformed spec is the engine's error
    expect(specOfChoices([{ id: 'window', params: { size: Number.NaN } }])).toBeNull();
    expect(() => choicesFromSpec('windw:size=8')).toThrow(/unknown policy "windw".*did you mean window/);
    expect(choicesFromSpecOrNull('window:size=8 +')).toBeNull();
  });
});

describe('ExplorerState: compositions', () => {
  it('composes a second member in the picker and switches to the composition live', async () => {
    const app = explorer();
    app.prompt = 'The cat sat on the mat. The dog sat on the log. The cat sat on the';
    void app.load();
    await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
    for (let i = 0; i < 3; i++) await app.step();
    await until(() => app.steps.length === 3 && app.activity === 'idle', 'three steps');
    const fullEntries = app.memory!.heldEntries;

    app.choosePolicy('window');
    app.setPolicyParam(0, 'size', 8);
    expect(app.canAddPolicyMember).toBe(true);
    app.addPolicyMember();
    // "then …" offers a policy the composition does not use yet (never full, which changes nothing)
    expect(app.policyMembers.map((m) => m.id)).toEqual(['window', 'streaming']);
    app.choosePolicy('h2o', 1);
    app.setPolicyParam(1, 'heavy', 2);
    app.setPolicyParam(1, 'recent', 2);
    const composed = 'window:size=8 + h2o:heavy=2,recent=2,accumulate=sum,gqa=sum';
    expect(app.policySpec).toBe(composed);
    expect(app.policyChanged).toBe(true);

    expect(await app.applyPolicy()).toBe(true);
    expect(app.activePolicy).toBe(composed);
    expect(app.policyChanged).toBe(false);
    expect(app.switches.map((s) => [s.atStep, s.to])).toEqual([[3, composed]]);
    // the window keeps 8, then H2O keeps 2 heavy + 2 recent of those: 4 per head (2 layers × 2 KV heads)
    expect(app.memory!.heldEntries).toBe(2 * 2 * 4);
    expect(app.memory!.heldEntries).toBeLessThan(fullEntries);
    await app.step();
    await until(() => app.steps.length === 4 && app.activity === 'idle', 'a step under the composition');
    expect(app.steps[3].policy).toBe(composed);
    expect(app.forgotten!.titles.some((t) => /by the switch to window \+ h2o/.test(t))).toBe(true);

    // a member can be removed again (the first stays: a policy is always in force)
    app.removePolicyMember(1);
    app.removePolicyMember(0);
    expect(app.policySpec).toBe('window:size=8');
    expect(app.policyChanged).toBe(true);

    // stepping back across the switch puts the old policy back in the picker
    await app.back(2);
    expect(app.activePolicy).toBe('full');
    expect(app.policyMembers).toEqual([{ id: 'full', params: {} }]);
    app.client.dispose();
  });

  it('applies a typed composition live; a spec the engine refuses is named and changes nothing', async () => {
    const app = explorer();
    // before any session the typed spec only fills the picker (Reset runs it)
    expect(await app.applySpec('window:size=6')).toBe(true);
    expect(app.policyMembers).toEqual([{ id: 'window', params: { size: 6 } }]);
    void app.load();
    await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
    expect(app.activePolicy).toBe('window:size=6');
    for (let i = 0; i < 2; i++) await app.step();
    await until(() => app.steps.length === 2 && app.activity === 'idle', 'two steps');

    const typed = 'window:size=6  +  h2o:heavy=1,recent=2';
    expect(await app.applySpec(typed)).toBe(true);
    expect(app.activePolicy).toBe('window:size=6 + h2o:heavy=1,recent=2,accumulate=sum,gqa=sum');
    expect(app.policyMembers.map((m) => m.id)).toEqual(['window', 'h2o']);
    expect(app.policyError).toBeNull();
    expect(app.memory!.heldEntries).toBe(2 * 2 * 3);

    const before = { members: app.policyMembers, session: app.session, switches: app.switches, active: app.activePolicy };
    const refuse = async (spec: string, message: RegExp) => {
      expect(await app.applySpec(spec)).toBe(false);
      expect(app.policyError).toMatch(message);
      expect(app.policyMembers).toBe(before.members);
      expect(app.session).toBe(before.session);
      expect(app.switches).toBe(before.switches);
      expect(app.activePolicy).toBe(before.active);
      expect(app.error).toBeNull();
    };
    // refused by the parser: a bad value, a typo, a dangling "+"
    await refuse('window:size=0 + h2o', /window: size must be an integer ≥ 1, got "0"/);
    await refuse('windw:size=8', /unknown policy "windw".*did you mean window/);
    await refuse('window:size=8 +', /a composition needs a policy on each side of "\+"/);
    // parsed, but refused when the engine attaches it (this model has no calibration)
    await refuse('razor', /calibration/i);

    // editing the picker again clears the message
    app.setPolicyParam(0, 'size', 5);
    expect(app.policyError).toBeNull();
    app.client.dispose();
  });
});
