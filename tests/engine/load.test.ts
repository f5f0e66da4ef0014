/** Model loading: integrity checks, missing files, graph I/O against the manifest, progress. */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelError } from '../../engine/errors.ts';
import { loadModel, type LoadProgress, type ModelSource } from '../../engine/model/load.ts';
import { directorySource, loadModelFromDirectory } from '../../engine/model/load-node.ts';
import { expectedGraphInputs, expectedGraphOutputs } from '../../engine/model/manifest.ts';
import { sha256Hex } from '../../engine/model/sha256.ts';
import { FIXTURE_DIR, fixtureCopy } from './helpers/fixture.ts';

/** Rewrites manifest.json of a fixture copy (loosely typed: tests break it at will). */
async function editManifest(dir: string, edit: (m: Record<string, any>) => void): Promise<void> {
  const path = join(dir, 'manifest.json');
  const manifest = JSON.parse(await readFile(path, 'utf8'));
  edit(manifest);
  await writeFile(path, JSON.stringify(manifest));
}

describe('loadModel', () => {
  it('reports download, verify and session progress for every file', async () => {
    const events: LoadProgress[] = [];
    const model = await loadModelFromDirectory(FIXTURE_DIR, { onProgress: (p) => events.push(p) });
    for (const file of model.manifest.files) {
      const verified = events.filter((e) => e.phase === 'verify' && e.file === file.path);
      expect(verified.at(-1)).toEqual({ phase: 'verify', loaded: file.bytes, total: file.bytes, file: file.path });
      expect(events.some((e) => e.phase === 'download' && e.file === file.path && e.loaded === file.bytes)).toBe(true);
    }
    expect(events.at(-1)).toMatchObject({ phase: 'session', loaded: 1, total: 1 });
    await model.release();
  });

  it('rejects a corrupted file with a sha256 mismatch naming the file', async () => {
    const dir = await fixtureCopy();
    const path = join(dir, 'model.onnx');
    const bytes = await readFile(path);
    bytes[bytes.length - 10] ^= 0xff;
    await writeFile(path, bytes);
    const actual = await sha256Hex(new Uint8Array(bytes));
    await expect(loadModelFromDirectory(dir)).rejects.toThrow(
      new ModelError(`model.onnx: sha256 mismatch (expected 64139d20e03dd90579409191394431906802b2ac463587edfc57a5df3f01ed13, got ${actual})`),
    );
    await rm(dir, { recursive: true });
  });

  it('rejects a truncated file with a size mismatch', async () => {
    const dir = await fixtureCopy();
    const path = join(dir, 'tokenizer.json');
    const bytes = await readFile(path);
    await writeFile(path, bytes.subarray(0, bytes.length - 1));
    await expect(loadModelFromDirectory(dir)).rejects.toThrow(`tokenizer.json: size mismatch (expected ${bytes.length} bytes, got ${bytes.length - 1})`);
    await rm(dir, { recursive: true });
  });

  it('names a missing file', async () => {
    const dir = await fixtureCopy();
    await rm(join(dir, 'tokenizer.json'));
    await expect(loadModelFromDirectory(dir)).rejects.toThrow(/^tokenizer\.json: file is missing \(/);
    await rm(dir, { recursive: true });
  });

  it('names a missing manifest and a missing directory', async () => {
    const dir = await fixtureCopy();
    await rm(join(dir, 'manifest.json'));
    await expect(loadModelFromDirectory(dir)).rejects.toThrow(/^manifest\.json: file is missing/);
    await expect(loadModelFromDirectory(join(dir, 'nope'))).rejects.toThrow(/^model directory not found/);
    await rm(dir, { recursive: true });
  });

  it('rejects a graph whose inputs/outputs differ from the manifest, naming the names', async () => {
    const dir = await fixtureCopy();
    // The manifest claims 3 layers (lists consistent with itself); the graph has 2.
    await editManifest(dir, (m) => {
      m.architecture.n_layers = 3;
      m.graph.inputs = expectedGraphInputs(3);
      m.graph.outputs = expectedGraphOutputs(3);
    });
    await expect(loadModelFromDirectory(dir)).rejects.toThrow(
      'model.onnx: graph inputs do not match manifest.json graph.inputs (missing past_key_2, past_value_2, attn_bias_2)',
    );
    await rm(dir, { recursive: true });
  });

  it('concatenates graph parts in order', async () => {
    const dir = await fixtureCopy();
    const whole = await readFile(join(dir, 'model.onnx'));
    const cut = [0, 400_000, 800_001, whole.length];
    const parts: { path: string; sha256: string; bytes: number }[] = [];
    for (let i = 0; i < 3; i++) {
      const part = whole.subarray(cut[i], cut[i + 1]);
      await writeFile(join(dir, `model.onnx.part${i}`), part);
      parts.push({ path: `model.onnx.part${i}`, sha256: await sha256Hex(new Uint8Array(part)), bytes: part.length });
    }
    await rm(join(dir, 'model.onnx'));
    await editManifest(dir, (m) => {
      m.graph.parts = parts.map((p) => p.path);
      m.files = [...m.files.filter((f: { path: string }) => f.path !== 'model.onnx'), ...parts];
    });
    const model = await loadModelFromDirectory(dir);
    expect(model.graphBytes).toBe(whole.length);
    await model.release();
    // parts out of order: the concatenation is not the graph any more
    await editManifest(dir, (m) => {
      m.graph.parts = [parts[1].path, parts[0].path, parts[2].path];
    });
    await expect(loadModelFromDirectory(dir)).rejects.toThrow(/model\.onnx\.part1 \+ model\.onnx\.part0 \+ model\.onnx\.part2: onnxruntime cannot load the graph/);
    await rm(dir, { recursive: true });
  });

  it('works through any ModelSource (the browser path uses fetchSource)', async () => {
    const base = directorySource(FIXTURE_DIR);
    const requested: string[] = [];
    const source: ModelSource = {
      location: 'memory',
      read: (path, onBytes) => {
        requested.push(path);
        return base.read(path, onBytes);
      },
    };
    const model = await loadModel(source, { numThreads: 1 });
    expect(requested).toEqual(['manifest.json', 'model.onnx', 'tokenizer.json', 'reference.json']);
    await model.release();
  });
});
