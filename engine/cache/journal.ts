/**
 * The store's transaction journal: between begin() and commit() each change registers how to undo
 * itself, and rollback() runs those steps newest first. Outside a transaction nothing is kept.
 * `claim` marks arrays created inside the open transaction: nothing from before refers to them,
 * so they may be written in place without a copy.
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
