/** Online speculative decoding drafter on the shipped models: lossless greedy output, acceptance rises with repeated material. */
import { beforeAll, describe, expect, it } from 'vitest';
import type { LoadedModel } from '../../engine/model/load.ts';
import { Session } from '../../engine/session.ts';
import { SpeculativeDecoder } from '../../engine/spec/decoder.ts';
import type { Drafter, DrafterEnv } from '../../engine/spec/drafter.ts';
import { onlineDrafter } from '../../engine/spec/drafters/online.ts';
import { parseDraftSpec } from '../../engine/spec/spec.ts';
import { heldoutPrompt, shippedEnv, shippedModel } from './helpers/models.ts';


let target: LoadedModel;
let env: DrafterEnv;
let prompt: number[];

beforeAll(async () => {
  target = await shippedModel('kvscope-llama-8l');
  env = shippedEnv(target);
  prompt = heldoutPrompt(target.tokenizer!, 'bible-kjv', 1, 48);
});

async function drafter(text: string): Promise<Drafter> {
  const spec = parseDraftSpec(text, [onlineDrafter]);
  return onlineDrafter.create(spec!.params, env);
}

const mean = (values: (number | null)[]): number => {
  const kept = values.filter((v): v is number => v !== null);
  return kept.reduce((s, v) => s + v, 0) / Math.max(1, kept.length);
};

describe('online drafter', () => {
  it('parses to a canonical spec with every parameter', async () => {
    const d = await drafter('online:lr=1');
    expect(d.spec).toBe('online:gamma=4,model=kvscope-draft-2l,policy=full,lr=1,update_every=4,order=2');
    expect(() => parseDraftSpec('online:update_every=0', [onlineDrafter])).toThrow(/update_every/);
  });

  for (const policy of ['full', 'snapkv:budget=32']) {
    it(`greedy output under ${policy} is token for token plain greedy decoding`, async () => {
      const reference = new Session(target, { policy, sampler: { temperature: 0 } });
      await reference.prefill(prompt);
      const expected = (await reference.run(32)).steps.map((s) => s.token.id);
      const session = new Session(target, { policy, sampler: { temperature: 0 } });
      await session.prefill(prompt);
      const decoder = new SpeculativeDecoder(session, await drafter('online:update_every=1'));
      expect((await decoder.run(32)).steps.map((s) => s.token.id)).toEqual(expected);
    });
  }

  it('acceptance rises over a session that repeats its material, across target resets', async () => {
    const d = await drafter('online:update_every=1');
    const session = new Session(target, { sampler: { temperature: 0 } });
    const decoder = new SpeculativeDecoder(session, d);
    const passes: number[][] = [];
    let output: number[] | null = null;
    for (let pass = 0; pass < 3; pass++) {
      session.reset();
      await session.prefill(prompt);
      const before = decoder.stats.perRound.length;
      const tokens = (await decoder.run(32)).steps.map((s) => s.token.id);
      // greedy: the same text every pass, whatever the drafter learnt
      if (output) expect(tokens).toEqual(output);
      output = tokens;
      passes.push(decoder.stats.perRound.slice(before).map((a) => a ?? 0));
    }
    const [first, , last] = passes.map(mean);
    expect(last).toBeGreaterThan(first + 0.1);
    expect(passes[2].length).toBeLessThan(passes[0].length);
    const described = d.describe!();
    expect(described.updates).toBeGreaterThan(0);
    expect(described.trained_positions).toBeGreaterThan(0);
    expect(Number(described.recent_acceptance)).toBeGreaterThan(0);
  });

  it('at temperature > 0 drafts from the adapted distribution, reproducibly from the seed', async () => {
    const run = async (): Promise<number[]> => {
      const session = new Session(target, { sampler: { temperature: 0.8, seed: 11 } });
      await session.prefill(prompt);
      // the decoder checks each q covers the vocabulary and gives its token mass
      const decoder = new SpeculativeDecoder(session, await drafter('online:update_every=1'));
      return (await decoder.run(24)).steps.map((s) => s.token.id);
    };
    expect(await run()).toEqual(await run());
  });
});
