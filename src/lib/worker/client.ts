/**
 * The page side of the worker protocol: sends Commands, resolves each with its reply event and
 * streams `progress` / `step` events to the caller. A worker that dies (uncaught error, failed
 * script load) rejects everything pending with a `crash` error and reports through `onCrash`;
 * `restart()` gives a fresh worker.
 */
import type { Command, EngineEvent, ErrorKind, LoadProgressView, ReplyEvent } from './protocol.ts';
import { isReply } from './protocol.ts';

/** Distributes Omit over a union (so each command keeps its own fields). */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
export type CommandInput = DistributiveOmit<Command, 'id'>;

/** Where the worker finds the models and onnxruntime-web's wasm runtime (served by the app). */
export interface EngineUrls {
  models: string;
  wasm: string;
  mjs: string;
}

type ReadyEvent = Extract<EngineEvent, { type: 'ready' }>;

export class EngineFailure extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'EngineFailure';
  }

  /** Any thrown value as an EngineFailure (unknown errors are 'internal'). */
  static from(error: unknown): EngineFailure {
    return error instanceof EngineFailure ? error : new EngineFailure('internal', String(error));
  }
}

/** Anything that behaves like a Worker (a fake in tests). */
export type WorkerLike = Pick<Worker, 'postMessage' | 'terminate' | 'onmessage' | 'onerror'> & Partial<Pick<Worker, 'onmessageerror'>>;

interface Pending {
  resolve(event: ReplyEvent): void;
  reject(error: EngineFailure): void;
  onEvent?: (event: EngineEvent) => void;
}

export class EngineClient {
  private worker: WorkerLike;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  onCrash: ((message: string) => void) | null = null;

  constructor(private readonly createWorker: () => WorkerLike) {
    this.worker = this.attach(createWorker());
  }

  private attach(worker: WorkerLike): WorkerLike {
    worker.onmessage = (event: MessageEvent<EngineEvent>) => this.receive(event.data);
    worker.onerror = (event: ErrorEvent) => {
      const message = event?.message || 'the worker script failed';
      event?.preventDefault?.();
      this.crash(message);
    };
    worker.onmessageerror = () => this.crash('a message from the worker could not be read');
    return worker;
  }

  private receive(event: EngineEvent): void {
    const pending = event.id === null ? undefined : this.pending.get(event.id);
    if (!pending) return;
    if (!isReply(event)) {
      pending.onEvent?.(event);
      return;
    }
    this.pending.delete(event.id!);
    if (event.type === 'error') pending.reject(new EngineFailure(event.kind, event.message));
    else pending.resolve(event);
  }

  private crash(message: string): void {
    const failure = new EngineFailure('crash', `The engine worker stopped unexpectedly: ${message}`);
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(failure);
    this.onCrash?.(failure.message);
  }

  /** Sends a command; resolves with its reply, rejects with EngineFailure on an error reply or a crash. */
  /** Loads the default model of `urls.models`; `onProgress` sees every download / verify / session event. */
  loadModel(urls: EngineUrls, threads: number, onProgress: (progress: LoadProgressView) => void): Promise<ReadyEvent> {
    return this.request<ReadyEvent>(
      { type: 'load', modelsUrl: urls.models, wasmUrl: urls.wasm, mjsUrl: urls.mjs, threads },
      (event) => {
        if (event.type === 'progress') onProgress(event.progress);
      },
    );
  }

  request<T extends ReplyEvent = ReplyEvent>(command: CommandInput, onEvent?: (event: EngineEvent) => void): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (e: ReplyEvent) => void, reject, onEvent });
      try {
        this.worker.postMessage({ ...command, id } as Command);
      } catch (error) {
        this.pending.delete(id);
        reject(new EngineFailure('internal', (error as Error).message));
      }
    });
  }

  /** Fire-and-forget (pause, views): the reply is an ack. */
  send(command: CommandInput): void {
    void this.request(command).catch(() => undefined);
  }

  get busy(): boolean {
    return this.pending.size > 0;
  }

  /** Terminates the worker (pending requests fail) and starts a fresh one. */
  restart(): void {
    const old = this.worker;
    old.onmessage = null;
    old.onerror = null;
    old.terminate();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(new EngineFailure('crash', 'the engine was restarted'));
    this.worker = this.attach(this.createWorker());
  }

  dispose(): void {
    this.worker.terminate();
    this.pending.clear();
  }
}
