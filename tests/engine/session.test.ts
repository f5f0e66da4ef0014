/** Session behaviour on the fixture model: errors, determinism, snapshots, forks, policy switches, trace. */
import { describe, expect, it } from 'vitest';
import { ContextFullError, SessionError } from '../../engine/errors.ts';
import { maxAbsDiff } from '../../engine/metrics/kl.ts';
import { Session } from '../../engine/session.ts';
import { TRACE_VERSION, exportTraceJson } from '../../engine/trace/schema.ts';
import { fixtureModel, tokenSequence } from './helpers/fixture.ts';

const PROMPT = [1, ...tokenSequence(20, 99)];

async function generate(seed: number, temperature: number, steps = 12, policy = 'full'): Promise<number[]> {
  const session = new Session(await fixtureModel(), { policy, sampler: { seed, temperature } });
  await session.prefill(PROMPT);
  const result = await session.run(steps, { stopAtEos: false });
  return result.steps.map((s) => s.token.id);
}

describe('Session errors', () => {
  it('rejects an empty prompt', async () => {
    const session = new Session(await fixtureModel());
    await expect(session.prefill([])).rejects.toThrow(new SessionError('empty prompt: prefill needs at least one token'));
  });

  it('rejects a prompt longer than the context', async () => {
    const session = new Session(await fixtureModel());
    await expect(session.prefill(tokenSequence(300, 1))).rejects.toThrow("prompt has 300 tokens but the model's context is 256");
    await session.prefill(tokenSequence(200, 1));
    await expect(session.prefill(tokenSequence(60, 1))).rejects.toThrow("prompt has 60 tokens but only 56 of the model's 256 positions are left");
  });

  it('rejects token ids outside the vocabulary and step before prefill', async () => {
    const session = new Session(await fixtureModel());
    await expect(session.step()).rejects.toThrow('nothing to decode yet: call prefill() first');
    await expect(session.prefill([1, 4096])).rejects.toThrow('prompt token 1 id 4096 is outside the vocabulary (0..4095)');
  });

  it('stops with a clear message when the context is full; positions never exceed context − 1', async () => {
    const session = new Session(await fixtureModel(), { sampler: { seed: 3, temperature: 1 } });
    await session.prefill(tokenSequence(250, 4));
    const result = await session.run(20, { stopAtEos: false });
    expect(result.stopReason).toBe('context-full');
    expect(result.steps.length).toBe(6);
    expect(result.steps.at(-1)!.position).toBe(255);
    expect(result.message).toBe("context is full: the next token would need position 256, but the model's context is 256 (positions 0..255)");
    await expect(session.step()).rejects.toBeInstanceOf(ContextFullError);
  });

  it('a window policy does not extend the context: positions keep their token index', async () => {
    const session = new Session(await fixtureModel(), { policy: 'window:size=8' });
    await session.prefill(tokenSequence(254, 4));
    const result = await session.run(5, { stopAtEos: false });
    expect(result.stopReason).toBe('context-full');
    expect(result.steps.length).toBe(2);
  });
});

describe('Session determinism', () => {
  it('same seed ⇒ same tokens; another seed at T > 0 ⇒ different tokens; greedy ignores the seed', async () => {
    const a = await generate(42, 1.0);
    expect(await generate(42, 1.0)).toEqual(a);
    expect(await generate(43, 1.0)).not.toEqual(a);
    expect(await generate(1, 0)).toEqual(await generate(2, 0));
  });

  it('restore() returns to a snapshot and replays identical tokens and logits', async () => {
    const session = new Session(await fixtureModel(), { policy: 'window:size=10', sampler: { seed: 5, temperature: 0.9, topK: 50 } });
    await session.prefill(PROMPT);
    await session.run(5, { stopAtEos: false });
    const snapshot = session.snapshot();
    const traceLength = session.trace.length;
    const first = (await session.run(8, { stopAtEos: false })).steps.map((s) => s.token.id);
    const logitsAfter = session.nextTokenLogits!.slice();
    session.restore(snapshot);
    expect(session.trace.length).toBe(traceLength);
    expect(session.tokens.length).toBe(PROMPT.length + 5);
    const second = (await session.run(8, { stopAtEos: false })).steps.map((s) => s.token.id);
    expect(second).toEqual(first);
    expect(maxAbsDiff(session.nextTokenLogits!, logitsAfter)).toBe(0);
  });

  it('fork() continues independently and identically to the original', async () => {
    const session = new Session(await fixtureModel(), { sampler: { seed: 8, temperature: 1 } });
    await session.prefill(PROMPT);
    await session.run(3, { stopAtEos: false });
    const fork = session.fork();
    const original = (await session.run(6, { stopAtEos: false })).steps.map((s) => s.token.id);
    const forked = (await fork.run(6, { stopAtEos: false })).steps.map((s) => s.token.id);
    expect(forked).toEqual(original);
    // the fork has its own cache and trace
    fork.setPolicy('window:size=4');
    expect(fork.memory().entries[0]).toEqual([4, 4]);
    expect(session.memory().entries[0]).toEqual([PROMPT.length + 9, PROMPT.length + 9]);
    expect(session.trace.all().some((e) => e.kind === 'policy')).toBe(false);
  });
});

