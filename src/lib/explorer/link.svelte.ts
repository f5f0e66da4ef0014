/**
 * The explorer's address and share link (issue 11): opening the experiment a link carries, keeping
 * the address in sync with the session (replaced, never pushed: no flood of history entries), and
 * Copy link. The address also carries the edited prompt while it is not applied (the wire's `e`),
 * and the tab's session storage keeps it too (with the prompt it was edited from), for a reload
 * before any session exists or of a session too long for a link: a reload never loses it.
 *
 * A link that cannot be opened stays in the address until the session changes, so that the user
 * still has it (to load the model it names, or to report it).
 */
import { experimentQuery, linkTooLong, readExperimentQuery, type LinkReading } from '../links/codec.ts';
import type { Experiment } from '../links/experiment.ts';
import { OpenError, replayExperiment, showView, takeSetup } from './open-experiment.ts';
import type { ExplorerState } from './state.svelte.ts';

const DRAFT_KEY = 'kvscope:explorer-prompt';

/** A session's links: to share (null: past the cap, `tooLong` says why) and for the address (with the unapplied edit when it fits; '' for none). */
interface SessionLinks {
  share: string | null;
  address: string;
  tooLong: string | null;
}

export class ExplorerLink {
  /** why the link in the address could not be opened (stays until dismissed) */
  error = $state<string | null>(null);
  /** a link's replay in progress: decode steps done of those it asks for */
  opening = $state.raw<{ done: number; total: number } | null>(null);
  /** the link Copy link made last, and what happened to the clipboard */
  shared = $state.raw<{ url: string; copied: boolean } | null>(null);

  private pending: { experiment: Experiment; draft: string | null } | null = null;
  /** the address is held: 'first' = until the first session exists, a query = while the session is that one */
  private hold: string | null = null;
  private stopRequested = false;
  /** the last session encoded (the address, Copy link and the toolbar all ask on every render) */
  private memo: { experiment: Experiment; draft: string | null; links: SessionLinks } | null = null;

  constructor(private readonly app: ExplorerState) {}

  /** The session's links, encoded once per session state and prompt edit. */
  private links(): SessionLinks | null {
    const experiment = this.app.experiment;
    if (!experiment) return null;
    const draft = this.draft;
    if (this.memo?.experiment !== experiment || this.memo.draft !== draft) {
      const share = experimentQuery(experiment);
      const links: SessionLinks = {
        share,
        address: (draft !== null && share !== null ? experimentQuery(experiment, draft) : null) ?? share ?? '',
        tooLong: share === null ? linkTooLong(experiment) : null,
      };
      this.memo = { experiment, draft, links };
    }
    return this.memo.links;
  }

  /** the edited prompt when it differs from the session's */
  get draft(): string | null {
    return this.app.appliedPrompt !== null && this.app.prompt !== this.app.appliedPrompt ? this.app.prompt : null;
  }

  /**
   * The address's query for the session now (with the unapplied edit when it fits): '' for a
   * session too long for a link (the address then carries none), null to leave the address as it
   * is (no session yet, a link being opened, a link that failed held).
   */
  get addressQuery(): string | null {
    const links = this.links();
    if (!links || this.opening) return null;
    const query = links.address;
    if (this.hold === 'first') this.hold = query;
    if (this.hold !== null) {
      if (this.hold === query) return null;
      this.hold = null;
    }
    return query;
  }

  /** why the session has no share link (it would pass the 8 KB cap), or null */
  get tooLong(): string | null {
    return this.links()?.tooLong ?? null;
  }

  get canShare(): boolean {
    return this.opening === null && (this.links()?.share ?? null) !== null;
  }

  /**
   * Reads the page's address before the model loads: a link's setup is taken at once (the first
   * prefill is then already the link's); its actions run once the model is ready (afterLoad).
   * Without a link, the prompt this tab was editing comes back.
   */
  beforeLoad(search: string): LinkReading {
    const reading = readExperimentQuery(search);
    if (reading.kind === 'error') {
      this.error = reading.message;
      this.hold = 'first';
    } else if (reading.kind === 'experiment') {
      try {
        takeSetup(this.app, reading.experiment);
        this.pending = { experiment: reading.experiment, draft: reading.draft };
      } catch (error) {
        this.error = `This link cannot be opened: ${error instanceof Error ? error.message : String(error)}.`;
        this.hold = 'first';
      }
    } else {
      const saved = readDraft();
      if (saved !== null) this.app.prompt = saved.prompt;
    }
    return reading;
  }

  /** Replays the link read by beforeLoad (the model is loaded and the first session started). */
  async afterLoad(): Promise<void> {
    const pending = this.pending;
    this.pending = null;
    if (!pending || this.app.status !== 'ready') return;
    await this.open(pending.experiment, pending.draft);
  }

  /**
   * Opens an experiment: replays it, shows its view, puts the unapplied prompt edit back (the
   * link's, or this tab's own edit of the same prompt from before a reload).
   */
  async open(experiment: Experiment, draft: string | null = null): Promise<boolean> {
    this.error = null;
    this.stopRequested = false;
    this.opening = { done: 0, total: 0 };
    try {
      await replayExperiment(this.app, experiment, (done, total) => (this.opening = { done, total }), () => this.stopRequested);
      const saved = readDraft();
      const edit = draft ?? (saved && saved.applied === experiment.prompt ? saved.prompt : null);
      if (edit !== null && edit !== experiment.prompt) this.app.setPrompt(edit);
      return true;
    } catch (error) {
      const reason = error instanceof OpenError ? error.message : error instanceof Error ? error.message : String(error);
      this.error = `This link cannot be opened: ${reason}.`;
      if (!this.stopRequested) this.hold = 'first';
      // what did replay is shown as far as it got; the view the link names where it exists
      if (this.app.steps.length > 0) showView(this.app, { ...experiment, view: { ...experiment.view, step: null } });
      return false;
    } finally {
      this.opening = null;
    }
  }

  /** Stops a link's replay between its steps (the session stays where it got to). */
  stop(): void {
    if (!this.opening) return;
    this.stopRequested = true;
    this.app.pause();
  }

  dismissError(): void {
    this.error = null;
  }

  /** Keeps the tab's edited prompt, with the prompt it was edited from, for a reload. */
  rememberDraft(): void {
    try {
      sessionStorage.setItem(DRAFT_KEY, JSON.stringify({ prompt: this.app.prompt, applied: this.app.appliedPrompt }));
    } catch {
      // storage off (private mode, quota): the address still carries the edit once a session exists
    }
  }

  /** The share link of the session now (absolute, without the unapplied edit), or null. */
  shareUrl(base: string): string | null {
    const query = this.links()?.share ?? null;
    return query ? new URL(`${base}/?${query}`, location.href).href : null;
  }

  /** Copy link: writes the share link to the clipboard; `shared` shows it either way. */
  async copy(base: string): Promise<void> {
    const url = this.shareUrl(base);
    if (!url) return;
    let copied = false;
    try {
      await navigator.clipboard.writeText(url);
      copied = true;
    } catch {
      // no clipboard permission: the link is shown selected for Ctrl+C instead
    }
    this.shared = { url, copied };
  }
}

function readDraft(): { prompt: string; applied: string | null } | null {
  try {
    const saved: unknown = JSON.parse(sessionStorage.getItem(DRAFT_KEY) ?? 'null');
    if (typeof saved !== 'object' || saved === null) return null;
    const { prompt, applied } = saved as Record<string, unknown>;
    return typeof prompt === 'string' ? { prompt, applied: typeof applied === 'string' ? applied : null } : null;
  } catch {
    return null;
  }
}
