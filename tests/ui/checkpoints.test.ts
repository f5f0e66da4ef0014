/** Snapshot thinning for step back: dense recently, sparse far back, pinned switches kept. */
import { describe, expect, it } from 'vitest';
import { Checkpoints } from '../../src/lib/worker/checkpoints.ts';

describe('Checkpoints', () => {
  it('keeps recent steps densely and older ones sparsely, bounded at a 1024-token context', () => {
    const c = new Checkpoints<number>({ dense: 2, mid: 16, midSpan: 128, far: 64 });
    c.add(0, 0, true);
    for (let step = 1; step <= 1000; step++) if (c.wants(step)) c.add(step, step);
    const steps = c.steps();
    expect(steps.slice(-2)).toEqual([999, 1000]);
    expect(steps).toContain(0);
    expect(steps).toContain(896); // within 128 and a multiple of 16
    expect(steps).toContain(960);
    expect(steps).toContain(640); // multiple of 64
    expect(steps).not.toContain(650);
    expect(c.size).toBeLessThanOrEqual(2 + 8 + 17 + 1);
    // the replay from the nearest snapshot is short
    for (const target of [999, 990, 700, 100]) {
      const from = c.before(target)!.step;
      expect(target - from).toBeLessThan(64);
    }
  });

  it('keeps pinned snapshots (policy switches) and forgets the future when stepping back', () => {
    const c = new Checkpoints<string>({ dense: 1, mid: 10, midSpan: 20, far: 50 });
    for (let step = 0; step <= 30; step++) c.add(step, `s${step}`, step === 7);
    expect(c.steps()).toContain(7);
    c.dropAfter(12);
    expect(Math.max(...c.steps())).toBeLessThanOrEqual(12);
    expect(c.before(9)!.snapshot).toBe('s7');
    c.add(7, 'replaced', true);
    expect(c.before(7)!.snapshot).toBe('replaced');
  });
});
