/**
 * A DrafterEnv for Node (the CLI, the benchmark): draft models by id, loaded once and shared by
 * every drafter made from this env. Kept apart from index.ts so that the browser bundle never
 * imports node:fs.
 *
 * A model id resolves, in order, to: the target itself (a model drafting for itself; tests use the
 * fixture that way), a model listed in static/models/index.json, a model next to the target's
 * directory (its index.json or a directory of that name — as `inspect` finds the manifest's draft).
 * Token indexes (∞-gram) come from the package's static/indexes/ (ngram/files-node.ts), each file
 * read once.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ModelError } from '../errors.ts';
import { loadModelFromDirectory } from '../model/load-node.ts';
import type { EngineModel } from '../session.ts';
import { resolveDraftDir, resolveModelDir } from '../cli/models.ts';
import type { DrafterEnv } from './drafter.ts';
import { loadIndexFile } from './ngram/files-node.ts';

export interface NodeDrafterEnv extends DrafterEnv {
  /** releases the draft models this env loaded (never the target) */
  release(): Promise<void>;
}

interface Releasable extends EngineModel {
  release(): Promise<void>;
}

/** The directory of model `id`, or null when nothing with a manifest.json is found for it. */
function findModelDir(id: string, targetDir: string | undefined, target: EngineModel): string | null {
  if (targetDir) {
    const sibling = resolveDraftDir(targetDir, { ...target.manifest, draft: id });
    if (sibling) return sibling;
  }
  let dir: string;
  try {
    dir = resolveModelDir(id);
  } catch {
    return null; // no static/models/index.json
  }
  return existsSync(join(dir, 'manifest.json')) ? dir : null;
}

/**
 * `targetDir`: the target's model directory, where its draft is looked for first (as the
 * manifest's `draft` is). Loaded draft models are cached by id until release().
 */
export function nodeDrafterEnv(target: EngineModel, options: { targetDir?: string } = {}): NodeDrafterEnv {
  const models = new Map<string, Promise<Releasable>>();
  const indexFiles = new Map<string, Promise<Uint8Array>>();
  return {
    target,
    loadModel(id: string): Promise<EngineModel> {
      if (id === target.manifest.id) return Promise.resolve(target);
      let loading = models.get(id);
      if (!loading) {
        const dir = findModelDir(id, options.targetDir, target);
        if (!dir) return Promise.reject(new ModelError(`draft model ${JSON.stringify(id)} not found: not in static/models/index.json, nor next to the target's directory`));
        loading = loadModelFromDirectory(dir);
        models.set(id, loading);
        // a failed load is not cached: the next call tries again
        loading.catch(() => models.delete(id));
      }
      return loading;
    },
    loadIndex(id: string, file: string): Promise<Uint8Array> {
      const key = JSON.stringify([id, file]);
      let loading = indexFiles.get(key);
      if (!loading) {
        loading = loadIndexFile(id, file);
        indexFiles.set(key, loading);
        loading.catch(() => indexFiles.delete(key));
      }
      return loading;
    },
    async release() {
      indexFiles.clear();
      const loaded = await Promise.allSettled(models.values());
      models.clear();
      for (const result of loaded) if (result.status === 'fulfilled') await result.value.release();
    },
  };
}
