/**
 * The models pickers offer, as plain data: the shipped ones (models/index.json) and the uploaded
 * ones (store.ts), each with the choice that loads it (choice.ts). ModelCatalog
 * (catalog.svelte.ts) keeps both lists live for a page.
 */
import type { StoredModel } from './db.ts';
import { choiceValue, type ModelChoice } from './choice.ts';
import type { LinkedModel } from './link-param.ts';

export interface ShippedModel {
  id: string;
  role: 'target' | 'draft';
}

export interface ModelOption {
  choice: ModelChoice;
  /** choiceValue(choice): the <select> value */
  value: string;
  label: string;
  id: string;
  role: 'target' | 'draft';
  uploaded: boolean;
}

interface IndexJson {
  default?: unknown;
  models?: { id?: unknown; role?: unknown }[];
}

/**
 * The worker's Cache API store (worker/model-cache.ts MODEL_CACHE_NAME, where the host keeps its
 * copy of index.json): named here, not imported, so that a page's picker does not pull in the
 * engine's loader and its runtime (tests/ui/models-catalog.test.ts checks the two agree).
 */
export const INDEX_CACHE_NAME = 'kvscope-models-v1';

type CachesLike = { open(name: string): Promise<{ match(request: string): Promise<Response | undefined> }> };

/**
 * The shipped models, from models/index.json: from the network, else (unreachable: offline) from
 * the copy the worker host keeps in the Cache API, as the host itself reads it. An HTTP error is
 * the server's answer and is reported, not papered over with an old copy.
 */
export async function readShipped(
  modelsUrl: string,
  fetchFn: typeof fetch = fetch,
  caches: CachesLike | null = globalThis.caches ?? null,
): Promise<{ defaultId: string | null; models: ShippedModel[] }> {
  const base = modelsUrl.endsWith('/') ? modelsUrl : `${modelsUrl}/`;
  const url = `${base}index.json`;
  let text: string;
  try {
    const response = await fetchFn(url, { cache: 'no-cache' });
    if (!response.ok) throw new HttpError(`models/index.json: HTTP ${response.status}`);
    text = await response.text();
  } catch (error) {
    if (error instanceof HttpError) throw error;
    const copy = await caches
      ?.open(INDEX_CACHE_NAME)
      .then((cache) => cache.match(url))
      .catch(() => undefined);
    if (!copy) throw new Error(`models/index.json: cannot fetch (${error instanceof Error ? error.message : String(error)}) and no copy is cached`);
    text = await copy.text();
  }
  const index = JSON.parse(text) as IndexJson;
  const models = (index.models ?? []).flatMap((m): ShippedModel[] => (typeof m.id === 'string' ? [{ id: m.id, role: m.role === 'draft' ? 'draft' : 'target' }] : []));
  return { defaultId: typeof index.default === 'string' ? index.default : (models[0]?.id ?? null), models };
}

class HttpError extends Error {}

/** What a page's address says about the model: the one its link names (`model=`), and whether it carries a setup at all. */
export interface AddressModel {
  linked: LinkedModel | null;
  /** the address carries a link's setup (a bare page address does not) */
  fromLink: boolean;
}

/**
 * The model a page opens with (null: the index's default):
 *  - a link naming a model: that model when this browser has it (an upload with its id and
 *    sha256, else a shipped model with its id: a different version is then reported by the page),
 *    else the default (the page says which model the link wants);
 *  - a link without `model=`: the default, which it was made on (links on the default name none);
 *  - a bare address: the choice saved by the last page, if its model is still there.
 * The lists are asked for only when needed: `uploads` (IndexedDB, which may be slow or never
 * answer) only for a linked model or a saved upload, so the default's load never waits for it.
 */
export async function pickInitialChoice(
  address: AddressModel,
  saved: ModelChoice | null,
  shipped: () => Promise<readonly ShippedModel[]>,
  uploads: () => Promise<readonly StoredModel[]>,
): Promise<ModelChoice | null> {
  const linked = address.linked;
  if (linked) {
    const upload = (await uploads()).find((m) => m.sha256 === linked.sha256 && m.id === linked.id);
    if (upload) return { kind: 'uploaded', key: upload.key };
    return (await shipped()).some((m) => m.id === linked.id) ? { kind: 'shipped', id: linked.id } : null;
  }
  if (address.fromLink || !saved) return null;
  if (saved.kind === 'shipped') return (await shipped()).some((m) => m.id === saved.id) ? saved : null;
  return (await uploads()).some((m) => m.key === saved.key) ? saved : null;
}

/**
 * A picker's options, with a placeholder for a current choice the lists no longer have (a model
 * deleted in another tab: it keeps running until another is picked): "(deleted) <id>", the id as
 * last listed (`known`, by option value), else what the choice itself names.
 */
export function pickerOptions(options: readonly ModelOption[], current: ModelChoice | null, known: ReadonlyMap<string, Pick<ModelOption, 'id' | 'role'>>): ModelOption[] {
  if (!current) return [...options];
  const value = choiceValue(current);
  if (options.some((o) => o.value === value)) return [...options];
  const last = known.get(value);
  const id = last?.id ?? (current.kind === 'shipped' ? current.id : current.key);
  return [...options, { choice: current, value, label: `(deleted) ${id}`, id, role: last?.role ?? 'target', uploaded: current.kind === 'uploaded' }];
}

/** Shipped models first (the default first of all), then uploads, newest first. */
export function modelOptions(shipped: readonly ShippedModel[], defaultId: string | null, uploaded: readonly StoredModel[]): ModelOption[] {
  const ordered = [...shipped].sort((a, b) => Number(b.id === defaultId) - Number(a.id === defaultId));
  const options: ModelOption[] = ordered.map((m) => {
    const choice: ModelChoice = { kind: 'shipped', id: m.id };
    return { choice, value: choiceValue(choice), id: m.id, role: m.role, uploaded: false, label: `${m.id}${m.role === 'draft' ? ' (draft)' : ''}${m.id === defaultId ? ' · default' : ''}` };
  });
  for (const m of uploaded) {
    const choice: ModelChoice = { kind: 'uploaded', key: m.key };
    options.push({ choice, value: choiceValue(choice), id: m.id, role: m.role, uploaded: true, label: `${m.id}${m.role === 'draft' ? ' (draft)' : ''} · uploaded · ${m.sha256.slice(0, 8)}` });
  }
  return options;
}
