/**
 * The speculative-decoding view's payload (src/lib/worker/pack-spec.ts) from a hand-made trace
 * (rounds, a rejection, a bonus, a round cut by stepping back, plain steps, a restarted round
 * count), then the worker's drafter commands on the fixture model: a bad spec refused without a
 * change, `lookup` rounds whose tokens equal plain greedy decoding, the measured speed-up, Back,
 * inspect and an exported trace re-packed without the model.
 */
import { describe, expect, it } from 'vitest';
import { loadModel } from '../../engine/model/load.ts';
import type { DraftedToken, StepTrace, TraceEvent, VerifyTrace } from '../../engine/trace/schema.ts';
import { EngineHost } from '../../src/lib/worker/host.ts';
import { movingAverage, packSpecView, specRounds } from '../../src/lib/worker/pack-spec.ts';
import type { Command, EngineEvent, SpecView } from '../../src/lib/worker/protocol.ts';
import { EventLog, fakeServer, MemoryCache, MODELS_URL, ORIGIN } from './helpers.ts';

function step(n: number, token: number, speculative?: StepTrace['speculative']): TraceEvent {
  return { kind: 'step', step: n, tokenIndex: 4 + n, position: 4 + n, token: { id: token, piece: `t${token}`, prob: 0.5 }, ...(speculative ? { speculative } : {}) } as unknown as TraceEvent;
}
const d = (id: number, q: number, p: number | null, accepted: boolean): DraftedToken => ({ id, piece: `t${id}`, q, p, accepted });
function verify(drafted: DraftedToken[], end: VerifyTrace['end'], next: number, origin: 'correction' | 'bonus' | 'target' | 'draft'): VerifyTrace {
  return { drafter: 'lookup:max_ngram=3,k=3', gamma: 3, drafted, accepted: drafted.filter((x) => x.accepted).length, next: { id: next, piece: `t${next}`, origin }, end, draftMs: 1, verifyMs: 2 };
}

// round 0: target draw 10, drafts 11 ✓ 12 ✓ 13 ✗ → correction 20
// round 1: correction 20, drafts 21 ✓ 22 ✓ 23 ✓ → bonus 30
// round 2: bonus 30, no draft → target 40
// a plain step, then round 3 cut after row 1 (stepped back into it)
const events: TraceEvent[] = [
  { kind: 'prefill' } as unknown as TraceEvent,
  step(0, 10, { round: 0, row: 0, origin: 'target' }),
  step(1, 11, { round: 0, row: 1, origin: 'draft' }),
  step(2, 12, { round: 0, row: 2, origin: 'draft', verify: verify([d(11, 0.9, 0.8, true), d(12, 1, 0.6, true), d(13, 0.7, 0.1, false)], 'rejected', 20, 'correction') }),
  step(3, 20, { round: 1, row: 0, origin: 'correction' }),
  step(4, 21, { round: 1, row: 1, origin: 'draft' }),
  step(5, 22, { round: 1, row: 2, origin: 'draft' }),
  step(6, 23, { round: 1, row: 3, origin: 'draft', verify: verify([d(21, 1, 0.9, true), d(22, 1, 0.9, true), d(23, 1, 0.9, true)], 'all-accepted', 30, 'bonus') }),
  step(7, 30, { round: 2, row: 0, origin: 'bonus', verify: verify([], 'no-draft', 40, 'target') }),
  step(8, 40),
  // a new decoder restarts its count at 0: still a round of its own
  step(9, 50, { round: 0, row: 0, origin: 'target' }),
  step(10, 51, { round: 0, row: 1, origin: 'draft' }),
];

