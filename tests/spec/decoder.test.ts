/**
 * Speculative decoding on the shipped model (kvscope-llama-8l) and its draft (kvscope-draft-2l):
 * greedy speculative output is token-for-token plain greedy decoding for every registered drafter
 * and several target policies, the target's cache ends up as plain decoding's, and the trace and
 * statistics tell the same story as the rounds.
 */
import { existsSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Session, type EngineModel } from '../../engine/session.ts';
import { createDrafter, DRAFTERS, SpeculativeDecoder, type Drafter, type DrafterEnv } from '../../engine/spec/index.ts';
import type { StepTrace, VerifyTrace } from '../../engine/trace/schema.ts';
import { expectSameCache } from './helpers/cache.ts';
import { shippedModel, STATIC } from './helpers/models.ts';

const INDEXES = join(STATIC, 'indexes');
const TOKENS = 28;
/** full; cache-changing every step once over budget (h2o; streaming below); prefill-only (snapkv); re-encoding (kivi) */
const POLICIES = ['full', 'h2o:heavy=16,recent=16', 'snapkv:budget=32', 'kivi'];
const PROMPT_TEXT = 'The cat sat on the mat. The dog sat on the log. The cat sat on the mat. The dog sat on the';

const model = shippedModel;

function hasIndexFiles(): boolean {
  return existsSync(INDEXES) && readdirSync(INDEXES).length > 0;
}

class NoIndex extends Error {}

/** What a drafter may need: draft models by id, and token index files where static/indexes/ has any. */
function env(target: EngineModel, indexCalls: string[]): DrafterEnv {
  return {
    target,
    loadModel: (id) => model(id),
    async loadIndex(id, file) {
      indexCalls.push(`${id}/${file}`);
      if (!hasIndexFiles()) throw new NoIndex(`no index files under ${INDEXES}`);
      let dir = id;
      if (!dir) dir = (JSON.parse(await readFile(join(INDEXES, 'index.json'), 'utf8')) as { default?: string }).default ?? '';
      return new Uint8Array(await readFile(join(INDEXES, dir, file)));
    },
  };
}

/** The drafter `id` makes with its defaults, or the reason it cannot be made here (no index files). */
async function makeDrafter(id: string, target: EngineModel): Promise<Drafter | string> {
  const indexCalls: string[] = [];
  try {
    const drafter = await createDrafter(id, env(target, indexCalls));
    expect(drafter).not.toBeNull();
    return drafter!;
  } catch (error) {
    if (indexCalls.length > 0 && !hasIndexFiles()) return `drafter ${id} needs a token index (${indexCalls.join(', ')}) and no index files exist under static/indexes/`;
    throw error;
  }
}

async function promptIds(): Promise<number[]> {
  const target = await model('kvscope-llama-8l');
  return target.tokenizer!.encode(PROMPT_TEXT);
}

interface PlainRun {
  tokens: number[];
  session: Session;
}
const plainRuns = new Map<string, Promise<PlainRun>>();
function plainRun(policy: string): Promise<PlainRun> {
  let run = plainRuns.get(policy);
  if (!run) {
    run = (async () => {
      const session = new Session(await model('kvscope-llama-8l'), { policy });
      await session.prefill(await promptIds());
      const result = await session.run(TOKENS, { stopAtEos: false });
      expect(result.steps.length).toBe(TOKENS);
      return { tokens: result.steps.map((s) => s.token.id), session };
    })();
    plainRuns.set(policy, run);
  }
  return run;
}

