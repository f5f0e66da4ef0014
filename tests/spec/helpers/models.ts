/** The shipped models (static/models/), each loaded once per test file, and a drafter env over them. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModelFromDirectory } from '../../../engine/model/load-node.ts';
import type { LoadedModel } from '../../../engine/model/load.ts';
import type { EngineModel } from '../../../engine/session.ts';
import type { DrafterEnv } from '../../../engine/spec/drafter.ts';

export const STATIC = fileURLToPath(new URL('../../../static/', import.meta.url));

const models = new Map<string, Promise<LoadedModel>>();

/** A shipped model by id (kvscope-llama-8l, kvscope-draft-2l). */
export function shippedModel(id: string): Promise<LoadedModel> {
  let loading = models.get(id);
  if (!loading) {
    loading = loadModelFromDirectory(join(STATIC, 'models', id));
    models.set(id, loading);
  }
  return loading;
}

/** What a drafter may ask for: the other shipped models by id. */
export function shippedEnv(target: EngineModel): DrafterEnv {
  return { target, loadModel: shippedModel };
}

/** The first `tokens` tokens of the `nth` held-out document from `source` (static/data/heldout.json). */
export function heldoutPrompt(tokenizer: { encode(text: string): number[] }, source: string, nth: number, tokens: number): number[] {
  const docs = (JSON.parse(readFileSync(join(STATIC, 'data', 'heldout.json'), 'utf8')) as { documents: { src: string; text: string }[] }).documents;
  const doc = docs.filter((d) => d.src === source)[nth];
  if (!doc) throw new Error(`no held-out document ${nth} from ${source}`);
  return tokenizer.encode(doc.text).slice(0, tokens);
}