describe('packSpecView', () => {
  it('groups steps into rounds with their drafts, ends and next tokens', () => {
    const rounds = specRounds(events);
    expect(rounds.map((r) => r.tokens.map((t) => t.id))).toEqual([[10, 11, 12], [20, 21, 22, 23], [30], [50, 51]]);
    expect(rounds.map((r) => r.end)).toEqual(['rejected', 'all-accepted', 'no-draft', 'cut']);
    expect(rounds[0].drafted.map((x) => [x.q, x.p, x.accepted])).toEqual([[0.9, 0.8, true], [1, 0.6, true], [0.7, 0.1, false]]);
    expect(rounds[0].next).toEqual({ id: 20, piece: 't20', origin: 'correction' });
    expect(rounds[1].tokens.map((t) => t.origin)).toEqual(['correction', 'draft', 'draft', 'draft']);
    expect(rounds[3].next).toBeNull();
  });

  it('counts acceptance, histogram, calls per token and acceptance over time from `since`', () => {
    const view = packSpecView(events, { source: 'trace', drafter: null, since: 0 });
    expect(view.steps).toBe(11);
    expect(view.plainSteps).toBe(1);
    const s = view.summary!;
    // 3 complete rounds (the cut one is not counted): 8 tokens fed in 3 target calls
    expect(s.rounds).toBe(3);
    expect(s.tokens).toBe(8);
    expect(s.target_calls_per_token).toBeCloseTo(3 / 8);
    expect(s.drafted).toBe(6);
    expect(s.accepted).toBe(5);
    expect(s.accepted_length_histogram).toEqual([1, 0, 1, 1]);
    expect(s.per_position_acceptance).toEqual([1, 1, 0.5]);
    expect(view.perRound).toEqual([2 / 3, 1, null]);
    [2 / 3, 5 / 6, 5 / 6].forEach((v, i) => expect(view.perRoundAverage[i]).toBeCloseTo(v));
    expect(view.perRoundIds).toEqual([0, 1, 2]);
    expect(view.rounds.map((r) => r.counted)).toEqual([true, true, true, false]);

    const later = packSpecView(events, { source: 'live', drafter: 'lookup:max_ngram=3,k=3', since: 3 });
    expect(later.summary!.rounds).toBe(2);
    expect(later.rounds[0].counted).toBe(false);
    expect(packSpecView(events.slice(0, 1), { source: 'live', drafter: null, since: 0 }).summary).toBeNull();
  });

  it('moving average skips rounds that drafted nothing', () => {
    expect(movingAverage([null, 1, 0, null, 1], 2)).toEqual([null, 1, 0.5, 0.5, 0.5]);
  });
});

