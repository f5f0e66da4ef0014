/** Tokenizer pieces, RoPE algebra and trace bounding — no graph needed. */
import { readFile } from 'node:fs/promises';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateManifest } from '../../engine/model/manifest.ts';
import { Rope } from '../../engine/model/rope.ts';
import { KvTokenizer, renderBytes } from '../../engine/model/tokenizer.ts';
import { TRACE_VERSION, TraceRecorder, type StepTrace, type TraceHeader } from '../../engine/trace/schema.ts';
import { FIXTURE_DIR } from './helpers/fixture.ts';

async function fixtureTokenizer(): Promise<KvTokenizer> {
  const manifest = validateManifest(JSON.parse(await readFile(`${FIXTURE_DIR}/manifest.json`, 'utf8')));
  const json = JSON.parse(await readFile(`${FIXTURE_DIR}/tokenizer.json`, 'utf8'));
  return new KvTokenizer(json, manifest.tokenizer);
}

describe('KvTokenizer', () => {
  it('prepends BOS once and decodes back to the text', async () => {
    const tokenizer = await fixtureTokenizer();
    const text = 'The cache keeps 42 keys — naïve café ✓';
    const ids = tokenizer.encode(text);
    expect(ids[0]).toBe(tokenizer.bosId);
    expect(ids[1]).not.toBe(tokenizer.bosId);
    expect(tokenizer.decode(ids.slice(1))).toBe(text);
    expect(tokenizer.decode(ids, { skipSpecial: true })).toBe(text);
  });

  it('renders every vocabulary piece without U+FFFD, partial UTF-8 as <0xNN>', async () => {
    const tokenizer = await fixtureTokenizer();
    let hexPieces = 0;
    for (let id = 0; id < 4096; id++) {
      const piece = tokenizer.tokenPiece(id);
      expect(piece).not.toContain('\uFFFD');
      if (/<0x[0-9A-F]{2}>/.test(piece)) hexPieces++;
    }
    expect(hexPieces).toBeGreaterThan(0); // a byte-level vocabulary has byte tokens ≥ 0x80
    expect(tokenizer.tokenPiece(tokenizer.bosId)).toBe(tokenizer.rawToken(tokenizer.bosId));
    // the concatenation of the pieces of a text's tokens is the text when all characters are complete
    const ids = tokenizer.encode('hello world').slice(1);
    expect(ids.map((id) => tokenizer.tokenPiece(id)).join('')).toBe('hello world');
  });

  it('renderBytes shows incomplete or invalid UTF-8 bytes as hex', () => {
    const bytes = (...xs: number[]) => Uint8Array.from(xs);
    expect(renderBytes(new TextEncoder().encode('a€b'))).toBe('a€b');
    expect(renderBytes(bytes(0xe2, 0x82))).toBe('<0xE2><0x82>');
    expect(renderBytes(bytes(0x82, 0xac))).toBe('<0x82><0xAC>');
    expect(renderBytes(bytes(0x41, 0xe2, 0x41))).toBe('A<0xE2>A');
    expect(renderBytes(bytes(0xed, 0xa0, 0x80))).toBe('<0xED><0xA0><0x80>'); // surrogate: invalid
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 30 }), (s) => {
        expect(renderBytes(new TextEncoder().encode(s))).toBe(s);
      }),
    );
  });
});

