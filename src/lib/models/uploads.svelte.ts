/**
 * The /models page's state: the uploaded models (live), one upload at a time (checked, then
 * stored: check.ts), its progress and its outcome, and deleting a model.
 */
import { CANCELLED_MESSAGE, checkFolder, type WorkerLike } from './check.ts';
import type { CheckProgress } from './check-protocol.ts';
import type { StoredModel } from './db.ts';
import type { PickedFolder } from './folder.ts';
import type { ModelStore } from './store.ts';

export interface UploadOutcome {
  kind: 'stored' | 'duplicate' | 'cancelled' | 'failed';
  message: string;
}

const PHASE_TEXT: Record<CheckProgress['phase'], string> = {
  manifest: 'reading manifest.json',
  read: 'reading',
  verify: 'checking the sha256 of',
  session: 'loading the graph of',
  store: 'storing the files in this browser',
};

export function progressText(p: CheckProgress): string {
  const file = p.phase === 'store' || p.phase === 'manifest' ? '' : ` ${p.file}`;
  const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
  const bytes = p.total > 0 && (p.phase === 'read' || p.phase === 'verify') ? ` · ${mb(p.done)} of ${mb(p.total)} MiB checked` : '';
  return `${PHASE_TEXT[p.phase]}${file}${bytes}`;
}

export class UploadsState {
  models = $state.raw<StoredModel[]>([]);
  listError = $state<string | null>(null);
  progress = $state.raw<CheckProgress | null>(null);
  checking = $state<string | null>(null);
  outcome = $state.raw<UploadOutcome | null>(null);
  private subscription: { unsubscribe(): void } | null = null;
  private controller: AbortController | null = null;

  constructor(
    private readonly store: ModelStore,
    private readonly wasmUrl: string,
    /** ids of the shipped models (an upload with one of them is told how it is kept apart) */
    private readonly shippedIds: () => readonly string[],
    private readonly createWorker?: () => WorkerLike,
  ) {}

  /** Lists the stored models (live), and removes the files an interrupted upload left behind (store.ts sweep). */
  start(): void {
    void this.store.sweep().catch(() => undefined);
    this.subscription = this.store.live().subscribe({
      next: (rows) => {
        this.models = rows;
        this.listError = null;
      },
      error: (error: unknown) => (this.listError = `The stored models cannot be read: ${error instanceof Error ? error.message : String(error)}`),
    });
  }

  dispose(): void {
    this.subscription?.unsubscribe();
    this.cancel();
  }

  /** Ends the running check (its worker is terminated); busy is false once upload() has settled. */
  cancel(): void {
    this.controller?.abort();
  }

  get busy(): boolean {
    return this.checking !== null;
  }

  async upload(folder: PickedFolder): Promise<void> {
    if (this.busy) return;
    const name = folder.name || 'the picked files';
    this.checking = name;
    this.outcome = null;
    this.progress = null;
    const controller = (this.controller = new AbortController());
    try {
      const { model, duplicate, updated } = await checkFolder(folder, this.wasmUrl, (p) => (this.progress = p), this.createWorker, controller.signal);
      const sha = `sha256 ${model.sha256.slice(0, 12)}…`;
      if (duplicate && updated.length > 0) {
        this.outcome = { kind: 'stored', message: `${model.name} (${model.id}, ${sha}) is stored already: updated ${updated.join(', ')}; nothing else changed.` };
      } else if (duplicate) this.outcome = { kind: 'duplicate', message: `${model.name} (${model.id}, ${sha}) is stored already: nothing was added.` };
      else {
        const shipped = this.shippedIds().includes(model.id)
          ? ` Its id is also a shipped model's: the model pickers list this one apart, as “${model.id} · uploaded · ${model.sha256.slice(0, 8)}”, and links made with it name its own sha256.`
          : '';
        this.outcome = { kind: 'stored', message: `Checked and stored ${model.name} (${model.id}, ${sha}): pick it in the explorer, /compare or /bench.${shipped}` };
      }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      // a check cancelled while storing may have stored the model: the list shows what is there
      if (message === CANCELLED_MESSAGE) this.outcome = { kind: 'cancelled', message: `The check of ${name} was cancelled.` };
      else this.outcome = { kind: 'failed', message: `${name} was not stored: ${message}` };
    } finally {
      this.controller = null;
      this.checking = null;
      this.progress = null;
    }
  }

  async remove(model: StoredModel): Promise<void> {
    try {
      await this.store.remove(model.key);
      this.outcome = { kind: 'stored', message: `Deleted ${model.name} (${model.id}, sha256 ${model.sha256.slice(0, 12)}…).` };
    } catch (error) {
      this.outcome = { kind: 'failed', message: `${model.name} could not be deleted: ${error instanceof Error ? error.message : String(error)}` };
    }
  }
}
