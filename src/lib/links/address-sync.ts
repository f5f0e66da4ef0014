/**
 * Keeps the address's query string equal to a page's state (the explorer, /compare, /bench) as
 * the user works: history.replaceState, never pushState (no history entry per edit), at most once per
 * `ms` while the state keeps changing (a run updates it every few milliseconds); the last state
 * always lands, also when the page is left or reloaded inside the wait (pagehide writes it). The
 * first change after a quiet spell is written at once, so a copied address is never behind a
 * finished action. An empty query leaves the bare address.
 */
export class AddressSync {
  private last = -Infinity;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private pending: string | undefined;
  private readonly flush = () => {
    if (this.pending !== undefined) this.replace(this.pending);
  };

  constructor(private readonly ms = 250) {
    globalThis.addEventListener?.('pagehide', this.flush);
  }

  write(query: string): void {
    clearTimeout(this.timer);
    const wait = this.last + this.ms - performance.now();
    if (wait <= 0) this.replace(query);
    else {
      this.pending = query;
      this.timer = setTimeout(this.flush, wait);
    }
  }

  dispose(): void {
    clearTimeout(this.timer);
    globalThis.removeEventListener?.('pagehide', this.flush);
  }

  private replace(query: string): void {
    clearTimeout(this.timer);
    this.pending = undefined;
    this.last = performance.now();
    if (location.search.slice(1) !== query) history.replaceState(history.state, '', query ? `${location.pathname}?${query}` : location.pathname);
  }
}