describe('Session.run', () => {
  it('stops at EOS, on abort, and reports each step to onStep', async () => {
    const model = await fixtureModel();
    const probe = new Session(model);
    await probe.prefill(PROMPT);
    const greedy = (await probe.run(3, { stopAtEos: false })).steps.map((s) => s.token.id);
    // pretend the third greedy token is EOS
    const eosModel = { ...model, manifest: { ...model.manifest, tokenizer: { ...model.manifest.tokenizer, eos_id: greedy[2] } } };
    const session = new Session(eosModel);
    await session.prefill(PROMPT);
    const seen: number[] = [];
    const result = await session.run(10, { onStep: (s) => void seen.push(s.token.id) });
    expect(result.stopReason).toBe('eos');
    expect(seen).toEqual(greedy.slice(0, greedy.indexOf(greedy[2]) + 1));

    const controller = new AbortController();
    const aborted = new Session(model);
    await aborted.prefill(PROMPT);
    const partial = await aborted.run(10, {
      signal: controller.signal,
      onStep: async (s) => {
        if (s.step === 2) controller.abort();
      },
    });
    expect(partial).toMatchObject({ stopReason: 'aborted' });
    expect(partial.steps.length).toBe(3);
    expect(aborted.stepCount).toBe(3);
  });
});

describe('Session policies and trace', () => {
  it('setPolicy hands the cache to the new policy and the trace marks the switch', async () => {
    const session = new Session(await fixtureModel());
    await session.prefill(PROMPT);
    await session.run(2, { stopAtEos: false });
    const event = session.setPolicy('window:size=5');
    expect(event).toMatchObject({ kind: 'policy', atStep: 2, from: 'full', to: 'window:size=5' });
    expect(event.decision.evicted).toBe((PROMPT.length + 2 - 5) * 2 * 2);
    expect(event.memory.entries).toEqual([
      [5, 5],
      [5, 5],
    ]);
    const step = await session.step();
    expect(step.policy).toBe('window:size=5');
    expect(step.memory.entries).toEqual([
      [5, 5],
      [5, 5],
    ]);
    // the window keeps the newest tokens: the step's own token is the last entry
    expect(Array.from(session.cache.tokens(1, 0))).toEqual([19, 20, 21, 22, 23].map((t) => t));
    expect(step.tokenIndex).toBe(23);
  });

  it('window eviction is visible in the step decision and memory', async () => {
    const session = new Session(await fixtureModel(), { policy: 'window:size=8' });
    const prefill = await session.prefill(PROMPT);
    expect(prefill.trace.decision.evicted).toBe((PROMPT.length - 8) * 4);
    const step = await session.step();
    expect(step.decision.evicted).toBe(4);
    for (const head of step.decision.heads) {
      expect(head.before).toBe(9);
      expect(head.after).toBe(8);
      expect(head.evictedTokens).toEqual([PROMPT.length - 8]);
    }
    expect(step.memory).toMatchObject({ tokens: PROMPT.length + 1, heldEntries: 32, kBytes: 32 * 8 * 4, vBytes: 32 * 8 * 4 });
    expect(step.memory.fullBytes).toBe((PROMPT.length + 1) * 2 * 2 * 8 * 4 * 2);
  });

  it('keeps full attention rows for the last fullSteps steps only, summaries for all', async () => {
    const session = new Session(await fixtureModel(), { trace: { fullSteps: 3, attentionTop: 4 } });
    await session.prefill(PROMPT);
    const returned = (await session.run(10, { stopAtEos: false })).steps;
    const steps = session.trace.steps();
    expect(steps.map((s) => s.attention !== null)).toEqual([false, false, false, false, false, false, false, true, true, true]);
    expect(returned[0].attention).not.toBeNull(); // events are replaced, never mutated
    for (const step of steps) {
      expect(step.attentionTop!.k).toBe(4);
      expect(step.attentionTop!.tokens.length).toBe(2 * 4 * 4);
      // the top entry of each head is the most attended entry of the full row
    }
    const last = steps.at(-1)!;
    const row = last.attention![1].weights[3];
    const best = row.indexOf(Math.max(...row));
    expect(last.attentionTop!.tokens[(1 * 4 + 3) * 4]).toBe(last.attention![1].entries[1].tokens[best]);
    expect(last.topK.length).toBe(10);
    expect(last.topK[0].prob).toBeGreaterThanOrEqual(last.topK[1].prob);

    const json = JSON.parse(exportTraceJson(session.trace));
    expect(json.version).toBe(TRACE_VERSION);
    expect(json.events.length).toBe(11);
    expect(json.events[0].kind).toBe('prefill');
    expect(Array.isArray(json.events[10].attention[0].weights[0])).toBe(true);
  });

  it('records the sampled token with its model probability and readable piece', async () => {
    const model = await fixtureModel();
    const session = new Session(model);
    const { lastLogits } = await session.prefill(PROMPT);
    const step = await session.step();
    let best = 0;
    for (let i = 1; i < lastLogits.length; i++) if (lastLogits[i] > lastLogits[best]) best = i;
    expect(step.token.id).toBe(best);
    expect(step.token.piece).toBe(model.tokenizer.tokenPiece(best));
    expect(step.topK[0].id).toBe(best);
    expect(step.token.prob).toBeCloseTo(step.topK[0].prob, 6);
    expect(step.sampleProb).toBe(1);
  });
});
