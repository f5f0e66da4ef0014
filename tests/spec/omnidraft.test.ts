/** OmniDraft drafter on the shipped models: lossless greedy output, the n-gram cache learns, the draft length adapts. */
import { beforeAll, describe, expect, it } from 'vitest';
import type { LoadedModel } from '../../engine/model/load.ts';
import { Session } from '../../engine/session.ts';
import { SpeculativeDecoder } from '../../engine/spec/decoder.ts';
import type { Drafter, DrafterEnv } from '../../engine/spec/drafter.ts';
import { omnidraftDrafter } from '../../engine/spec/drafters/omnidraft.ts';
import { parseDraftSpec } from '../../engine/spec/spec.ts';
import { heldoutPrompt, shippedEnv, shippedModel } from './helpers/models.ts';


let target: LoadedModel;
let env: DrafterEnv;
let prompt: number[];

beforeAll(async () => {
  target = await shippedModel('kvscope-llama-8l');
  env = shippedEnv(target);
  prompt = heldoutPrompt(target.tokenizer!, 'bible-kjv', 0, 48);
});

async function drafter(text: string): Promise<Drafter> {
  const spec = parseDraftSpec(text, [omnidraftDrafter]);
  return omnidraftDrafter.create(spec!.params, env);
}

async function plain(steps: number, policy: string): Promise<number[]> {
  const session = new Session(target, { policy, sampler: { temperature: 0 } });
  await session.prefill(prompt);
  return (await session.run(steps)).steps.map((s) => s.token.id);
}

const mean = (values: (number | null)[]): number => {
  const kept = values.filter((v): v is number => v !== null);
  return kept.reduce((s, v) => s + v, 0) / Math.max(1, kept.length);
};

describe('omnidraft drafter', () => {
  it('parses to a canonical spec with every parameter', async () => {
    const d = await drafter('omnidraft:max_gamma=6');
    expect(d.spec).toBe('omnidraft:max_gamma=6,threshold=0.1,n=4,model=kvscope-draft-2l,policy=full');
    expect(d.gamma).toBe(6);
    expect(() => parseDraftSpec('omnidraft:threshold=1.5', [omnidraftDrafter])).toThrow(/threshold/);
  });

  for (const [spec, policy] of [['omnidraft', 'full'], ['omnidraft', 'snapkv:budget=32'], ['omnidraft:model=none', 'full'], ['omnidraft:model=none', 'snapkv:budget=32']] as const) {
    it(`greedy ${spec} under ${policy} is token for token plain greedy decoding`, async () => {
      const expected = await plain(32, policy);
      const session = new Session(target, { policy, sampler: { temperature: 0 } });
      await session.prefill(prompt);
      const decoder = new SpeculativeDecoder(session, await drafter(spec));
      const result = await decoder.run(32);
      expect(result.steps.map((s) => s.token.id)).toEqual(expected);
      expect(decoder.stats.summary().tokens).toBe(32);
    });
  }

  it('the cache learns the target: a repeated text is drafted better the second time, after a reset', async () => {
    const d = await drafter('omnidraft:model=none');
    const session = new Session(target, { sampler: { temperature: 0 } });
    await session.prefill(prompt);
    const decoder = new SpeculativeDecoder(session, d);
    const first = (await decoder.run(32)).steps.map((s) => s.token.id);
    const firstRounds = decoder.stats.perRound.length;
    // the same text again: state survives the target's reset, and the cache has every continuation
    session.reset();
    await session.prefill(prompt);
    const second = (await decoder.run(32)).steps.map((s) => s.token.id);
    expect(second).toEqual(first);
    // a round that drafted nothing (no cache entry yet) accepted nothing
    const acceptance = (rounds: (number | null)[]): number => mean(rounds.map((a) => a ?? 0));
    const before = acceptance(decoder.stats.perRound.slice(0, firstRounds));
    const after = acceptance(decoder.stats.perRound.slice(firstRounds));
    expect(after).toBeGreaterThan(before + 0.2);
    expect(decoder.stats.perRound.length - firstRounds).toBeLessThan(firstRounds);
    const described = d.describe!();
    expect(described.cache_entries).toBeGreaterThan(0);
    expect(described.cache_hits).toBeGreaterThan(0);
  });

  it('stops drafting early when the predicted acceptance falls below the threshold', async () => {
    const d = await drafter('omnidraft:max_gamma=8,threshold=0.6');
    const session = new Session(target, { sampler: { temperature: 0 } });
    await session.prefill(prompt);
    const decoder = new SpeculativeDecoder(session, d);
    const gauges: number[] = [];
    const { rounds } = await decoder.run(32, { onRound: () => void gauges.push(d.lastGauge!() ?? 1) });
    const full = rounds.filter((r) => r.gamma === 8);
    expect(full.length).toBeGreaterThan(3);
    expect(full.every((r) => r.drafted.length >= 1)).toBe(true);
    expect(full.filter((r) => r.drafted.length < 8).length).toBeGreaterThan(full.length / 2);
    expect(gauges.every((g) => g >= 0 && g <= 1)).toBe(true);
    expect(Number(d.describe!().predicted_acceptance)).toBeGreaterThan(0);
  });

  it('at temperature > 0 drafts with a real distribution and is reproducible from the seed', async () => {
    const run = async (): Promise<number[]> => {
      const session = new Session(target, { sampler: { temperature: 0.8, seed: 7 } });
      await session.prefill(prompt);
      // the decoder checks each q covers the vocabulary and gives its token mass
      const decoder = new SpeculativeDecoder(session, await drafter('omnidraft'));
      return (await decoder.run(24)).steps.map((s) => s.token.id);
    };
    expect(await run()).toEqual(await run());
  });
});
