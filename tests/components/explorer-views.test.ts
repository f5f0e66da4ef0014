/**
 * ExplorerState with the real host in-process: the reference lane toggle, live switches (markers,
 * before/after maps), the forgotten-token overlay and the heavy-hitter scores it hands the views.
 */
import { describe, expect, it } from 'vitest';
import { explorer, until } from './in-process.ts';

describe('ExplorerState: reference lane, switches, forgotten tokens, scores', () => {
  it('turns the lane on, records its metrics per step, and follows a live switch and a step back', async () => {
    const app = explorer();
    app.prompt = 'The cat sat on the mat. The dog sat on the log. The cat sat on the';
    app.policyMembers = [{ id: 'h2o', params: { heavy: 4, recent: 4, accumulate: 'sum', gqa: 'sum' } }];
    void app.load();
    await until(() => app.status === 'ready' && app.session !== null && app.activity === 'idle', 'ready');
    expect(app.calibration).toBeNull();
    await app.setReference(true);
    expect(app.reference).toBe(true);
    expect(app.session!.reference).toBe(true);

    for (let i = 0; i < 4; i++) await app.step();
    await until(() => app.steps.length === 4, 'four steps');
    expect(app.referenceHistory.every((h) => h.reference !== null)).toBe(true);
    expect(app.currentReference!.mass).toBeLessThan(1);
    expect(app.currentReference!.memoryRatio).toBeLessThan(1);

    // H2O scores every step: the heavy-hitter view has this step's scores and the rank history
    expect(app.scoresShown?.source).toBe('step');
    expect(app.scoreHistory.map((h) => h.step)).toEqual([0, 1, 2, 3]);

    // forgotten: H2O evicted tokens from every head; the overlay says so
    const forgotten = app.forgotten!;
    expect(forgotten.heads).toBe(4);
    const gone = [...forgotten.share].findIndex((s) => s > 0);
    expect(gone).toBeGreaterThanOrEqual(0);
    expect(forgotten.titles[gone]).toMatch(/forgotten by \d of 4 KV heads/);
    app.forgottenMode = 'head';
    expect(app.forgotten!.heads).toBe(1);
    app.forgottenMode = 'off';
    expect(app.forgotten).toBeNull();
    app.forgottenMode = 'all';

    // a live switch: recorded with the maps before and after, marked for the charts
    app.policyMembers = [{ id: 'streaming', params: { sinks: 2, recent: 4, positions: 'p1' } }];
    await app.applyPolicy();
    expect(app.switches).toHaveLength(1);
    expect(app.switchSteps).toEqual([4]);
    expect(app.switchHere?.to).toMatch(/^streaming/);
    expect(app.switchHere!.before).not.toBeNull();
    expect(app.switchHere!.evicted).toBeGreaterThan(0);
    const lostBefore = [...app.forgotten!.share].filter((s) => s > 0).length;
    await app.step();
    await until(() => app.steps.length === 5, 'step after the switch');
    expect(app.switchHere).toBeNull();
    expect(app.currentReference).not.toBeNull();
    expect([...app.forgotten!.share].filter((s) => s > 0).length).toBeGreaterThanOrEqual(lostBefore);
    expect(app.forgotten!.titles.some((t) => /by the switch to streaming after step 3/.test(t))).toBe(true);

    // stepping back before the switch drops it; the metrics of the kept steps stay
    await app.back(2);
    expect(app.steps).toHaveLength(3);
    expect(app.switches).toHaveLength(0);
    expect(app.referenceHistory.map((h) => h.reference !== null)).toEqual([true, true, true]);
    await app.step();
    await until(() => app.steps.length === 4, 'replayed step');
    expect(app.steps[3].reference).not.toBeNull();

    await app.setReference(false);
    expect(app.session!.reference).toBe(false);
  });
});
