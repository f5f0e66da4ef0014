/**
 * What /models checks before storing (check.worker.ts runs loadModel over the folder's Blobs): the
 * shipped draft model's folder loads through folderSource; a copy with flipped bytes in model.onnx,
 * a missing tokenizer.json, a file larger than listed (refused before it is read) or a broken
 * manifest each fail with one message naming the file or field; files it does not name are ignored.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_MANIFEST_BYTES } from '../../engine/model/bounds.ts';
import { loadModel } from '../../engine/model/load.ts';
import { folderSource } from '../../src/lib/models/source.ts';

const DIR = join(process.cwd(), 'static/models/kvscope-draft-2l');

function folder(change?: (files: Map<string, Uint8Array>) => void): Map<string, Blob> {
  const files = new Map(readdirSync(DIR).map((name) => [name, new Uint8Array(readFileSync(join(DIR, name)))]));
  change?.(files);
  return new Map([...files].map(([path, bytes]) => [path, new Blob([bytes])]));
}

/** A Blob whose bytes must not be read (its size is all a bounded read may look at). */
function unreadable(size: number): Blob {
  const refuse = () => {
    throw new Error('read in full before its size was checked');
  };
  return { size, type: '', arrayBuffer: refuse, stream: refuse, text: refuse, slice: refuse, bytes: refuse } as unknown as Blob;
}

describe('checking an uploaded folder', () => {
  it('loads the shipped draft model from its Blobs, reporting progress per file; files it does not name are ignored', async () => {
    const seen = new Set<string>();
    const files = folder();
    // what a macOS folder or a user's notes add: never read, whatever the name
    for (const odd of ['Icon\r', 'notes #1.md', '.DS_Store']) files.set(odd, unreadable(10));
    const model = await loadModel(folderSource(files, 'kvscope-draft-2l'), { numThreads: 1, onProgress: (p) => seen.add(`${p.phase}:${p.file}`) });
    expect(model.manifest.role).toBe('draft');
    expect(seen.has('verify:model.onnx') && seen.has('download:model.onnx') && seen.has('session:model.onnx')).toBe(true);
    await model.release();
  });

  it('names model.onnx when its bytes were changed', async () => {
    const files = folder((f) => {
      const graph = f.get('model.onnx')!.slice();
      for (let i = 1000; i < 1010; i++) graph[i] ^= 0xff;
      f.set('model.onnx', graph);
    });
    await expect(loadModel(folderSource(files, 'copy'), { numThreads: 1 })).rejects.toThrow(/^model\.onnx: sha256 mismatch/);
  });

  it('refuses a file larger than the manifest lists before reading it (a 3 GB tokenizer.json listed at 3 bytes)', async () => {
    const files = folder((f) => {
      const json = JSON.parse(new TextDecoder().decode(f.get('manifest.json')));
      json.files.find((e: { path: string }) => e.path === 'tokenizer.json').bytes = 3;
      f.set('manifest.json', new TextEncoder().encode(JSON.stringify(json)));
    });
    files.set('tokenizer.json', unreadable(3e9));
    await expect(loadModel(folderSource(files, 'copy'), { numThreads: 1 })).rejects.toThrow(/^tokenizer\.json: file is too large \(3000000000 bytes; at most 3 expected\)$/);
    // the manifest too is bounded before it is read
    const big = folder();
    big.set('manifest.json', unreadable(3e9));
    await expect(folderSource(big, 'copy').read('manifest.json', undefined, MAX_MANIFEST_BYTES)).rejects.toThrow(/^manifest\.json: file is too large/);
  });

  it('names a missing file and a bad manifest field', async () => {
    const missing = folder((f) => f.delete('tokenizer.json'));
    await expect(loadModel(folderSource(missing, 'copy'), { numThreads: 1 })).rejects.toThrow(/^tokenizer\.json: file is missing \(not in the folder copy\)/);
    const bad = folder((f) => {
      const json = JSON.parse(new TextDecoder().decode(f.get('manifest.json')));
      delete json.architecture.n_kv_heads;
      f.set('manifest.json', new TextEncoder().encode(JSON.stringify(json)));
    });
    await expect(loadModel(folderSource(bad, 'copy'), { numThreads: 1 })).rejects.toThrow(/^manifest\.json: architecture\.n_kv_heads/);
  });
});
