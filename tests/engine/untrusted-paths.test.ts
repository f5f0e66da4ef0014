/**
 * Nothing outside a model folder is read (issue 12 §4): path rules, the fetch and directory
 * sources (symlinks resolved), and the draft lookup of the CLI.
 */
import { execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDraftDir } from '../../engine/cli/models.ts';
import { ModelError } from '../../engine/errors.ts';
import { fetchSource } from '../../engine/model/load.ts';
import { directorySource, loadModelFromDirectory } from '../../engine/model/load-node.ts';
import { validateManifest } from '../../engine/model/manifest.ts';
import { checkModelId, checkModelPath, isModelId, modelPathProblem } from '../../engine/model/paths.ts';
import { FIXTURE_DIR, fixtureCopy } from './helpers/fixture.ts';

describe('model paths and ids', () => {
  it('accepts plain relative paths and returns them as given', () => {
    for (const path of ['tokenizer.json', 'model.onnx.part0', 'indexes/fm-index.bin', 'a.b-c_d~e']) {
      expect(modelPathProblem(path)).toBeNull();
      expect(checkModelPath(path)).toBe(path);
    }
  });

  it('refuses what a browser or a disk would resolve outside the folder', () => {
    for (const path of ['', '..', '../x', 'a/../../x', '/etc/passwd', '%2e%2e/x', '%2E%2E%2Fx', '.%2e/x', 'a%2fb', '%', 'a\\b', 'file:x', 'C:x', 'x?y', 'x#y', 'x\ny', 'x\u007f', 'a//b', 'a/', './a', 'a/./b']) {
      expect(modelPathProblem(path), path).not.toBeNull();
      expect(() => checkModelPath(path), path).toThrow(ModelError);
    }
    expect(() => checkModelPath('%2e%2e/x')).toThrow(
      new ModelError('"%2e%2e/x" must be a plain relative path inside the model directory, got "%2e%2e/x" (it decodes to "../x", which a browser resolves outside the directory)'),
    );
  });

  it('takes model ids that are never paths', () => {
    for (const id of ['kvscope-llama-8l', 'tiny-fixture', 'Qwen2.5-0.5B', 'a_b']) expect(isModelId(id), id).toBe(true);
    for (const id of ['', '.', '..', '../x', 'a/b', '.hidden', '-x', 'a b', 'x'.repeat(129), '%2e%2e', 'a\\b']) expect(isModelId(id), id).toBe(false);
    expect(() => checkModelId('../x', 'draft')).toThrow(/^draft must be a model id .* not a path, got "\.\.\/x"$/);
  });
});

describe('fetchSource', () => {
  it('refuses a path that would leave the base URL before fetching anything', async () => {
    const fetched: string[] = [];
    const source = fetchSource('https://models.example/m/', async (input) => {
      fetched.push(String(input));
      return new Response('{}');
    });
    for (const path of ['%2e%2e/%2e%2e/secret', '../secret', 'x?y', 'https://evil.example/x']) {
      await expect(source.read(path)).rejects.toThrow(ModelError);
    }
    expect(fetched).toEqual([]);
  });

  it('stops reading a file past the size the loader expects', async () => {
    const source = fetchSource('https://models.example/m/', async () => new Response(new Uint8Array(100), { headers: { 'content-length': '100' } }));
    await expect(source.read('model.onnx', undefined, 10)).rejects.toThrow(new ModelError('model.onnx: file is too large (100 bytes; at most 10 expected)'));
    expect((await source.read('model.onnx', undefined, 100)).length).toBe(100);
  });
});

