/** `kvscope index build` through the CLI's main (in process, tiny fixture tokenizer). */
import { chmod, mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../engine/cli/index.ts';
import type { IndexManifest } from '../../engine/spec/ngram/files.ts';
import { parseIndex } from '../../engine/spec/ngram/format.ts';
import { SuffixArrayIndex } from '../../engine/spec/ngram/suffix-array.ts';
import { FIXTURE_DIR } from '../engine/helpers/fixture.ts';

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) });
  return { code, stdout, stderr };
}

const TEXT = 'The quick brown fox jumps over the lazy dog. The quick brown fox sleeps.\n\nThe lazy dog barks at the quick brown fox.\n';

async function workspace() {
  const dir = await mkdtemp(join(tmpdir(), 'kvscope-index-'));
  const input = join(dir, 'notes.txt');
  await writeFile(input, TEXT);
  return { dir, input };
}

describe('kvscope index build', () => {
  it('writes both indexes and a manifest, prints bytes, tokens and build times; the same input gives the same bytes', async () => {
    const { dir, input } = await workspace();
    const out = join(dir, 'notes-index');
    const first = await run(['index', 'build', '--input', input, '--out', out, '--model', FIXTURE_DIR]);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^index notes-index · \d+ tokens from 1 document · corpus .* \(\d+ bytes\) · tokenized with tiny-fixture in \d+\.\d\d s\n/);
    expect(first.stdout).toMatch(/suffix-array {2}suffix-array\.bin .* bytes, 3\.\d\d× corpus; .* built in/);
    expect(first.stdout).toMatch(/fm-index {6}fm-index\.bin .* built in/);
    expect((await readdir(out)).sort()).toEqual(['fm-index.bin', 'manifest.json', 'suffix-array.bin']);
    const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as IndexManifest;
    expect(manifest).toMatchObject({ format: 'kvscope-token-index', id: 'notes-index', source: 'notes.txt (1 document)', documents: 1, vocab_size: 4096 });
    expect(manifest.corpus_bytes).toBe(manifest.tokens * 2);
    expect(manifest.tokenizer_sha256).toMatch(/^[0-9a-f]{64}$/);
    const sa = parseIndex(await readFile(join(out, 'suffix-array.bin')));
    const fm = parseIndex(await readFile(join(out, 'fm-index.bin')));
    expect(sa.tokenCount).toBe(manifest.tokens);
    expect(manifest.files['suffix-array']!.bytes).toBe((await readFile(join(out, 'suffix-array.bin'))).length);
    if (!(sa instanceof SuffixArrayIndex)) throw new Error('suffix-array.bin holds no suffix array');
    const phrase = Array.from(sa.corpus.subarray(1, 4));
    expect(sa.count(phrase)).toBeGreaterThanOrEqual(1);
    expect(fm.count(phrase)).toBe(sa.count(phrase));

    const again = join(dir, 'again');
    expect((await run(['index', 'build', '--input', input, '--out', again, '--model', FIXTURE_DIR, '--id', 'notes-index'])).code).toBe(0);
    for (const file of ['fm-index.bin', 'manifest.json', 'suffix-array.bin']) expect(await readFile(join(again, file))).toEqual(await readFile(join(out, file)));
  });

  it('--variant and .json / .jsonl documents', async () => {
    const { dir } = await workspace();
    const json = join(dir, 'docs.json');
    await writeFile(json, JSON.stringify({ documents: [{ text: 'one two three' }, { text: 'two three four' }, { text: '  ' }] }));
    const out = join(dir, 'fm');
    const result = await run(['index', 'build', '--input', json, '--out', out, '--model', FIXTURE_DIR, '--variant', 'fm-index']);
    expect(result.code).toBe(0);
    expect((await readdir(out)).sort()).toEqual(['fm-index.bin', 'manifest.json']);
    expect((JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as IndexManifest).documents).toBe(2);
    const jsonl = join(dir, 'docs.jsonl');
    await writeFile(jsonl, '{"text": "alpha beta"}\n\n{"text": "beta gamma"}\n');
    expect((await run(['index', 'build', '--input', jsonl, '--out', join(dir, 'l'), '--model', FIXTURE_DIR, '--variant', 'suffix-array'])).stdout).toMatch(/from 2 documents/);
  });

  it('clear errors: missing or empty input, an unwritable --out, bad options, unknown subcommand', async () => {
    const { dir, input } = await workspace();
    const fail = async (args: string[], code: number, message: RegExp) => {
      const result = await run(args);
      expect(result.code).toBe(code);
      expect(result.stderr).toMatch(message);
      expect(result.stderr.split('\n').filter(Boolean).length).toBeLessThanOrEqual(1);
    };
    await fail(['index', 'build', '--input', join(dir, 'nope.txt'), '--out', join(dir, 'o'), '--model', FIXTURE_DIR], 1, /^kvscope index: cannot read --input .*nope\.txt: no such file\n$/);
    const empty = join(dir, 'empty.txt');
    await writeFile(empty, ' \n\n');
    await fail(['index', 'build', '--input', empty, '--out', join(dir, 'o'), '--model', FIXTURE_DIR], 2, /^kvscope index: empty input: .*empty\.txt has no text to index\n$/);
    await fail(['index', 'build', '--input', input, '--out', join(input, 'sub'), '--model', FIXTURE_DIR], 1, /^kvscope index: cannot write --out .*: a file is in the way\n$/);
    if (process.getuid?.() !== 0) {
      const locked = join(dir, 'locked');
      await writeFile(join(dir, 'placeholder'), '');
      await chmod(dir, 0o500);
      await fail(['index', 'build', '--input', input, '--out', locked, '--model', FIXTURE_DIR], 1, /cannot write --out .*: permission denied/);
      await chmod(dir, 0o700);
    }
    await fail(['index', 'build', '--out', join(dir, 'o')], 2, /missing --input FILE/);
    await fail(['index', 'build', '--input', input], 2, /missing --out DIR/);
    await fail(['index', 'build', '--input', input, '--out', join(dir, 'o'), '--variant', 'trie'], 2, /--variant must be both, suffix-array, fm-index; got "trie"/);
    await fail(['index', 'build', '--input', input, '--out', join(dir, 'o'), '--id', 'a/b'], 2, /--id "a\/b" is not an index id/);
    await fail(['index', 'rebuild'], 2, /^kvscope index: unknown subcommand "rebuild" \(subcommands: build; see kvscope index --help\)\n$/);
    expect((await run(['index'])).code).toBe(2);
    const help = await run(['index', 'build', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: kvscope index build --input FILE --out DIR/);
    expect((await run(['--help'])).stdout).toMatch(/kvscope index build --input FILE --out DIR/);
  });
});