describe('the worker with a drafter', () => {
  const sampler = { temperature: 0, topK: 0, topP: 1, seed: 0 };
  const prompt = 'The cat sat on the mat. The cat sat on the mat. The cat sat on the mat. The cat';

  async function host() {
    const log = new EventLog();
    const server = fakeServer();
    const cache = new MemoryCache();
    const h = new EngineHost(log.post, { loadModel, fetch: server.fetch, caches: { open: async () => cache } });
    let next = 1;
    const call = (command: Omit<Command, 'id'>): Promise<EngineEvent> => {
      const id = next++;
      h.handle({ ...command, id } as Command);
      return log.reply(id);
    };
    expect((await call({ type: 'load', modelsUrl: MODELS_URL, wasmUrl: `${ORIGIN}/ort/ort-wasm-simd-threaded.wasm`, threads: 1 } as Omit<Command, 'id'>)).type).toBe('ready');
    return { call, log };
  }
  const tokensOf = (log: EventLog, from: number) => log.of('step').slice(from).map((e) => e.view.token.id);

  it('refuses a bad spec, decodes rounds equal to plain greedy decoding, measures the speed-up, steps back and re-packs an export', async () => {
    const { call, log } = await host();
    const ready = log.of('ready')[0];
    expect(ready.drafters?.map((x) => x.id)).toContain('lookup');

    // plain greedy reference
    expect((await call({ type: 'start', prompt, sampler, policy: { id: 'full', params: {} } } as Omit<Command, 'id'>)).type).toBe('started');
    await call({ type: 'run', steps: 16, stopAtEos: false } as Omit<Command, 'id'>);
    const plain = tokensOf(log, 0);
    expect(plain).toHaveLength(16);

    const bad = await call({ type: 'set-drafter', drafter: 'lookup:k=0' } as Omit<Command, 'id'>);
    expect(bad).toMatchObject({ type: 'error', kind: 'drafter' });
    const unknown = await call({ type: 'set-drafter', drafter: 'lokup' } as Omit<Command, 'id'>);
    expect(unknown).toMatchObject({ type: 'error', kind: 'drafter' });
    expect((unknown as { message: string }).message).toMatch(/did you mean lookup/);
    const none = (await call({ type: 'spec' } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'spec' }>;
    expect(none.view.drafter).toBeNull();

    const set = (await call({ type: 'set-drafter', drafter: 'lookup' } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'drafter' }>;
    expect(set.drafter.spec).toBe('lookup:max_ngram=3,k=10');
    await call({ type: 'start', prompt, sampler, policy: { id: 'full', params: {} } } as Omit<Command, 'id'>);
    const before = log.of('step').length;
    const done = (await call({ type: 'run', steps: 16, stopAtEos: false } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'done' }>;
    expect(done.steps).toBe(16);
    expect(tokensOf(log, before)).toEqual(plain);

    const spec = ((await call({ type: 'spec' } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'spec' }>).view as SpecView;
    expect(spec.drafter).toBe('lookup:max_ngram=3,k=10');
    expect(spec.summary!.tokens).toBe(16);
    expect(spec.summary!.target_calls_per_token).toBeLessThan(1);
    expect(spec.speedup).not.toBeNull();
    expect(spec.speedup!.tokens).toBe(16);
    expect(spec.speedup!.plainMs).toBeGreaterThan(0);
    expect(spec.speedup!.sameTokens).toBe(true);
    expect(spec.speedup!.ratio).toBeCloseTo(spec.speedup!.plainMs / spec.speedup!.speculativeMs);
    // plain decoding replayed twice, the faster counting; its progress posted under the run
    expect(spec.speedup!.plainRunsMs).toHaveLength(2);
    expect(spec.speedup!.plainMs).toBe(Math.min(...spec.speedup!.plainRunsMs));
    const measuring = log.of('spec-measuring', done.id);
    expect(measuring.length).toBeGreaterThan(1);
    expect(measuring.at(-1)).toMatchObject({ done: 32, total: 32 });

    // one Step = one round: the token count may grow by more than one
    const stepped = (await call({ type: 'step' } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'done' }>;
    expect(stepped.steps).toBeGreaterThanOrEqual(1);
    expect(stepped.reason).toBe('length');

    // back into the middle of a round, then an older step inspected (forced replay of drafted tokens)
    const rewound = (await call({ type: 'back', steps: 3 } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'rewound' }>;
    expect(rewound.state.stepCount).toBe(16 + stepped.steps - 3);
    const inspected = (await call({ type: 'inspect', step: 5 } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'inspected' }>;
    expect(inspected.type).toBe('inspected');
    expect(inspected.view.token.id).toBe(plain[5]);
    const afterBack = ((await call({ type: 'spec' } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'spec' }>).view;
    // every kept step is still in a round (the last one maybe cut), with the tokens decoded before
    expect(afterBack.rounds.flatMap((r) => r.tokens.map((t) => t.id))).toEqual(tokensOf(log, before).slice(0, rewound.state.stepCount));

    // an export re-packs the same rounds without the model
    const exported = (await call({ type: 'export-trace' } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'trace' }>;
    expect((await call({ type: 'import-trace', json: exported.json, fileName: 't.json' } as Omit<Command, 'id'>)).type).toBe('imported');
    const replayed = ((await call({ type: 'spec' } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'spec' }>).view;
    expect(replayed.source).toBe('trace');
    expect(replayed.rounds.map((r) => r.tokens.map((t) => t.id))).toEqual(afterBack.rounds.map((r) => r.tokens.map((t) => t.id)));
    expect(replayed.summary!.rounds).toBe(afterBack.summary!.rounds);
  });

  it('with the reference lane on, every step of a speculative Run has the reference metrics of a plain Run', async () => {
    const { call, log } = await host();
    const full = { id: 'full', params: {} };
    expect((await call({ type: 'reference', on: true } as Omit<Command, 'id'>)).type).toBe('ack');

    await call({ type: 'start', prompt, sampler, policy: full } as Omit<Command, 'id'>);
    const plainRun = (await call({ type: 'run', steps: 16, stopAtEos: false } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'done' }>;
    const plain = log.of('step', plainRun.id).map((e) => e.view);
    expect(plain).toHaveLength(16);
    expect(plain.every((v) => v.reference)).toBe(true);

    expect(((await call({ type: 'set-drafter', drafter: 'lookup' } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'drafter' }>).drafter.spec).toBe('lookup:max_ngram=3,k=10');
    await call({ type: 'start', prompt, sampler, policy: full } as Omit<Command, 'id'>);
    const specRun = (await call({ type: 'run', steps: 16, stopAtEos: false } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'done' }>;
    const speculative = log.of('step', specRun.id).map((e) => e.view);
    expect(speculative.map((v) => v.token.id)).toEqual(plain.map((v) => v.token.id));
    // rounds fed several tokens each (one forward for many steps), and still every step was compared
    const view = ((await call({ type: 'spec' } as Omit<Command, 'id'>)) as Extract<EngineEvent, { type: 'spec' }>).view;
    expect(Math.max(...view.rounds.map((r) => r.tokens.length))).toBeGreaterThan(1);
    speculative.forEach((v, i) => {
      const a = v.reference!;
      const b = plain[i].reference!;
      expect(a, `step ${i} has reference metrics`).toBeTruthy();
      expect(Math.abs(a.kl - b.kl)).toBeLessThan(1e-5);
      expect(Math.abs(a.mass - b.mass)).toBeLessThan(1e-5);
      a.massByLayer.forEach((m, l) => expect(Math.abs(m - b.massByLayer[l])).toBeLessThan(1e-5));
      expect(a.agree).toBe(b.agree);
      expect(Math.abs(a.memoryRatio - b.memoryRatio)).toBeLessThan(1e-5);
    });
  });
});
