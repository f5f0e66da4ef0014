/**
 * The models a page can load: those shipped with the app (models/index.json) and those uploaded in
 * this browser (store.ts, kept live: an upload or a deletion in another tab shows at once). The
 * pickers of the explorer, /compare and /bench read it; `initialChoice` says what a page opens with.
 * The two lists are read apart: the shipped one offline from the worker's cached copy
 * (catalog.ts readShipped), and a page on the default model never waits for IndexedDB.
 */
import type { StoredModel } from './db.ts';
import { choiceValue, savedChoice, type ModelChoice } from './choice.ts';
import { modelOptions, pickInitialChoice, readShipped, type ModelOption, type ShippedModel } from './catalog.ts';
import type { LinkedModel } from './link-param.ts';
import { modelStore, type ModelStore } from './store.ts';

/** how long a page waits for IndexedDB's list of uploads before opening without it (it may never answer) */
const UPLOADS_WAIT_MS = 3000;

export class ModelCatalog {
  shipped = $state.raw<ShippedModel[]>([]);
  defaultId = $state.raw<string | null>(null);
  uploaded = $state.raw<StoredModel[]>([]);
  /** why the list of uploads could not be read (no IndexedDB here …) */
  uploadError = $state<string | null>(null);
  readonly options = $derived(modelOptions(this.shipped, this.defaultId, this.uploaded));
  /** resolves once both lists were read (or failed) the first time */
  readonly ready: Promise<void>;
  private readonly shippedRead: Promise<void>;
  private readonly uploadsRead: Promise<void>;
  private subscription: { unsubscribe(): void } | null = null;

  constructor(
    modelsUrl: string,
    private readonly store: () => ModelStore = modelStore,
    readIndex: typeof readShipped = readShipped,
    private readonly uploadsWaitMs = UPLOADS_WAIT_MS,
  ) {
    const shipped = readIndex(modelsUrl)
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
    this.shippedRead = shipped;
    this.uploadsRead = uploads;
    this.ready = Promise.all([shipped, uploads]).then(() => undefined);
  }

  /** The option for a choice, if the app (still) has that model. */
  find(choice: ModelChoice | null): ModelOption | undefined {
    if (!choice) return undefined;
    const value = choiceValue(choice);
    return this.options.find((o) => o.value === value);
  }

  /**
   * What a page opens with (catalog.ts pickInitialChoice): the model its link names when this
   * browser has it, the default for a link without one, the saved choice for a bare address.
   * `fromLink`: the address carries a link's setup (true whenever a model is linked).
   */
  async initialChoice(linked?: LinkedModel | null, fromLink = linked != null): Promise<ModelChoice | null> {
    return pickInitialChoice(
      { linked: linked ?? null, fromLink },
      savedChoice(),
      async () => {
        await this.shippedRead;
        return this.shipped;
      },
      async () => {
        await this.uploadsOrTimeout();
        return this.uploaded;
      },
    );
  }

  /** The uploads' first reading, or a note that IndexedDB did not answer in time (the list fills in if it does later). */
  private async uploadsOrTimeout(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), this.uploadsWaitMs)));
    const answer = await Promise.race([this.uploadsRead, late]);
    clearTimeout(timer);
    if (answer === 'late') this.uploadError = `this browser's storage (IndexedDB) did not answer within ${this.uploadsWaitMs / 1000} s: uploaded models are not listed`;
  }

  dispose(): void {
    this.subscription?.unsubscribe();
  }
}
