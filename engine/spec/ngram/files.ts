/**
 * Where token indexes live (static/indexes/): index.json names the default and lists the
 * indexes; each index is a directory <id>/ with manifest.json and one file per variant. This
 * module is browser-safe: the app's worker gets its DrafterEnv.loadIndex from `indexLoader`,
 * Node from files-node.ts. Ids and file names are checked before they reach a path or URL, so
 * a drafter spec cannot name a file outside the index directory.
 */
import { DraftSpecError } from '../../errors.ts';
import type { IndexVariant } from './token-index.ts';

export const INDEX_LIST_FILE = 'index.json';
export const INDEX_MANIFEST_FILE = 'manifest.json';
export const INDEX_MANIFEST_FORMAT = 'kvscope-token-index';
/** The file of each variant inside an index directory. */
export const VARIANT_FILES: Record<IndexVariant, string> = { 'suffix-array': 'suffix-array.bin', 'fm-index': 'fm-index.bin' };

/** No slash, no leading dot: an id or file name stays one path segment. */
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export function isIndexId(id: string): boolean {
  return SEGMENT.test(id);
}

export function checkIndexPath(id: string, file: string): void {
  if (!SEGMENT.test(id)) throw new DraftSpecError(`index: ${JSON.stringify(id)} is not an index id (letters, digits, ".", "_", "-"; no slashes)`);
  if (!SEGMENT.test(file)) throw new DraftSpecError(`index ${id}: ${JSON.stringify(file)} is not an index file name`);
}

/** static/indexes/index.json */
export interface IndexList {
  default: string;
  indexes: { id: string; description?: string; tokens?: number }[];
}

/** An index's manifest.json (what `kvscope index build` writes). */
export interface IndexManifest {
  format: typeof INDEX_MANIFEST_FORMAT;
  id: string;
  source: string;
  documents: number;
  /** corpus tokens, document separators included */
  tokens: number;
  /** the corpus as 16- or 32-bit token ids */
  corpus_bytes: number;
  vocab_size: number;
  tokenizer_sha256: string;
  files: Partial<Record<IndexVariant, { path: string; bytes: number; sha256: string }>>;
}

export function parseIndexList(text: string, where: string): IndexList {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new DraftSpecError(`${where}: not valid JSON`);
  }
  const list = json as Partial<IndexList> | null;
  if (typeof list !== 'object' || list === null || typeof list.default !== 'string' || !Array.isArray(list.indexes)) {
    throw new DraftSpecError(`${where}: expected {"default": "<index id>", "indexes": [...]}`);
  }
  if (!isIndexId(list.default)) throw new DraftSpecError(`${where}: default ${JSON.stringify(list.default)} is not an index id`);
  return list as IndexList;
}

export function parseIndexManifest(bytes: Uint8Array, where: string): IndexManifest {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new DraftSpecError(`${where}: not valid JSON`);
  }
  const m = json as Partial<IndexManifest> | null;
  if (typeof m !== 'object' || m === null || m.format !== INDEX_MANIFEST_FORMAT) throw new DraftSpecError(`${where}: not a token index manifest (format must be "${INDEX_MANIFEST_FORMAT}")`);
  if (typeof m.id !== 'string' || typeof m.tokenizer_sha256 !== 'string' || typeof m.files !== 'object' || m.files === null) {
    throw new DraftSpecError(`${where}: needs "id", "tokenizer_sha256" and "files"`);
  }
  return m as IndexManifest;
}

export type LoadIndexFile = (id: string, file: string) => Promise<Uint8Array>;

/**
 * DrafterEnv.loadIndex over HTTP (the worker): `${base}/<id>/<file>`, with '' resolved through
 * `${base}/index.json`. fetchBytes rejects on a missing file; its message is kept.
 */
export function indexLoader(fetchBytes: (url: string) => Promise<Uint8Array>, base: string): LoadIndexFile {
  const root = base.replace(/\/+$/, '');
  let list: Promise<IndexList> | null = null;
  const defaultId = async () => {
    list ??= fetchBytes(`${root}/${INDEX_LIST_FILE}`).then((bytes) => parseIndexList(new TextDecoder().decode(bytes), `${root}/${INDEX_LIST_FILE}`));
    list.catch(() => (list = null));
    return (await list).default;
  };
  return async (id, file) => {
    const resolved = id === '' ? await defaultId() : id;
    checkIndexPath(resolved, file);
    return fetchBytes(`${root}/${resolved}/${file}`);
  };
}
