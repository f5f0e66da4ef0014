/**
 * Speculative steps in the trace: an exported trace of a speculative run reads back with every
 * round's verification intact (engine/trace/read-speculative.ts), and a malformed field is named.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { LoadedModel } from '../../engine/model/load.ts';
import { Session } from '../../engine/session.ts';
import { createDrafter, SpeculativeDecoder } from '../../engine/spec/index.ts';
import { readTrace, TraceFormatError } from '../../engine/trace/read.ts';
import { exportTraceJson, type StepTrace } from '../../engine/trace/schema.ts';
import { fixtureModel, tokenSequence } from '../engine/helpers/fixture.ts';

let model: LoadedModel;
let json: string;
let steps: StepTrace[];

beforeAll(async () => {
  model = await fixtureModel();
  const session = new Session(model, { policy: 'h2o:heavy=8,recent=8', sampler: { temperature: 1, topK: 8, seed: 5 } });
  const prompt = [1, ...tokenSequence(40, 2)];
  await session.prefill([...prompt, ...prompt.slice(1, 20)]);
  const decoder = new SpeculativeDecoder(session, (await createDrafter('self:gamma=3,policy=streaming(sinks=2,recent=8)', { target: model }))!);
  steps = (await decoder.run(16, { stopAtEos: false })).steps;
  json = exportTraceJson(session.trace);
});

describe('speculative steps in an exported trace', () => {
  it('read back exactly, verifications included', () => {
    const read = readTrace(json);
    const readSteps = read.events.filter((e): e is StepTrace => e.kind === 'step');
    // the export writes numbers to 6 significant digits: compare what the view reads, numbers close
    const shape = (list: StepTrace[]) =>
      list.map((s) => {
        const { verify, ...where } = s.speculative!;
        return { ...where, verify: verify && { ...verify, draftMs: 0, verifyMs: 0, drafted: verify.drafted.map((d) => ({ ...d, q: Number(d.q.toPrecision(4)), p: d.p === null ? null : Number(d.p.toPrecision(4)) })) } };
      });
    expect(shape(readSteps)).toEqual(shape(steps));
    const rounds = readSteps.filter((s) => s.speculative?.verify);
    expect(rounds.length).toBeGreaterThan(0);
    // every round ends on exactly one step, and rows count up from 0 inside a round
    for (const [i, s] of readSteps.entries()) {
      const spec = s.speculative!;
      if (spec.row > 0) expect(readSteps[i - 1].speculative!.round).toBe(spec.round);
      if (i > 0 && spec.row === 0) expect(readSteps[i - 1].speculative!.verify).toBeDefined();
    }
  });

  it('a malformed speculative field is refused by path', () => {
    const parsed = JSON.parse(json) as { events: { kind: string; speculative?: { origin: string; verify?: { accepted: number } } }[] };
    const step = parsed.events.find((e) => e.kind === 'step' && e.speculative?.verify)!;
    step.speculative!.origin = 'oracle';
    expect(() => readTrace(JSON.stringify(parsed))).toThrow(TraceFormatError);
    expect(() => readTrace(JSON.stringify(parsed))).toThrow(/speculative\.origin.*draft, correction, bonus, target/);
    step.speculative!.origin = 'draft';
    step.speculative!.verify!.accepted = 99;
    expect(() => readTrace(JSON.stringify(parsed))).toThrow(/speculative\.verify\.accepted/);
  });
});
