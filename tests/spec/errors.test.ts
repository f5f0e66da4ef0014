/** Clear errors: a draft model with another tokenizer, no draft model, γ ≤ 0, drafters that misbehave. */
import { describe, expect, it } from 'vitest';
import { ContextFullError, DraftSpecError, SessionError } from '../../engine/errors.ts';
import { Session, type EngineModel } from '../../engine/session.ts';
import { tokenizerMismatch } from '../../engine/spec/drafters/session-drafter.ts';
import { createDrafter, SpeculativeDecoder, type Drafter, type DraftProposal } from '../../engine/spec/index.ts';
import { fixtureModel } from '../engine/helpers/fixture.ts';
import { expectSameCache } from './helpers/cache.ts';
import { shippedModel } from './helpers/models.ts';

const model = shippedModel;

/** `base` with its manifest edited (a deep copy: the loaded model is shared). */
function withManifest(base: EngineModel, edit: (manifest: EngineModel['manifest']) => void, tokenizer = base.tokenizer): EngineModel {
  const manifest = structuredClone(base.manifest);
  edit(manifest);
  return { ...base, manifest, tokenizer };
}

async function draftError(target: EngineModel, draft: EngineModel, spec = 'model'): Promise<DraftSpecError> {
  try {
    await createDrafter(spec, { target, loadModel: async () => draft });
  } catch (error) {
    expect(error).toBeInstanceOf(DraftSpecError);
    return error as DraftSpecError;
  }
  throw new Error('the drafter was created');
}

describe('a draft model with another tokenizer', () => {
  it('another vocabulary size', async () => {
    const [target, draft] = await Promise.all([model('kvscope-llama-8l'), model('kvscope-draft-2l')]);
    const other = withManifest(draft, (m) => (m.architecture.vocab_size = 4000));
    expect((await draftError(target, other)).message).toBe("model: kvscope-draft-2l cannot draft for kvscope-llama-8l: its vocabulary has 4000 tokens, the target's 4096");
  });

  it('other special token ids', async () => {
    const [target, draft] = await Promise.all([model('kvscope-llama-8l'), model('kvscope-draft-2l')]);
    expect((await draftError(target, withManifest(draft, (m) => (m.tokenizer.eos_id = 3)))).message).toBe("model: kvscope-draft-2l cannot draft for kvscope-llama-8l: its tokenizer.eos_id is 3, the target's 2");
    expect((await draftError(target, withManifest(draft, (m) => (m.tokenizer.add_bos = false)))).message).toBe("model: kvscope-draft-2l cannot draft for kvscope-llama-8l: its tokenizer.add_bos is false, the target's true");
  });

  it('another tokenizer.json: compared token by token, the first differing token named', async () => {
    const [target, draft] = await Promise.all([model('kvscope-llama-8l'), model('kvscope-draft-2l')]);
    const edit = (m: EngineModel['manifest']) => {
      const file = m.files.find((f) => f.path === m.tokenizer.file)!;
      file.sha256 = '0'.repeat(64);
    };
    // same tokens under another sha256: still compatible
    expect(tokenizerMismatch(target, withManifest(draft, edit))).toBeNull();
    // a token spelled differently
    const real = draft.tokenizer!;
    const renamed = Object.create(real) as typeof real;
    renamed.rawToken = (id: number) => (id === 77 ? '<renamed>' : real.rawToken(id));
    const message = (await draftError(target, withManifest(draft, edit, renamed))).message;
    expect(message).toBe(`model: kvscope-draft-2l cannot draft for kvscope-llama-8l: its token 77 is "<renamed>", the target's ${JSON.stringify(target.tokenizer!.rawToken(77))}`);
    // and without a tokenizer to compare
    expect((await draftError(target, withManifest(draft, edit, null))).message).toContain('cannot be compared token by token');
  });

  it('the shipped draft model is compatible, and is the one the target names', async () => {
    const [target, draft] = await Promise.all([model('kvscope-llama-8l'), model('kvscope-draft-2l')]);
    expect(tokenizerMismatch(target, draft)).toBeNull();
    expect(target.manifest.draft).toBe('kvscope-draft-2l');
    const asked: string[] = [];
    const drafter = await createDrafter('model', { target, loadModel: async (id) => (asked.push(id), draft) });
    expect(asked).toEqual(['kvscope-draft-2l']);
    expect(drafter!.spec).toBe('model:gamma=4,model=kvscope-draft-2l,policy=full');
  });
});

describe('no draft model', () => {
  it("a target that names none, with model=''", async () => {
    const fixture = await fixtureModel();
    expect(fixture.manifest.draft).toBeUndefined();
    const loadModel = async () => fixture as EngineModel;
    await expect(createDrafter('model', { target: fixture, loadModel })).rejects.toThrow(new DraftSpecError('model: the target tiny-fixture names no draft model; give one with model=ID'));
    await expect(createDrafter('model:model=', { target: fixture, loadModel })).rejects.toThrow(DraftSpecError);
  });

  it('nowhere to load one from', async () => {
    const target = await model('kvscope-llama-8l');
    await expect(createDrafter('model', { target })).rejects.toThrow(new DraftSpecError('model: no draft model can be loaded here'));
  });

  it('a loader that fails: its error propagates', async () => {
    const target = await model('kvscope-llama-8l');
    await expect(createDrafter('model:model=missing-model', { target, loadModel: async (id) => Promise.reject(new Error(`no model ${id}`)) })).rejects.toThrow('no model missing-model');
  });
});

