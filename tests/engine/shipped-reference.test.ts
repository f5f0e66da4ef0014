/**
 * The shipped models reproduce the PyTorch logits their export wrote (reference.json), through the
 * engine's own prefill: what the browser runs is the model that was trained and measured. A
 * quantized export states its tolerance in reference.json (training/export.py); fp32 uses 1e-3.
 */
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { loadModelFromDirectory } from '../../engine/model/load-node.ts';
import { Session } from '../../engine/session.ts';
import { decodeFloat32Base64, readJson } from './helpers/fixture.ts';

interface ReferenceFile {
  vocab_size: number;
  tolerance?: number;
  prompts: { ids: number[]; positions: number[]; logits_b64: string }[];
}

const MODELS = fileURLToPath(new URL('../../static/models/', import.meta.url));

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

describe.each(['kvscope-llama-8l', 'kvscope-draft-2l'])('shipped model %s', (id) => {
  it('prefill logits match its reference.json (PyTorch) within the stated tolerance', async () => {
    const model = await loadModelFromDirectory(`${MODELS}${id}`, { calibration: false });
    try {
      const reference = (await readJson(`${MODELS}${id}/reference.json`)) as ReferenceFile;
      const vocab = model.manifest.architecture.vocab_size;
      expect(reference.vocab_size).toBe(vocab);
      expect(reference.prompts.length).toBeGreaterThan(0);
      const tolerance = reference.tolerance ?? 1e-3;
      for (const prompt of reference.prompts) {
        const expected = decodeFloat32Base64(prompt.logits_b64);
        const session = new Session(model, { prefillChunk: 16 });
        const { logits } = await session.prefill(prompt.ids, { allLogits: true });
        prompt.positions.forEach((position, r) => {
          const row = logits!.subarray(position * vocab, (position + 1) * vocab);
          expect(maxAbsDiff(row, expected.subarray(r * vocab, (r + 1) * vocab))).toBeLessThanOrEqual(tolerance);
        });
      }
    } finally {
      await model.release();
    }
  }, 60_000);
});
