/**
 * Messages between /models and its check worker (check.worker.ts): one `check` request per
 * upload, answered by `progress` events and then one `stored` or `failed`.
 */
import type { StoredModel } from './db.ts';
import type { FolderFile } from './folder.ts';

export interface CheckRequest {
  type: 'check';
  /** the folder's name, for messages */
  folder: string;
  files: FolderFile[];
  /** onnxruntime-web's .wasm, served by the app */
  wasmUrl: string;
}

/** read: the files are read; verify: their sha256; session: the graph is loaded; store: written to the browser. */
export type CheckPhase = 'manifest' | 'read' | 'verify' | 'session' | 'store';

export interface CheckProgress {
  phase: CheckPhase;
  /** the file being worked on ('' before the manifest is read) */
  file: string;
  /** 0…1 over the whole check */
  fraction: number;
  /** bytes of the model's files read and checked so far, of `total` */
  done: number;
  total: number;
}

export type CheckReply =
  | { type: 'progress'; progress: CheckProgress }
  /** updated: the optional files of a model stored already that this upload replaced (store.ts AddResult) */
  | { type: 'stored'; model: StoredModel; duplicate: boolean; updated: string[] }
  | { type: 'failed'; message: string };

/** Files of a model folder kept besides those the manifest lists (docs/model-format.md; docs/calibration.md). */
export const OPTIONAL_FILES = ['calibration.json', 'MODEL_CARD.md', 'reference.json'] as const;
