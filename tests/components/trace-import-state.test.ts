/**
 * ExplorerState's trace import (read-only replay) with the real worker host in-process over the
 * tiny fixture model: export from one explorer, import into a fresh one that never loads the model,
 * see the same tokens and cache maps, move through the recorded steps, refuse what needs the
 * model, survive a bad file unchanged, and go back to live mode (which reruns the trace's setup).
 */
import { describe, expect, it } from 'vitest';
import { explorer, until } from './in-process.ts';

const file = (name: string, text: string) => ({ name, text: async () => text });

describe('ExplorerState: import a trace', () => {
  it('replays an exported trace read-only, without the model, and goes back to live mode', async () => {
    const live = explorer(4);
    live.prompt = 'The cat sat on the mat. The dog sat on the log. The cat sat on the';
    live.sampler = { temperature: 0.9, topK: 40, topP: 0.95, seed: 3 };
    live.policyMembers = [{ id: 'h2o', params: { heavy: 4, recent: 4, accumulate: 'sum', gqa: 'sum' } }];
    void live.load();
    await until(() => live.status === 'ready' && live.session !== null && live.activity === 'idle', 'ready');
    live.runSteps = 5;
    live.stopAtEos = false;
    await live.run();
    live.policyMembers = [{ id: 'window', params: { size: 8 } }];
    await live.applyPolicy();
    for (let i = 0; i < 2; i++) await live.step();
    await until(() => live.steps.length === 7 && live.activity === 'idle', 'seven steps');
    const exported = (await live.exportTrace())!;
    const liveTokens = live.steps.map((s) => s.token.id);
    const liveMap = live.cacheMap!;

    const app = explorer(4);
    app.prompt = 'something else';
    expect(app.status).toBe('idle'); // never loaded
    expect(await app.importTrace(file(exported.fileName, exported.json))).toBe(true);
    expect(app.replay).toMatchObject({ fileName: exported.fileName, steps: 7, model: { id: 'tiny-fixture' } });
    expect(app.shownModel!.layers).toBe(2);
    expect(app.steps.map((s) => s.token.id)).toEqual(liveTokens);
    expect(app.pieces).toEqual(live.pieces);
    expect(app.cacheMap!.codes).toEqual(liveMap.codes);
    expect(app.memory!.heldEntries).toBe(live.memory!.heldEntries);
    expect(app.switches.map((s) => s.atStep)).toEqual([5]);
    expect(app.forgotten!.share).toEqual(live.forgotten!.share);
    // the setup is the trace's: going back to live mode reruns it
    expect(app.prompt).toBe(live.prompt);
    expect(app.sampler).toEqual(live.sampler);
    expect(app.setupChanged).toBe(false);

    // what needs the model is off; Step / Back move through the recorded steps
    expect(app.canStep).toBe(false);
    expect(app.canForward).toBe(false);
    await app.run();
    await app.applyPolicy();
    await app.start();
    expect(app.steps).toHaveLength(7);
    await app.back();
    expect(app.currentStep).toBe(5);
    expect(app.canForward).toBe(true);
    app.ensureView();
    await until(() => app.view !== null, 'view of step 5');
    await app.step();
    expect(app.currentStep).toBe(6);
    // back to an old, compacted step: read from the trace by the worker (no model loaded)
    await app.back(6);
    expect(app.currentStep).toBe(0);
    app.ensureView();
    await until(() => app.view !== null, 'view of step 0');
    expect(app.view!.attentionTopOnly).toBe(8);
    expect(app.view!.cacheMap).not.toBeNull();
    // and to the prompt
    await app.back();
    expect(app.currentStep).toBe(-1);
    expect(app.showingPrefill).toBe(true);
    expect(app.cacheMap).toBe(app.prefill!.cacheMap);
    expect(app.memory).toBe(app.prefill!.memory);
    expect(app.next).toBe(app.prefill!.next);
    expect(app.next!.length).toBeGreaterThan(0);
    expect(app.canBackward).toBe(false);

    // a bad file: named, nothing changed
    const before = { steps: app.steps, replay: app.replay, selected: app.selected };
    expect(await app.importTrace(file('broken.json', '{"version": 7, "header": {}, "events": []}'))).toBe(false);
    expect(app.error).toMatchObject({ kind: 'trace', action: 'dismiss' });
    expect(app.error!.message).toMatch(/broken\.json: this trace is version 7, written by a newer kvscope/);
    expect(app.steps).toBe(before.steps);
    expect(app.replay).toBe(before.replay);
    expect(app.selected).toBe(before.selected);
    app.dismissError();

    // back to live mode: loads the model and reruns the trace's prompt, sampler and first policy
    await app.leaveReplay();
    await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'live again');
    expect(app.replay).toBeNull();
    expect(app.activePolicy).toMatch(/^h2o:/);
    for (let i = 0; i < 5; i++) await app.step();
    await until(() => app.steps.length === 5 && app.activity === 'idle', 'five live steps');
    expect(app.steps.map((s) => s.token.id)).toEqual(liveTokens.slice(0, 5));
  });
});