/** Checks a run's steps against its rounds: contiguous rows, origins, drafted tokens, the verdict on each round's last step. */
function checkTrace(steps: readonly StepTrace[], rounds: readonly VerifyTrace[], firstRound: number): void {
  let at = 0;
  let previous: VerifyTrace | null = null;
  rounds.forEach((verify, r) => {
    const round = firstRound + r;
    const mine: StepTrace[] = [];
    while (at < steps.length && steps[at].speculative?.round === round) mine.push(steps[at++]);
    expect(mine.length, `round ${round} fed a step`).toBeGreaterThanOrEqual(1);
    mine.forEach((step, row) => {
      const spec = step.speculative!;
      expect(spec.row).toBe(row);
      // only the round's last step carries the verdict, and it is this round's
      if (row === mine.length - 1) expect(spec.verify).toBe(verify);
      else expect(spec.verify).toBeUndefined();
      if (row === 0) {
        // the token the previous round drew comes first, with its origin
        if (previous) {
          expect(step.token.id).toBe(previous.next.id);
          expect(spec.origin).toBe(previous.next.origin);
        } else expect(spec.origin).toBe('target');
      } else {
        expect(spec.origin).toBe('draft');
        expect(step.token.id).toBe(verify.drafted[row - 1].id);
        expect(verify.drafted[row - 1].accepted).toBe(true);
      }
    });
    // accepted drafts lead, then nothing is accepted
    verify.drafted.forEach((d, i) => expect(d.accepted, `round ${round} draft ${i}`).toBe(i < verify.accepted));
    // the accepted drafts and a rejected one were verified (they have p); those after them never were
    const verified = verify.accepted + (verify.end === 'rejected' ? 1 : 0);
    verify.drafted.forEach((d, i) => {
      if (i < verified) expect(d.p, `round ${round} draft ${i} p`).not.toBeNull();
      else expect(d.p, `round ${round} draft ${i} p`).toBeNull();
    });
    expect(verify.drafted.length).toBeLessThanOrEqual(verify.gamma);
    switch (verify.end) {
      case 'rejected':
        expect(mine.length).toBe(verify.accepted + 1);
        expect(verify.next.origin).toBe('correction');
        expect(verify.next.id).not.toBe(verify.drafted[verify.accepted].id);
        break;
      case 'all-accepted':
        expect(verify.drafted.length).toBeGreaterThan(0);
        expect(verify.accepted).toBe(verify.drafted.length);
        expect(mine.length).toBe(verify.accepted + 1);
        expect(verify.next.origin).toBe('bonus');
        break;
      case 'cache-changed':
        // the accepted draft after the cut is fed first next round
        expect(verify.accepted).toBe(mine.length);
        expect(verify.next.origin).toBe('draft');
        expect(verify.next.id).toBe(verify.drafted[verify.accepted - 1].id);
        break;
      case 'no-draft':
        expect(verify.drafted.length).toBe(0);
        expect(mine.length).toBe(1);
        expect(verify.next.origin).toBe('target');
        break;
      case 'eos':
        break;
    }
    previous = verify;
  });
  expect(at, 'every step belongs to a round').toBe(steps.length);
}

const targetPromise = model('kvscope-llama-8l');

