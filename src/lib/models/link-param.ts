/**
 * The model a /compare or /bench link was made with: `model=<id>~<sha256>` (modelSha256), added to
 * the page's own query (compare/url.ts, bench/url.ts read every other field and ignore this one).
 * Opening such a link selects that model when this browser has it (catalog.svelte.ts
 * initialChoice) and says which model to load when not (open-experiment.ts modelMismatch).
 */
export interface LinkedModel {
  id: string;
  sha256: string;
}

const PARAM = 'model';

export function withModelParam(query: string, model: LinkedModel | null): string {
  if (!model) return query;
  const q = new URLSearchParams(query.startsWith('?') ? query.slice(1) : query);
  q.set(PARAM, `${model.id}~${model.sha256}`);
  return q.toString();
}

/** The model a query names, or null (none, or not `<id>~<64 hex digits>`). */
export function readModelParam(search: string): LinkedModel | null {
  const raw = new URLSearchParams(search.startsWith('?') ? search.slice(1) : search).get(PARAM);
  const match = raw ? /^(.{1,200})~([0-9a-f]{64})$/s.exec(raw) : null;
  return match ? { id: match[1], sha256: match[2] } : null;
}
