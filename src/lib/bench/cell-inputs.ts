/**
 * What the /bench cells' explorer links are built from (cell-links.ts), loaded in the page itself:
 * the model's manifest and tokenizer (no graph: ~250 KB, from the Cache API the worker filled) and
 * the held-out documents. Loaded once per page, only when a report has rows to link; the page
 * imports this module dynamically, so the tokenizer library (and load.ts's imports) stay out of its
 * first bundle.
 */
import { loadTokenizer } from '../../../engine/model/load.ts';
import { heldoutDocuments } from '../../../engine/spec/ngram/heldout-split.ts';
import { MODEL_CACHE_NAME, cachedModelSource } from '../worker/model-cache.ts';
import type { CellInputs } from './cell-links.ts';

interface IndexJson {
  default?: string;
  models?: { id: string; path: string }[];
}

async function json(url: string): Promise<unknown> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot load ${url} (HTTP ${response.status})`);
  return response.json();
}

async function load(modelsUrl: string, heldoutUrl: string, modelId: string): Promise<CellInputs> {
  const base = modelsUrl.endsWith('/') ? modelsUrl : `${modelsUrl}/`;
  const index = (await json(`${base}index.json`)) as IndexJson;
  const entry = index.models?.find((m) => m.id === modelId);
  if (!entry) throw new Error(`models/index.json has no model ${JSON.stringify(modelId)}`);
  const cache = await globalThis.caches?.open(MODEL_CACHE_NAME).catch(() => null);
  const [{ tokenizer }, heldout] = await Promise.all([loadTokenizer(cachedModelSource(`${base}${entry.path}/`, cache ?? null)), json(heldoutUrl)]);
  return { tokenizer, documents: heldoutDocuments(heldout) };
}

const loaded = new Map<string, Promise<CellInputs>>();

/** The tokenizer and held-out documents for `modelId` (fetched once; a failure is retried next time). */
export function cellInputs(modelsUrl: string, heldoutUrl: string, modelId: string): Promise<CellInputs> {
  const key = `${modelsUrl}\n${heldoutUrl}\n${modelId}`;
  let pending = loaded.get(key);
  if (!pending) {
    pending = load(modelsUrl, heldoutUrl, modelId);
    pending.catch(() => loaded.delete(key));
    loaded.set(key, pending);
  }
  return pending;
}
