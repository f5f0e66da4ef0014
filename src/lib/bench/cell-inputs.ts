/**
 * What the /bench cells' explorer links are built from (cell-links.ts), loaded in the page itself:
 * the model's manifest and tokenizer (no graph: ~250 KB, from the Cache API the worker filled, or
 * from this browser's storage for an uploaded model) and
 * the held-out documents. Loaded once per page, only when a report has rows to link; the page
 * imports this module dynamically, so the tokenizer library (and load.ts's imports) stay out of its
 * first bundle.
 */
import { loadTokenizer, type ModelSource } from '../../../engine/model/load.ts';
import { uploadedModelSource } from '../models/source.ts';
import { modelStore } from '../models/store.ts';
import type { UploadedModelRef } from '../worker/protocol.ts';
import { heldoutDocuments } from '../../../engine/spec/ngram/heldout-split.ts';
import { MODEL_CACHE_NAME, cachedModelSource } from '../worker/model-cache.ts';
import { indexEntry } from '../worker/drafter-env.ts';
import type { CellInputs } from './cell-links.ts';

async function json(url: string): Promise<unknown> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot load ${url} (HTTP ${response.status})`);
  return response.json();
}

/** The model's files: an uploaded model from this browser's storage, else the index's through the Cache API copy. */
async function modelSource(modelsUrl: string, modelId: string, uploaded: UploadedModelRef | undefined): Promise<ModelSource> {
  if (uploaded) return uploadedModelSource(modelStore(), uploaded.key);
  const base = modelsUrl.endsWith('/') ? modelsUrl : `${modelsUrl}/`;
  // the id and the entry's path are checked before they become the model's URL
  const entry = indexEntry(await json(`${base}index.json`), modelId);
  if (!entry) throw new Error(`models/index.json has no model ${JSON.stringify(modelId)}`);
  const cache = await globalThis.caches?.open(MODEL_CACHE_NAME).catch(() => null);
  return cachedModelSource(`${base}${entry.path}/`, cache ?? null);
}

async function load(modelsUrl: string, heldoutUrl: string, modelId: string, uploaded: UploadedModelRef | undefined): Promise<CellInputs> {
  const [{ tokenizer }, heldout] = await Promise.all([modelSource(modelsUrl, modelId, uploaded).then(loadTokenizer), json(heldoutUrl)]);
  return { tokenizer, documents: heldoutDocuments(heldout) };
}

const loaded = new Map<string, Promise<CellInputs>>();

/**
 * The tokenizer and held-out documents for `modelId` (fetched once; a failure is retried next
 * time); `uploaded`: the model was uploaded (src/lib/models/), its files are in this browser.
 */
export function cellInputs(modelsUrl: string, heldoutUrl: string, modelId: string, uploaded?: UploadedModelRef): Promise<CellInputs> {
  const key = `${modelsUrl}\n${heldoutUrl}\n${modelId}\n${uploaded?.key ?? ''}`;
  let pending = loaded.get(key);
  if (!pending) {
    pending = load(modelsUrl, heldoutUrl, modelId, uploaded);
    pending.catch(() => loaded.delete(key));
    loaded.set(key, pending);
  }
  return pending;
}
