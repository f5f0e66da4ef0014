/**
 * ExplorerState (runes) driving the real worker host in-process over the tiny fixture model: the
 * page logic from load to step / back / run / pause / policy switch / inspect, without a browser.
 */
import { describe, expect, it } from 'vitest';
import { RING, choiceFromSpec, specOf } from '../../src/lib/explorer/state.svelte.ts';
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
    app.policy = { id: 'window', params: { size: 8 } };
    expect(app.policyChanged).toBe(true);
    await app.applyPolicy();
    expect(app.activePolicy).toBe('window:size=8');
    expect(app.policyChanged).toBe(false);
    expect(app.memory!.heldEntries).toBe(2 * 2 * 8);
    expect(app.notice).toMatch(/window:size=8/);

    // stepping back across the switch restores the old policy in the picker
    await app.back(1);
    expect(app.activePolicy).toBe('full');
    expect(app.policy.id).toBe('full');
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

  it('round-trips policy spec strings through the typed parameters', () => {
    const policies = [
      {
        id: 'window',
        label: 'w',
        description: '',
        paper: { short: '', title: '' },
        params: [{ name: 'size', kind: 'int' as const, default: 128, min: 1, description: '' }],
        needs: { attention: false, queries: false, calibration: false },
      },
    ];
    expect(choiceFromSpec('window:size=8', policies)).toEqual({ id: 'window', params: { size: 8 } });
    expect(choiceFromSpec('window', policies)).toEqual({ id: 'window', params: { size: 128 } });
    expect(specOf({ id: 'window', params: { size: 8 } }, policies)).toBe('window:size=8');
    expect(specOf({ id: 'full', params: {} }, policies)).toBe('full');
  });
});