/** A drafter double proposing what it is told. */
function scripted(gamma: number, proposal: () => DraftProposal, spec = 'test:scripted'): Drafter {
  return { spec, gamma, propose: async () => proposal() };
}

describe('γ ≤ 0 and misbehaving drafters', () => {
  it('a drafter with γ ≤ 0 or a non-integer γ is refused by the decoder', async () => {
    const session = new Session(await fixtureModel());
    for (const gamma of [0, -1, 1.5, Number.NaN]) {
      expect(() => new SpeculativeDecoder(session, scripted(gamma, () => ({ tokens: [], q: [], confidence: [] })))).toThrow(new DraftSpecError(`drafter test:scripted: γ must be an integer ≥ 1, got ${gamma}`));
    }
  });

  it('γ ≤ 0 in a hand-made spec object is refused when the drafter is created', async () => {
    const target = await model('kvscope-llama-8l');
    const env = { target, loadModel: (id: string) => model(id) };
    await expect(createDrafter({ id: 'lookup', params: { max_ngram: 3, k: 0 } }, env)).rejects.toThrow('lookup: k must be an integer in [1, 32], got "0"');
    await expect(createDrafter({ id: 'self', params: { gamma: -1, policy: 'full' } }, env)).rejects.toThrow('self: gamma must be an integer in [1, 32], got "-1"');
    await expect(createDrafter({ id: 'model', params: { gamma: 0, model: '', policy: 'full' } }, env)).rejects.toThrow('model: gamma must be an integer in [1, 32], got "0"');
  });

  it('proposals the decoder cannot use: clear errors, the target untouched', async () => {
    const session = new Session(await fixtureModel());
    await session.prefill([1, 10, 11, 12, 13, 14]);
    const before = session.fork();
    const vocab = session.dims.vocabSize;
    const q = new Float64Array(vocab);
    q[7] = 1;
    const cases: [DraftProposal, string][] = [
      [{ tokens: [5, 6, 7], q: [null, null, null], confidence: [1, 1, 1] }, 'drafter test:scripted proposed 3 tokens where at most 2 were asked for'],
      [{ tokens: [5], q: [], confidence: [1] }, 'drafter test:scripted gave 0 distributions and 1 confidences for 1 tokens'],
      [{ tokens: [vocab], q: [null], confidence: [1] }, `drafter test:scripted proposed token ${vocab} at position 0, outside the vocabulary (0..${vocab - 1})`],
      [{ tokens: [2.5], q: [null], confidence: [1] }, 'drafter test:scripted proposed token 2.5 at position 0, outside the vocabulary'],
      [{ tokens: [8], q: [q], confidence: [1] }, 'drafter test:scripted: the distribution of draft token 0 must cover the vocabulary and give the token mass'],
      [{ tokens: [7], q: [new Float64Array(10)], confidence: [1] }, 'drafter test:scripted: the distribution of draft token 0 must cover the vocabulary and give the token mass'],
    ];
    for (const [proposal, message] of cases) {
      const decoder = new SpeculativeDecoder(session, scripted(2, () => proposal));
      await expect(decoder.round()).rejects.toThrow(DraftSpecError);
      await expect(new SpeculativeDecoder(session, scripted(2, () => proposal)).round()).rejects.toThrow(message);
      expect(session.tokens).toEqual(before.tokens);
      expect(decoder.rounds).toBe(0);
    }
    // a drafter that throws: its error as is, the target untouched
    const failing: Drafter = { spec: 'test:failing', gamma: 2, propose: async () => Promise.reject(new Error('drafter broke')) };
    await expect(new SpeculativeDecoder(session, failing).round()).rejects.toThrow('drafter broke');
    expect(session.tokens).toEqual(before.tokens);
    expect(session.position).toBe(before.position);
    expect(session.trace.length).toBe(before.trace.length);
    expectSameCache(session.cache, before.cache, 0, 'after failed rounds');
  });

  it('a round before prefill, and at a full context', async () => {
    const fixture = await fixtureModel();
    const empty = new Session(fixture);
    await expect(new SpeculativeDecoder(empty, scripted(2, () => ({ tokens: [], q: [], confidence: [] }))).round()).rejects.toThrow(new SessionError('nothing to decode yet: call prefill() first'));
    const full = new Session(fixture);
    await full.prefill(Array.from({ length: fixture.forward.dims.contextLength - 1 }, (_, i) => 3 + i));
    // one position left: the drafter is asked for nothing, one token is fed, then the context is full
    let asked = 0;
    const decoder = new SpeculativeDecoder(full, { spec: 'test:count', gamma: 4, propose: async () => (asked++, { tokens: [], q: [], confidence: [] }) });
    const result = await decoder.run(5, { stopAtEos: false });
    expect(asked).toBe(0);
    expect(result.steps.length).toBe(1);
    expect(result.stopReason).toBe('context-full');
    expect(result.message).toContain("the model's context is 256");
    await expect(decoder.round()).rejects.toThrow(ContextFullError);
    await expect(decoder.round()).rejects.toThrow("the model's context is 256 (positions 0..255)");
  });
});
