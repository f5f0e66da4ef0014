/** The held-out needle family (engine/metrics/needle-family.ts): schema, keys, prompts, scoring, tallies. */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { encodeBare, fillerSentences } from '../../engine/metrics/heldout.ts';
import {
  NeedleFamilyError,
  buildFamilyPrompt,
  drawKey,
  familyDecodeTokens,
  familyKey,
  familyPrompts,
  familySeed,
  familySuccess,
  familyTrialShape,
  parseNeedleFamily,
  runFamilyTrial,
  summarizeFamily,
  type FamilyTrial,
  type NeedleFamily,
} from '../../engine/metrics/needle-family.ts';
import { Xoshiro128 } from '../../engine/sampling.ts';
import { Session } from '../../engine/session.ts';
import { fixtureModel } from './helpers/fixture.ts';

const FAMILY_FILE = new URL('../fixtures/needle-family/needle-family.json', import.meta.url);

async function fixtureJson(): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(FAMILY_FILE, 'utf8')) as Record<string, unknown>;
}

async function fixtureFamily(): Promise<NeedleFamily> {
  return parseNeedleFamily(await fixtureJson(), 'needle-family.json');
}

describe('parseNeedleFamily', () => {
  it('accepts the fixture and keeps every field', async () => {
    const family = await fixtureFamily();
    expect(family.version).toBe(1);
    expect(family.wordings.map((w) => w.id)).toEqual(['vault-code', 'locker-number']);
    expect(family.wordings[0]).toEqual({
      id: 'vault-code',
      needle: 'Note: the access code for the vault is {key}.',
      question: 'What was the access code for the vault? The access code for the vault is',
      key: 'LL-DDDD',
    });
    expect(family.filler.map((f) => f.src)).toEqual(['harbour-notes', 'garden-manual']);
    expect(family.filler[0].documents).toHaveLength(3);
  });

  it('names the file and the field of what is malformed', async () => {
    const cases: [(json: Record<string, unknown>) => void, string][] = [
      [(j) => (j.version = 2), 'version must be 1, got 2'],
      [(j) => delete j.version, 'version must be 1, got nothing'],
      [(j) => delete j.wordings, 'wordings must be an array'],
      [(j) => (j.wordings = []), 'wordings must not be empty'],
      [(j) => ((j.wordings as Record<string, unknown>[])[1].needle = 'Locker seven holds the lantern.'), 'wordings[1].needle must contain "{key}"'],
      [(j) => ((j.wordings as Record<string, unknown>[])[0].needle = 'Code {key}.\nMore.'), 'wordings[0].needle must be one line (no newline)'],
      [(j) => ((j.wordings as Record<string, unknown>[])[1].id = 'vault-code'), 'wordings[1].id "vault-code" is used twice'],
      [(j) => ((j.wordings as Record<string, unknown>[])[0].key = 'XX-9'), 'wordings[0].key must contain at least one D (digit) or L (letter), got "XX-9"'],
      [(j) => ((j.wordings as Record<string, unknown>[])[0].question = 42), 'wordings[0].question must be a string, got number'],
      [(j) => delete (j.wordings as Record<string, unknown>[])[0].key, 'wordings[0].key must be a string, got undefined'],
      [(j) => ((j.wordings as unknown[])[0] = 'vault'), 'wordings[0] must be an object {id, needle, question, key}'],
      [(j) => ((j.filler as Record<string, unknown>[])[1].documents = 'text'), 'filler[1].documents must be an array'],
      [(j) => ((j.filler as Record<string, unknown>[])[0].documents = ['fine text here.', null]), 'filler[0].documents[1] must be a string, got null'],
      [(j) => ((j.filler as Record<string, unknown>[])[0].documents = ['Short. Has 3 digits in it, so it goes.']), 'filler[0].documents hold no usable filler sentence'],
      [(j) => ((j.filler as Record<string, unknown>[])[1].src = 'harbour-notes'), 'filler[1].src "harbour-notes" is used twice'],
      [(j) => delete (j.filler as Record<string, unknown>[])[0].licence, 'filler[0].licence must be a string, got undefined'],
    ];
    for (const [spoil, message] of cases) {
      const json = await fixtureJson();
      spoil(json);
      let error: unknown;
      try {
        parseNeedleFamily(json, 'family.json');
      } catch (e) {
        error = e;
      }
      expect(error, message).toBeInstanceOf(NeedleFamilyError);
      expect((error as Error).message).toContain(`family.json: ${message}`);
    }
    expect(() => parseNeedleFamily([], 'f.json')).toThrow('f.json: the file must be a JSON object');
  });
});

