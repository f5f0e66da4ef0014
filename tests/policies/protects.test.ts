/** What policies report as protected heads (Policy.protects), for the explorer's retrieval-head map. */
import { describe, expect, it } from 'vitest';
import { createPolicy } from '../../engine/policies/spec.ts';
import { calibratedContext, handCalibration } from './helpers/calibration.ts';
import { contextFor, DIMS } from './helpers/policy.ts';

const calibration = handCalibration(DIMS, {
  echo: [
    [0.01, 0.02, 0.01, 0.0],
    [0.0, 0.03, 0.02, 0.01],
  ],
  induction: [
    [0.05, 0.01, 0.02, 0.04],
    [0.1, 0.9, 0.2, 0.3],
  ],
  wu: [
    [0.0, 0.2, 0.0, 0.1],
    [0.3, 0.0, 0.0, 0.0],
  ],
  semantic: [
    [0.1, 0.5, 0.2, 0.0],
    [0.0, 0.0, 0.7, 0.6],
  ],
  layerError: [1, 1],
});
const context = calibratedContext(calibration);

describe('Policy.protects', () => {
  it('razor: its retrieval KV heads, the same set its decisions keep whole', () => {
    // 4 KV heads: 14 % induction → round(0.56) = 1 head (L1 kv0), 1 % echo → none
    const policy = createPolicy('razor:echo_pct=0.01,induction_pct=0.14', context);
    expect(policy.protects).toMatchObject({ kvHeads: [[false, false], [true, false]], queryHeads: null });
    expect(policy.protects!.description).toMatch(/retrieval heads/);
  });

  it('compresskv: the top semantic query heads of each layer', () => {
    const policy = createPolicy('compresskv:top_heads=2', context);
    expect(policy.protects).toMatchObject({
      kvHeads: null,
      queryHeads: [
        [false, true, true, false],
        [false, false, true, true],
      ],
    });
  });

  it('policies that protect no heads leave it out', () => {
    for (const spec of ['full', 'window:size=4', 'h2o', 'streaming', 'snapkv', 'tova', 'd2o']) {
      expect(createPolicy(spec, contextFor()).protects, spec).toBeUndefined();
    }
  });
});