describe('directorySource resolves symlinks', () => {
  let dir: string;
  let outside: string;
  beforeAll(async () => {
    dir = await fixtureCopy();
    outside = await mkdtemp(join(tmpdir(), 'kvscope-outside-'));
    await writeFile(join(outside, 'secret.txt'), 'not for models');
    await cp(join(FIXTURE_DIR, 'tokenizer.json'), join(outside, 'tokenizer.json'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true });
    await rm(outside, { recursive: true });
  });

  it('refuses a symlinked tokenizer.json that resolves outside the folder (even with the right sha256)', async () => {
    const copy = await fixtureCopy();
    await rm(join(copy, 'tokenizer.json'));
    await symlink(join(outside, 'tokenizer.json'), join(copy, 'tokenizer.json'));
    await expect(loadModelFromDirectory(copy)).rejects.toThrow(
      new ModelError(`tokenizer.json: ${join(copy, 'tokenizer.json')} links to ${join(outside, 'tokenizer.json')}, outside the model directory ${copy}; refusing to read it`),
    );
    await rm(copy, { recursive: true });
  });

  it('refuses a link to a directory outside, and reads links that stay inside', async () => {
    await symlink(outside, join(dir, 'escape'));
    await mkdir(join(dir, 'sub'));
    await cp(join(dir, 'tokenizer.json'), join(dir, 'sub', 'tok.json'));
    await symlink(join(dir, 'sub', 'tok.json'), join(dir, 'inside.json'));
    const source = directorySource(dir);
    await expect(source.read('escape/secret.txt')).rejects.toThrow(/^escape\/secret\.txt: .* links to .*secret\.txt, outside the model directory .*; refusing to read it$/);
    expect(Buffer.from(await source.read('inside.json')).equals(await readFile(join(dir, 'tokenizer.json')))).toBe(true);
  });

  it('reads a model directory that is itself a symlink', async () => {
    const link = join(outside, 'model-link');
    await symlink(dir, link);
    const source = directorySource(link);
    expect((await source.read('manifest.json')).length).toBeGreaterThan(100);
  });

  it('refuses what is not a regular file (a FIFO would block the read) and files past maxBytes, before reading', async () => {
    execFileSync('mkfifo', [join(dir, 'pipe')]);
    const source = directorySource(dir);
    await expect(source.read('pipe')).rejects.toThrow(new ModelError(`pipe: ${join(dir, 'pipe')} is not a regular file`));
    await expect(source.read('sub')).rejects.toThrow(/^sub: .* is not a regular file$/);
    await expect(source.read('tokenizer.json', undefined, 10)).rejects.toThrow(/^tokenizer\.json: file is too large \(\d+ bytes; at most 10 expected\)$/);
    await expect(source.read('%2e%2e/x')).rejects.toThrow(ModelError);
  });
});

describe('resolveDraftDir keeps the draft inside the models folder', () => {
  let models: string;
  let elsewhere: string;
  const manifestFor = async (draft: string) => {
    const json = JSON.parse(await readFile(join(FIXTURE_DIR, 'manifest.json'), 'utf8'));
    return { ...validateManifest(json), draft };
  };
  beforeAll(async () => {
    models = await mkdtemp(join(tmpdir(), 'kvscope-models-'));
    elsewhere = await mkdtemp(join(tmpdir(), 'kvscope-elsewhere-'));
    await mkdir(join(models, 'target'));
    await mkdir(join(models, 'good-draft'));
    await writeFile(join(models, 'good-draft', 'manifest.json'), '{}');
    await mkdir(join(elsewhere, 'evil'));
    await writeFile(join(elsewhere, 'evil', 'manifest.json'), '{}');
    await symlink(join(elsewhere, 'evil'), join(models, 'linked-draft'));
    await writeFile(
      join(models, 'index.json'),
      JSON.stringify({ models: [{ id: 'indexed-evil', path: `../${join(elsewhere, 'evil').split('/').slice(-2).join('/')}` }, { id: 'indexed-good', path: 'good-draft' }] }),
    );
  });
  afterAll(async () => {
    await rm(models, { recursive: true });
    await rm(elsewhere, { recursive: true });
  });

  it('finds a sibling draft and one the index lists inside the folder', async () => {
    expect(resolveDraftDir(join(models, 'target'), await manifestFor('good-draft'))).toBe(join(models, 'good-draft'));
    expect(resolveDraftDir(join(models, 'target'), await manifestFor('indexed-good'))).toBe(join(models, 'good-draft'));
  });

  it('finds nothing through an index path, a symlink or a draft id that leaves the folder', async () => {
    expect(resolveDraftDir(join(models, 'target'), await manifestFor('indexed-evil'))).toBeNull();
    expect(resolveDraftDir(join(models, 'target'), await manifestFor('linked-draft'))).toBeNull();
    // validateManifest refuses such a draft; a manifest built in code is checked again here
    expect(resolveDraftDir(join(models, 'target'), await manifestFor(`../${join(elsewhere, 'evil').split('/').slice(-2).join('/')}`))).toBeNull();
  });
});