describe('keys and seeds', () => {
  it('draws D as a digit and L as a capital letter, other characters literal', () => {
    const rng = new Xoshiro128(7);
    const keys = Array.from({ length: 200 }, () => drawKey('LL-DDDD', rng));
    for (const key of keys) expect(key).toMatch(/^[A-Z]{2}-\d{4}$/);
    expect(new Set(keys.map((k) => k[3])).size).toBe(10); // every digit shows up
    expect(new Set(keys.flatMap((k) => [k[0], k[1]])).size).toBe(26); // every letter too
    expect(drawKey('#D/x', new Xoshiro128(1))).toMatch(/^#\d\/x$/);
    expect(familyKey('DDDDD', 99)).toBe(familyKey('DDDDD', 99));
  });

  it('seeds depend on seed, wording, filler source and trial', () => {
    const base = familySeed(0, 'vault-code', 'harbour-notes', 0);
    expect(familySeed(0, 'vault-code', 'harbour-notes', 0)).toBe(base);
    const others = [familySeed(1, 'vault-code', 'harbour-notes', 0), familySeed(0, 'locker-number', 'harbour-notes', 0), familySeed(0, 'vault-code', 'garden-manual', 0), familySeed(0, 'vault-code', 'harbour-notes', 1)];
    expect(new Set([base, ...others]).size).toBe(5);
    for (const s of [base, ...others]) expect(Number.isInteger(s) && s >= 0 && s <= 0xffffffff).toBe(true);
  });

  it('scores an answer by its trimmed start', () => {
    expect(familySuccess(' AB-1234.', 'AB-1234')).toBe(true);
    expect(familySuccess('\nAB-1234 and more', 'AB-1234')).toBe(true);
    expect(familySuccess(' AB-123', 'AB-1234')).toBe(false);
    expect(familySuccess(' XAB-1234', 'AB-1234')).toBe(false);
    expect(familySuccess('', '123')).toBe(false);
  });

  it('spreads depths over [0, 1] and lengths over [min, max]', () => {
    const shapes = Array.from({ length: 10 }, (_, i) => familyTrialShape(i, 10, { min: 256, max: 1000 }));
    expect(shapes[0].depth).toBe(0);
    expect(shapes[9].depth).toBe(1);
    for (const s of shapes) expect(s.targetTokens >= 256 && s.targetTokens <= 1000).toBe(true);
    const sorted = shapes.map((s) => s.targetTokens).sort((a, b) => a - b);
    expect(sorted[0]).toBeLessThan(400);
    expect(sorted[9]).toBeGreaterThan(850);
  });
});

describe('buildFamilyPrompt', () => {
  it('puts the needle on its own line at the depth and ends with "\\n" + the question', async () => {
    const { tokenizer } = await fixtureModel();
    const family = await fixtureFamily();
    const wording = family.wordings[0];
    const sentences = fillerSentences(family.filler[0].documents);
    const needleOf = (key: string) => `Note: the access code for the vault is ${key}.`;

    const middle = buildFamilyPrompt(tokenizer!, sentences, wording, { targetTokens: 200, depth: 0.5, seed: 5, source: 'harbour-notes' });
    expect(middle.key).toMatch(/^[A-Z]{2}-\d{4}$/);
    expect(middle.key).toBe(familyKey(wording.key, 5));
    expect(middle.text).toContain(`.\n${needleOf(middle.key)}\n`);
    expect(middle.text.endsWith(`\n${wording.question}`)).toBe(true);
    expect(middle.text).not.toContain('{key}');
    expect(middle.ids).toEqual(tokenizer!.encode(middle.text));
    expect(middle.ids[0]).toBe(tokenizer!.bosId);
    expect(middle.sentenceDepth).toBeGreaterThan(0.2);
    expect(middle.sentenceDepth).toBeLessThan(0.8);
    expect(middle.decodeTokens).toBe(encodeBare(tokenizer!, ` ${middle.key}`).length + 2);
    expect(middle.decodeTokens).toBe(familyDecodeTokens(tokenizer!, middle.key));

    const first = buildFamilyPrompt(tokenizer!, sentences, wording, { targetTokens: 200, depth: 0, seed: 5, source: 'harbour-notes' });
    expect(first.text.startsWith(`${needleOf(first.key)}\n`)).toBe(true);
    const last = buildFamilyPrompt(tokenizer!, sentences, wording, { targetTokens: 200, depth: 1, seed: 5, source: 'harbour-notes' });
    expect(last.text.endsWith(`.\n${needleOf(last.key)}\n${wording.question}`)).toBe(true);
  });

  it('stays within the target (and within a sentence of it), deterministic per seed', async () => {
    const { tokenizer } = await fixtureModel();
    const family = await fixtureFamily();
    const sentences = fillerSentences(family.filler[1].documents);
    const longest = Math.max(...sentences.map((s) => encodeBare(tokenizer!, ` ${s}`).length));
    for (const target of [80, 150, 240]) {
      const prompt = buildFamilyPrompt(tokenizer!, sentences, family.wordings[1], { targetTokens: target, depth: 0.3, seed: target, source: 'garden-manual' });
      expect(prompt.ids.length).toBeLessThanOrEqual(target);
      expect(prompt.ids.length).toBeGreaterThanOrEqual(target - longest - 2);
    }
    const options = { targetTokens: 180, depth: 0.6, seed: 11, source: 'garden-manual' };
    expect(buildFamilyPrompt(tokenizer!, sentences, family.wordings[1], options)).toEqual(buildFamilyPrompt(tokenizer!, sentences, family.wordings[1], options));
    const other = buildFamilyPrompt(tokenizer!, sentences, family.wordings[1], { ...options, seed: 12 });
    expect(other.text).not.toBe(buildFamilyPrompt(tokenizer!, sentences, family.wordings[1], options).text);
    expect(() => buildFamilyPrompt(tokenizer!, sentences, family.wordings[1], { ...options, targetTokens: 10 })).toThrow(/needs at least \d+ tokens, target is 10/);
    expect(() => buildFamilyPrompt(tokenizer!, [], family.wordings[1], options)).toThrow('filler source "garden-manual" has no filler sentences');
  });

  it('builds every wording × source × trial the same way every run, within the context', async () => {
    const { tokenizer } = await fixtureModel();
    const family = await fixtureFamily();
    const settings = { trials: 4, lengths: { min: 120, max: 240 }, seed: 3 };
    const prompts = familyPrompts(tokenizer!, family, settings, 256);
    expect(prompts).toHaveLength(2 * 2 * 4);
    expect(prompts.map((p) => `${p.wording}/${p.source}`).slice(0, 5)).toEqual([
      'vault-code/harbour-notes',
      'vault-code/harbour-notes',
      'vault-code/harbour-notes',
      'vault-code/harbour-notes',
      'vault-code/garden-manual',
    ]);
    expect(familyPrompts(tokenizer!, family, settings, 256)).toEqual(prompts);
    for (const p of prompts) expect(p.ids.length + p.decodeTokens).toBeLessThanOrEqual(256);
    // a smaller context caps every prompt (key decoding included)
    for (const p of familyPrompts(tokenizer!, family, settings, 150)) expect(p.ids.length + p.decodeTokens).toBeLessThanOrEqual(150);
    expect(familyPrompts(tokenizer!, family, { ...settings, seed: 4 }, 256).map((p) => p.key)).not.toEqual(prompts.map((p) => p.key));
  });
});

describe('runFamilyTrial (tiny fixture: it retrieves nothing, the mechanics still hold)', () => {
  it('decodes the greedy continuation of the full cache, at most decodeTokens tokens', async () => {
    const model = await fixtureModel();
    const family = await fixtureFamily();
    const [prompt] = familyPrompts(model.tokenizer!, family, { trials: 1, lengths: { min: 100, max: 100 }, seed: 0 }, 256);
    const trial = await runFamilyTrial(model, prompt);
    const session = new Session(model, { policy: 'full', sampler: { temperature: 0 }, trace: { attention: false, fullSteps: 0, topTokens: 0 } });
    await session.prefill(prompt.ids);
    const { steps } = await session.run(prompt.decodeTokens);
    const greedy = model.tokenizer!.decode(
      steps.map((s) => s.token.id),
      { skipSpecial: true },
    );
    expect(greedy.startsWith(trial.output)).toBe(true);
    expect(trial.output.length).toBeGreaterThan(0);
    expect(trial).toMatchObject({ wording: 'vault-code', source: 'harbour-notes', key: prompt.key, promptTokens: prompt.ids.length, success: familySuccess(trial.output, prompt.key) });
  });
});

describe('summarizeFamily', () => {
  it('tallies overall, per wording, per filler source and per cell', async () => {
    const family = await fixtureFamily();
    const trial = (wording: string, source: string, success: boolean, promptTokens: number): FamilyTrial => ({ wording, source, key: 'K', depth: 0, promptTokens, output: success ? 'K' : 'x', success });
    const trials = [
      trial('vault-code', 'harbour-notes', true, 300),
      trial('vault-code', 'harbour-notes', false, 500),
      trial('vault-code', 'garden-manual', true, 700),
      trial('locker-number', 'harbour-notes', false, 900),
      trial('locker-number', 'garden-manual', false, 260),
    ];
    const report = summarizeFamily(family, { trials: 2, lengths: { min: 256, max: 1000 }, seed: 0 }, trials);
    expect(report.overall).toEqual({ trials: 5, correct: 2, accuracy: 0.4 });
    expect(report.byWording).toEqual([
      { id: 'vault-code', key: 'LL-DDDD', trials: 3, correct: 2, accuracy: 2 / 3 },
      { id: 'locker-number', key: 'DDD', trials: 2, correct: 0, accuracy: 0 },
    ]);
    expect(report.bySource).toEqual([
      { src: 'harbour-notes', trials: 3, correct: 1, accuracy: 1 / 3 },
      { src: 'garden-manual', trials: 2, correct: 1, accuracy: 0.5 },
    ]);
    expect(report.cells).toHaveLength(4);
    expect(report.cells[0]).toEqual({ wording: 'vault-code', src: 'harbour-notes', trials: 2, correct: 1, accuracy: 0.5 });
    expect(report.promptTokens).toEqual({ min: 260, max: 900, mean: 532 });
    expect(report.examples.map((e) => e.wording)).toEqual(['vault-code', 'locker-number']);
    expect(report.trialsPerCell).toBe(2);
  });
});