describe('greedy speculative decoding = plain greedy decoding (kvscope-llama-8l)', () => {
  it('the registry has the drafters this suite expects at least', () => {
    expect(DRAFTERS.map((d) => d.id)).toEqual(expect.arrayContaining(['model', 'lookup', 'self']));
  });

  for (const definition of DRAFTERS) {
    for (const policy of POLICIES) {
      it(`${definition.id} drafter, target policy ${policy}: same tokens, same cache, consistent trace and stats`, async (ctx) => {
        const target = await targetPromise;
        const drafter = await makeDrafter(definition.id, target);
        if (typeof drafter === 'string') {
          ctx.skip(drafter);
          return;
        }
        const plain = await plainRun(policy);
        const session = new Session(target, { policy });
        await session.prefill(await promptIds());
        const decoder = new SpeculativeDecoder(session, drafter);
        const result = await decoder.run(TOKENS, { stopAtEos: false });
        expect(result.stopReason).toBe('length');
        expect(result.steps.map((s) => s.token.id)).toEqual(plain.tokens);
        expect(session.tokens).toEqual(plain.session.tokens);
        expect(session.position).toBe(plain.session.position);
        expect(session.stepCount).toBe(plain.session.stepCount);
        expectSameCache(session.cache, plain.session.cache, 1e-4, `${definition.id} / ${policy}`);
        // the pending logits agree too (so the next token would)
        const pending = session.nextTokenLogits!;
        const reference = plain.session.nextTokenLogits!;
        let worst = 0;
        for (let i = 0; i < pending.length; i++) worst = Math.max(worst, Math.abs(pending[i] - reference[i]));
        expect(worst).toBeLessThan(1e-3);

        // trace: every step speculative, consistent with its round's verdict; the session's trace holds them
        checkTrace(result.steps, result.rounds, 0);
        const recorded = session.trace.steps();
        expect(recorded.length).toBe(TOKENS);
        expect(recorded.map((s) => s.speculative?.round)).toEqual(result.steps.map((s) => s.speculative!.round));
        // greedy: the target's token always had probability 1 under its (one-hot) distribution; rejected drafts 0
        for (const verify of result.rounds) {
          verify.drafted.forEach((d, i) => {
            if (d.p !== null) expect(d.p).toBe(i < verify.accepted ? 1 : 0);
          });
        }

        // statistics
        const stats = decoder.stats.summary();
        expect(stats.drafter).toBe(drafter.spec);
        expect(stats.gamma).toBe(drafter.gamma);
        expect(stats.tokens).toBe(result.steps.length);
        expect(stats.rounds).toBe(result.rounds.length);
        expect(stats.target_calls).toBe(result.rounds.length);
        expect(decoder.rounds).toBe(result.rounds.length);
        const drafted = result.rounds.reduce((n, v) => n + v.drafted.length, 0);
        const accepted = result.rounds.reduce((n, v) => n + v.accepted, 0);
        const verified = result.rounds.reduce((n, v) => n + v.drafted.filter((d) => d.p !== null).length, 0);
        expect(stats.drafted).toBe(drafted);
        expect(stats.verified).toBe(verified);
        expect(stats.accepted).toBe(accepted);
        expect(stats.accepted).toBeLessThanOrEqual(stats.verified);
        expect(stats.verified).toBeLessThanOrEqual(stats.drafted);
        // α counts what the target checked: drafts after a round's end are not the drafter's misses
        expect(stats.acceptance_rate).toBeCloseTo(verified ? accepted / verified : 0, 12);
        expect(stats.mean_accepted_length).toBeCloseTo(stats.tokens / stats.rounds, 12);
        expect(stats.target_calls_per_token).toBeCloseTo(stats.rounds / stats.tokens, 12);
        for (const share of stats.per_position_acceptance) {
          expect(share).toBeGreaterThanOrEqual(0);
          expect(share).toBeLessThanOrEqual(1);
        }
        expect(stats.per_position_acceptance.length).toBeLessThanOrEqual(drafter.gamma);
        expect(stats.accepted_length_histogram.reduce((a, b) => a + b, 0)).toBe(stats.rounds);
        expect(stats.accepted_length_histogram.reduce((n, c, k) => n + c * k, 0)).toBe(stats.accepted);
        expect(Object.values(stats.round_ends).reduce((a, b) => a + b, 0)).toBe(stats.rounds);
        expect(decoder.stats.perRound.length).toBe(stats.rounds);
        // a round feeds at most γ + 1 tokens
        expect(stats.rounds).toBeGreaterThanOrEqual(Math.ceil(TOKENS / (drafter.gamma + 1)));
        if (policy === 'full') {
          // nothing cuts a round under the full cache; a drafter that drafts here saves target calls
          expect(stats.round_ends['cache-changed'] ?? 0).toBe(0);
          if (drafted > 0 && accepted > 0) expect(stats.rounds).toBeLessThan(TOKENS);
        }
      });
    }
  }

  it('the prompt repeats itself, so prompt lookup drafts and saves target calls under full', async () => {
    const target = await targetPromise;
    const drafter = (await makeDrafter('lookup', target)) as Drafter;
    const session = new Session(target);
    await session.prefill(await promptIds());
    const decoder = new SpeculativeDecoder(session, drafter);
    await decoder.run(TOKENS, { stopAtEos: false });
    const stats = decoder.stats.summary();
    expect(stats.accepted).toBeGreaterThan(0);
    expect(stats.round_ends.rejected ?? 0).toBeGreaterThan(0);
    expect(stats.rounds).toBeLessThan(TOKENS);
  });

  it('a policy that changes the cache every step cuts rounds (cache-changed) and still decodes exactly', async () => {
    const target = await targetPromise;
    const drafter = (await makeDrafter('self', target)) as Drafter;
    const session = new Session(target, { policy: 'streaming:sinks=4,recent=12' });
    await session.prefill(await promptIds());
    const decoder = new SpeculativeDecoder(session, drafter);
    const result = await decoder.run(16, { stopAtEos: false });
    const stats = decoder.stats.summary();
    expect(stats.round_ends['cache-changed'] ?? 0).toBeGreaterThan(0);
    const plain = new Session(target, { policy: 'streaming:sinks=4,recent=12' });
    await plain.prefill(await promptIds());
    const reference = await plain.run(16, { stopAtEos: false });
    expect(result.steps.map((s) => s.token.id)).toEqual(reference.steps.map((s) => s.token.id));
    expectSameCache(session.cache, plain.cache, 1e-4, 'streaming recent=12');
  });

  it('continues exactly after the target was stepped by hand between runs', async () => {
    const target = await targetPromise;
    const plain = await plainRun('full');
    const drafter = (await makeDrafter('model', target)) as Drafter;
    const session = new Session(target);
    await session.prefill(await promptIds());
    const decoder = new SpeculativeDecoder(session, drafter);
    const first = await decoder.run(10, { stopAtEos: false });
    await session.step(); // plain greedy step outside the decoder: the decoder's drawn `next` is stale
    const second = await decoder.run(TOKENS - 11, { stopAtEos: false });
    expect(session.tokens).toEqual(plain.session.tokens);
    expect(first.steps.length + 1 + second.steps.length).toBe(TOKENS);
    checkTrace(second.steps, second.rounds, first.rounds.length);
  });
});
