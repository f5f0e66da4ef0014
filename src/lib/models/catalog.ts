/**
 * The models pickers offer, as plain data: the shipped ones (models/index.json) and the uploaded
 * ones (store.ts), each with the choice that loads it (choice.ts). ModelCatalog
 * (catalog.svelte.ts) keeps both lists live for a page.
 */
import type { StoredModel } from './db.ts';
import { choiceValue, type ModelChoice } from './choice.ts';

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

export async function readShipped(modelsUrl: string, fetchFn: typeof fetch = fetch): Promise<{ defaultId: string | null; models: ShippedModel[] }> {
  const base = modelsUrl.endsWith('/') ? modelsUrl : `${modelsUrl}/`;
  const response = await fetchFn(`${base}index.json`);
  if (!response.ok) throw new Error(`models/index.json: HTTP ${response.status}`);
  const index = (await response.json()) as IndexJson;
  const models = (index.models ?? []).flatMap((m): ShippedModel[] => (typeof m.id === 'string' ? [{ id: m.id, role: m.role === 'draft' ? 'draft' : 'target' }] : []));
  return { defaultId: typeof index.default === 'string' ? index.default : (models[0]?.id ?? null), models };
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
