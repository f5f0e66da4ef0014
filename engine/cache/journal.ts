/**
 * The store's transaction journal: between begin() and commit() each change registers how to undo
 * itself, and rollback() runs those steps newest first. Outside a transaction nothing is kept.
 * `claim` marks arrays created inside the open transaction: nothing from before refers to them,
 * so they may be written in place without a copy.
 *
 * Savepoints (`mark` / `rollbackTo`) undo only the changes made after a mark, inside the open
 * transaction: speculative decoding takes back the draft's rejected steps this way. A mark
 * forgets which arrays were claimed, so an array created before it is copied (and journaled) on
 * its next write instead of being written in place beyond the mark's reach.
 */
export class Journal {
  private steps: (() => void)[] | null = null;
  private fresh = new WeakSet<object>();

  get open(): boolean {
    return this.steps !== null;
  }

  begin(): void {
    if (this.steps) throw new Error('cache transaction already open');
    this.steps = [];
    this.fresh = new WeakSet();
  }

  commit(): void {
    if (!this.steps) throw new Error('no cache transaction open');
    this.steps = null;
  }

  rollback(): void {
    const steps = this.steps;
    if (!steps) throw new Error('no cache transaction open');
    this.steps = null;
    for (let i = steps.length - 1; i >= 0; i--) steps[i]();
  }

  /** A savepoint inside the open transaction: rollbackTo(mark) undoes what follows it. */
  mark(): number {
    if (!this.steps) throw new Error('no cache transaction open');
    this.fresh = new WeakSet();
    return this.steps.length;
  }

  /** Undoes every change made after `mark`, newest first; the transaction stays open. */
  rollbackTo(mark: number): void {
    const steps = this.steps;
    if (!steps) throw new Error('no cache transaction open');
    if (!Number.isInteger(mark) || mark < 0 || mark > steps.length) throw new RangeError(`no savepoint ${mark} in this transaction (${steps.length} changes)`);
    for (let i = steps.length - 1; i >= mark; i--) steps[i]();
    steps.length = mark;
    this.fresh = new WeakSet();
  }

  record(undo: () => void): void {
    this.steps?.push(undo);
  }

  claim(array: object): void {
    this.fresh.add(array);
  }

  /** whether `array` may be written in place (no transaction, or created inside this one) */
  owns(array: object): boolean {
    return !this.steps || this.fresh.has(array);
  }
}
