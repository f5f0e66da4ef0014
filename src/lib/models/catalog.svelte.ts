/**
 * The models a page can load: those shipped with the app (models/index.json) and those uploaded in
 * this browser (store.ts, kept live: an upload or a deletion in another tab shows at once). The
 * pickers of the explorer, /compare and /bench read it; `initialChoice` says what a page opens with.
 */
import type { StoredModel } from './db.ts';
import { choiceValue, savedChoice, type ModelChoice } from './choice.ts';
import { modelOptions, readShipped, type ModelOption, type ShippedModel } from './catalog.ts';
import { modelStore, type ModelStore } from './store.ts';

export class ModelCatalog {
  shipped = $state.raw<ShippedModel[]>([]);
  defaultId = $state.raw<string | null>(null);
  uploaded = $state.raw<StoredModel[]>([]);
  /** why the list of uploads could not be read (no IndexedDB here …) */
  uploadError = $state<string | null>(null);
  readonly options = $derived(modelOptions(this.shipped, this.defaultId, this.uploaded));
  /** resolves once both lists were read (or failed) the first time */
  readonly ready: Promise<void>;
  private subscription: { unsubscribe(): void } | null = null;

  constructor(
    modelsUrl: string,
    private readonly store: () => ModelStore = modelStore,
  ) {
    const shipped = readShipped(modelsUrl)
      .then((s) => {
        this.shipped = s.models;
        this.defaultId = s.defaultId;
      })
      .catch(() => undefined);
    const uploads = new Promise<void>((resolve) => {
      try {
        this.subscription = this.store()
          .live()
          .subscribe({
            next: (rows) => {
              this.uploaded = rows;
              this.uploadError = null;
              resolve();
            },
            error: (error: unknown) => {
              this.uploadError = error instanceof Error ? error.message : String(error);
              resolve();
            },
          });
      } catch (error) {
        this.uploadError = error instanceof Error ? error.message : String(error);
        resolve();
      }
    });
    this.ready = Promise.all([shipped, uploads]).then(() => undefined);
  }

  /** The option for a choice, if the app (still) has that model. */
  find(choice: ModelChoice | null): ModelOption | undefined {
    if (!choice) return undefined;
    const value = choiceValue(choice);
    return this.options.find((o) => o.value === value);
  }

  /**
   * What a page opens with: the model a link names when this browser has it (an upload with its
   * sha256, else a shipped model with its id: a different version is then reported by the page),
   * else the choice saved by the last page, if its model is still there; null = the default.
   */
  async initialChoice(linked?: { id: string; sha256: string }): Promise<ModelChoice | null> {
    await this.ready;
    if (linked) {
      const upload = this.uploaded.find((m) => m.sha256 === linked.sha256 && m.id === linked.id);
      if (upload) return { kind: 'uploaded', key: upload.key };
      if (this.shipped.some((m) => m.id === linked.id)) return { kind: 'shipped', id: linked.id };
    }
    const saved = savedChoice();
    return saved && this.find(saved) ? saved : null;
  }

  dispose(): void {
    this.subscription?.unsubscribe();
  }
}
