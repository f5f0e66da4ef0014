/**
 * The calibration file: parse / serialize, stale detection, the loader reading calibration.json,
 * Session passing it to policies, and the MergeGroup.count engine change.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KVCacheStore } from '../../engine/cache/store.ts';
import {
  CalibrationError,
  calibrationModel,
  checkCalibration,
  parseCalibration,
  readCalibration,
  requireCalibration,
  serializeCalibration,
  type Calibration,
} from '../../engine/calibration/format.ts';
import { PolicyDecisionError } from '../../engine/errors.ts';
import { loadModelFromDirectory } from '../../engine/model/load-node.ts';
import { Session } from '../../engine/session.ts';
import { fillCache } from '../engine/helpers/cache.ts';
import { fixtureCopy, fixtureModel } from '../engine/helpers/fixture.ts';
import { basisOf, type ProjectionCalibration } from '../../engine/calibration/projections.ts';
import { orthonormalityError } from '../../engine/quant/pca.ts';
import { basisJson, handCalibration, projectionCalibration, rotationBasis, tinyCalibration } from '../policies/helpers/calibration.ts';
import { DIMS } from '../policies/helpers/policy.ts';

describe('calibration format', () => {
  it('round-trips through its JSON text (numbers to 6 significant digits)', () => {
    const cal = handCalibration(DIMS, {
      echo: [
        [0.1, 0.2, 0.3, 0.4],
        [0.5, 0.6, 0.7, 0.123456789],
      ],
      semantic: [
        [1, 2, 3, 4],
        [5, 6, 7, 8],
      ],
      layerError: [1, 3],
    });
    const back = parseCalibration(JSON.parse(serializeCalibration(cal)));
    expect(back.razor!.echo[1][3]).toBe(0.123457);
    expect(back.retrieval!.semantic).toEqual(cal.retrieval!.semantic);
    expect(back.layerError!.normalized).toEqual([0.25, 0.75]);
    expect(back.model).toEqual(cal.model);
  });

  it('names the field that is wrong', () => {
    const good = JSON.parse(serializeCalibration(handCalibration(DIMS, { echo: [[0, 0, 0, 0], [0, 0, 0, 0]] })));
    expect(() => parseCalibration({ ...good, format: 'x' })).toThrow(new CalibrationError('calibration.json: format must be "kvscope-calibration", got "x"'));
    expect(() => parseCalibration({ ...good, formatVersion: 2 })).toThrow(/formatVersion must be 1, got 2/);
    expect(() => parseCalibration({ ...good, razor: { ...good.razor, echo: [[0, 0, 0, 0]] } })).toThrow('calibration.json: razor.echo must have 2 rows (layers), has 1');
    expect(() => parseCalibration({ ...good, razor: { ...good.razor, induction: [[0, 0, 0, 0], [0, 'a', 0, 0]] } })).toThrow('razor.induction[1][1] must be a finite number');
    expect(() => readCalibration('{', { id: 'x' } as never)).toThrow(/calibration.json: not valid JSON/);
  });

  it('rejects a calibration of another model or graph with a message that says how to recompute', async () => {
    const { manifest } = await fixtureModel();
    const cal: Calibration = { ...handCalibration(DIMS, {}), model: calibrationModel(manifest) };
    expect(() => checkCalibration(cal, manifest)).not.toThrow();
    const otherGraph = { ...cal, model: { ...cal.model, graph: [{ path: 'model.onnx', sha256: 'deadbeef'.repeat(8) }] } };
    expect(() => checkCalibration(otherGraph, manifest)).toThrow(
      /^calibration.json is stale: it was computed for the graph model.onnx deadbeefdead…, but model "tiny-fixture" now has model.onnx 64139d20e03d… — recompute it: kvscope calibrate <model directory>$/,
    );
    expect(() => checkCalibration({ ...cal, model: { ...cal.model, id: 'other' } }, manifest)).toThrow('calibration.json is for model "other", not "tiny-fixture"');
    expect(() => checkCalibration({ ...cal, model: { ...cal.model, nLayers: 3 } }, manifest)).toThrow(/computed for 3 layers × 4 heads \(2 KV\), this model has 2 layers × 4 heads \(2 KV\)/);
  });

  it('requireCalibration says which policy needs which section', () => {
    expect(() => requireCalibration(null, 'razor', ['razor'])).toThrow(/^razor needs calibration data \(razor\): none was loaded for this model — compute one with `kvscope calibrate/);
    expect(() => requireCalibration(null, 'razor', ['razor'], 'calibration.json is stale: …')).toThrow(/razor needs calibration data \(razor\): calibration.json is stale/);
    expect(() => requireCalibration(handCalibration(DIMS, {}), 'compresskv', ['retrieval', 'layerError'])).toThrow(/compresskv needs the calibration section\(s\) retrieval, layerError/);
  });
});

describe('calibration format: the projections section', () => {
  const withBases = () =>
    projectionCalibration(
      DIMS,
      (side, l, h) => basisJson(rotationBasis(4, 1 + l * 4 + h * 2 + (side === 'values' ? 1 : 0)), [4.5, 2.25, 1.125, 0.1234567], [0.1, 0.2, 0.3, 0.4]),
      (side, l) => basisJson(rotationBasis(8, 30 + l), undefined, [1, 2, 3, 4, 5, 6, 7, 8]),
    );

  it('round-trips at 6 significant digits; the loaded bases are re-orthonormalized exactly', () => {
    const cal = withBases();
    const back = parseCalibration(JSON.parse(serializeCalibration(cal)));
    const p = back.projections!;
    expect(p.headDim).toBe(4);
    expect(p.values[1][0].eigenvalues).toEqual([4.5, 2.25, 1.125, 0.123457]);
    p.keys[1][1].components.flat().forEach((x, i) => expect(x).toBeCloseTo(cal.projections!.keys[1][1].components.flat()[i], 6));
    const rounded = Float64Array.from(p.joint!.keysPost[1].components.flat());
    expect(orthonormalityError(rounded, 8)).toBeGreaterThan(0);
    expect(orthonormalityError(basisOf(p.joint!.keysPost[1]).components, 8)).toBeLessThan(1e-14);
    expect(basisOf(p.joint!.keysPost[1])).toBe(basisOf(p.joint!.keysPost[1]));
    // no joint bases is a valid section (headmerge then refuses)
    const { joint: _joint, ...perHead } = cal.projections!;
    expect(parseCalibration(JSON.parse(serializeCalibration({ ...cal, projections: perHead }))).projections!.joint).toBeUndefined();
  });

  it('names what is wrong: shapes, finiteness, order of the eigenvalues, orthonormality', () => {
    const good = JSON.parse(serializeCalibration(withBases()));
    const broken = (edit: (p: ProjectionCalibration) => void) => {
      const copy = JSON.parse(JSON.stringify(good));
      edit(copy.projections);
      return () => parseCalibration(copy);
    };
    expect(broken((p) => p.keys.pop())).toThrow('calibration.json: projections.keys must have 2 layers, has 1');
    expect(broken((p) => p.values[0].pop())).toThrow('projections.values[0] must have 2 KV heads, has 1');
    expect(broken((p) => (p.headDim = 3))).toThrow('projections.keys[0][0].mean must have 3 values, has 4');
    expect(broken((p) => ((p.keys[1][0].components[2] as unknown[])[1] = 'x'))).toThrow('projections.keys[1][0].components[2][1] must be a finite number');
    expect(broken((p) => (p.keys[0][1].eigenvalues = [1, 2, 0.5, 0]))).toThrow('projections.keys[0][1].eigenvalues must be in descending order');
    expect(broken((p) => (p.values[0][1].eigenvalues = [1, 0.5, 0, -1]))).toThrow('projections.values[0][1].eigenvalues[3] must be ≥ 0');
    expect(broken((p) => (p.keys[0][0].components[1] = p.keys[0][0].components[0]))).toThrow(/projections.keys\[0\]\[0\].components must be orthonormal \(max \|UUᵀ − I\| = 1\.00 > 0\.001\)/);
    expect(broken((p) => p.joint!.values[1].mean.pop())).toThrow('projections.joint.values[1].mean must have 8 values, has 7');
    expect(broken((p) => Reflect.deleteProperty(p.joint!, 'keysPost'))).toThrow('projections.joint.keysPost is missing');
    expect(broken((p) => Reflect.deleteProperty(p, 'rows'))).toThrow('projections.rows is missing');
  });
});

describe('engine: calibration reaches policies', () => {
  it('loadModelFromDirectory reads calibration.json; a stale or broken one is kept as calibrationError, never fails the load', async () => {
    const dir = await fixtureCopy();
    try {
      expect((await loadModelFromDirectory(dir)).calibration).toBeNull();
      const tiny = await tinyCalibration();
      await writeFile(join(dir, 'calibration.json'), serializeCalibration(tiny));
      const loaded = await loadModelFromDirectory(dir);
      expect(loaded.calibration!.model).toEqual(tiny.model);
      expect(loaded.calibrationError).toBeUndefined();
      expect((await loadModelFromDirectory(dir, { calibration: false })).calibration).toBeUndefined();
      // a session over that model hands it to policies
      const session = new Session(loaded, { policy: 'razor' });
      expect(session.calibration).toBe(loaded.calibration);

      const stale = { ...tiny, model: { ...tiny.model, graph: [{ path: 'model.onnx', sha256: '0'.repeat(64) }] } };
      await writeFile(join(dir, 'calibration.json'), serializeCalibration(stale));
      const staleModel = await loadModelFromDirectory(dir);
      expect(staleModel.calibration).toBeNull();
      expect(staleModel.calibrationError).toMatch(/calibration.json is stale/);
      expect(() => new Session(staleModel, { policy: 'razor' })).toThrow(/razor needs calibration data \(razor\): calibration.json is stale: it was computed for the graph model.onnx 000000000000…/);
      expect(() => new Session(staleModel, { policy: 'full' })).not.toThrow();

      await writeFile(join(dir, 'calibration.json'), '{"format": 1');
      expect((await loadModelFromDirectory(dir)).calibrationError).toMatch(/calibration.json: not valid JSON/);
    } finally {
      await rm(dir, { recursive: true });
    }
  });

  it('Session rejects a stale calibration passed in options and forks keep the calibration', async () => {
    const model = await fixtureModel();
    const tiny = await tinyCalibration();
    const stale = { ...tiny, model: { ...tiny.model, id: 'kvscope-llama-8l' } };
    expect(() => new Session(model, { calibration: stale })).toThrow(CalibrationError);
    const session = new Session(model, { policy: 'razor', calibration: tiny });
    await session.prefill([1, 5, 6, 7]);
    expect(session.fork().calibration).toBe(tiny);
    // switching to a calibrated policy uses the session's calibration
    const plain = new Session(model);
    expect(() => plain.setPolicy('razor')).toThrow(/razor needs calibration data/);
    const withCal = new Session(model, { calibration: tiny });
    expect(() => withCal.setPolicy('compresskv')).not.toThrow();
  });

  it('MergeGroup.count overrides the merged count (bias) but the origin lists every member', () => {
    const cache = fillCache(new KVCacheStore(DIMS), 6);
    const head = (count?: number) => ({ keep: [0, 4, 5], merge: [{ members: [1, 2, 3], weights: [1 / 3, 1 / 3, 1 / 3], count }] });
    cache.apply({ layers: [[head(1), head()], null] });
    expect(Array.from(cache.counts(0, 0))).toEqual([1, 1, 1, 1]);
    expect(Array.from(cache.counts(0, 1))).toEqual([1, 3, 1, 1]);
    expect(cache.origin(0, 0, 1)).toEqual([1, 2, 3]);
    expect(cache.values(0, 0)[4]).toBeCloseTo(2.5, 6); // mean of values 1.5, 2.5, 3.5
    const feeds = cache.buildFeeds(1);
    // layer 0, query head 0 (KV head 0): no bias on the count-1 merge; query head 2 (KV head 1): log 3
    expect(feeds[0].bias[1]).toBe(0);
    expect(feeds[0].bias[2 * 5 + 1]).toBeCloseTo(Math.log(3), 6);
    const bad = fillCache(new KVCacheStore(DIMS), 4);
    expect(() => bad.apply({ layers: [[{ keep: [0], merge: [{ members: [1, 2], weights: [0.5, 0.5], count: 0 }] }, null], null] })).toThrow(
      new PolicyDecisionError('decision for layer 0 head 0: merge group 0 count must be an integer ≥ 1, got 0'),
    );
  });
});

describe('the shipped calibration', () => {
  it('static/models/kvscope-llama-8l/calibration.json belongs to the shipped graph', async () => {
    const dir = new URL('../../static/models/kvscope-llama-8l/', import.meta.url);
    const manifest = JSON.parse(await readFile(new URL('manifest.json', dir), 'utf8'));
    const cal = readCalibration(await readFile(new URL('calibration.json', dir), 'utf8'), manifest);
    expect(cal.model.id).toBe('kvscope-llama-8l');
    expect(cal.razor && cal.retrieval && cal.layerError).toBeTruthy();
    expect(cal.layerError!.normalized.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
    // PCA bases per layer × KV head (32 wide) and joint over both KV heads (64 wide)
    const p = cal.projections!;
    expect([p.headDim, p.keys.length, p.keys[0].length, p.joint!.keys[0].mean.length]).toEqual([32, 8, 2, 64]);
    expect(p.rows).toBe(p.prompts * p.tokens);
  });
});