describe('Rope', () => {
  const rope = new Rope({ theta: 10000, dim: 8 }, 8);

  it('rotations compose and invert, preserving each pair norm', () => {
    fc.assert(
      fc.property(
        fc.array(fc.float({ min: -4, max: 4, noNaN: true }), { minLength: 8, maxLength: 8 }),
        fc.integer({ min: -300, max: 300 }),
        fc.integer({ min: -300, max: 300 }),
        (xs, a, b) => {
          const v = Float32Array.from(xs);
          const twice = v.slice();
          rope.rotate(twice, a);
          rope.rotate(twice, b);
          const once = v.slice();
          rope.rotate(once, a + b);
          once.forEach((x, i) => expect(Math.abs(x - twice[i])).toBeLessThan(1e-4));
          const back = v.slice();
          rope.rotate(back, a);
          rope.rotate(back, -a);
          back.forEach((x, i) => expect(Math.abs(x - v[i])).toBeLessThan(1e-4));
          for (let i = 0; i < 4; i++) {
            expect(Math.hypot(once[i], once[i + 4])).toBeCloseTo(Math.hypot(v[i], v[i + 4]), 3);
          }
        },
      ),
    );
  });

  it('pairs channel i with i + dim/2 at frequency θ^(−2i/dim); partial rotary leaves the rest', () => {
    const v = new Float32Array(8);
    v[1] = 1; // pair (1, 5), inv_freq = 10000^(-2/8)
    rope.rotate(v, 3);
    const angle = 3 * Math.pow(10000, -2 / 8);
    expect(v[1]).toBeCloseTo(Math.cos(angle), 6);
    expect(v[5]).toBeCloseTo(Math.sin(angle), 6);
    const partial = new Rope({ theta: 10000, dim: 4 }, 8);
    const w = Float32Array.from([1, 1, 1, 1, 7, 7, 7, 7]);
    partial.rotate(w, 10);
    expect(Array.from(w.subarray(4))).toEqual([7, 7, 7, 7]);
    expect(w[0]).toBeCloseTo(Math.cos(10) - Math.sin(10), 5);
  });
});

describe('TraceRecorder', () => {
  const header: TraceHeader = {
    version: TRACE_VERSION,
    model: { id: 'm', name: 'm', layers: 1, heads: 1, kvHeads: 1, headDim: 2, context: 16 },
    sampler: { temperature: 0, topK: 0, topP: 1, seed: 0 },
    policy: 'full',
    options: { fullSteps: 2, topTokens: 1, attentionTop: 1, attention: true },
  };
  const memory = { tokens: 1, entries: [[1]], heldEntries: 1, kBytes: 8, vBytes: 8, bytes: 16, fullKBytes: 8, fullVBytes: 8, fullBytes: 16, ratio: 1, bitsPerElement: 32 };
  const step = (n: number): StepTrace => ({
    kind: 'step',
    step: n,
    tokenIndex: n,
    position: n,
    token: { id: 5, piece: 'x', prob: 0.5 },
    sampleProb: 1,
    forced: false,
    topK: [],
    attention: [{ entries: [{ tokens: Int32Array.of(0), positions: Int32Array.of(0), counts: null, origins: null }], weights: [Float32Array.of(1)] }],
    attentionTop: { k: 1, tokens: Int32Array.of(0), positions: Int32Array.of(0), weights: Float32Array.of(1) },
    policy: 'full',
    decision: { heads: [], evicted: 0, merged: 0, reencoded: 0, scores: [[Float32Array.of(0.25)]] },
    memory,
    timings: { forwardMs: 0, policyMs: 0, totalMs: 0 },
  });

  it('keeps full rows for the last fullSteps steps, replaces older ones with compact copies', () => {
    const trace = new TraceRecorder(header);
    const recorded = [0, 1, 2, 3].map(step);
    recorded.forEach((s) => trace.record(s));
    const steps = trace.steps();
    expect(steps.map((s) => s.attention !== null)).toEqual([false, false, true, true]);
    expect(steps.map((s) => s.decision.scores !== null)).toEqual([false, false, true, true]);
    expect(steps.every((s) => s.attentionTop !== null)).toBe(true);
    expect(recorded[0].attention).not.toBeNull(); // never mutated
    const fork = trace.clone();
    trace.truncate(1);
    expect(trace.length).toBe(1);
    expect(fork.length).toBe(4);
    const json = trace.toJSON();
    expect(json.version).toBe(1);
    expect(JSON.parse(JSON.stringify(fork.toJSON())).events[3].attention[0].weights).toEqual([[1]]);
  });
});
