import { afterEach, describe, expect, it, vi } from 'vitest';
import { AddressSync } from '../../src/lib/links/address-sync.ts';

describe('AddressSync', () => {
  afterEach(() => {
    vi.useRealTimers();
    history.replaceState(null, '', location.pathname);
  });

  it('writes the first change at once and the last of a burst after the wait, with no history entries', () => {
    vi.useFakeTimers();
    const address = new AddressSync(250);
    const entries = history.length;
    address.write('a=1');
    expect(location.search).toBe('?a=1');
    address.write('a=2');
    address.write('a=3');
    expect(location.search).toBe('?a=1');
    vi.advanceTimersByTime(300);
    expect(location.search).toBe('?a=3');
    expect(history.length).toBe(entries);
    address.dispose();
  });

  it('leaving or reloading the page inside the wait still lands the last state', () => {
    vi.useFakeTimers();
    const address = new AddressSync(250);
    address.write('s=1');
    address.write('s=3');
    expect(location.search).toBe('?s=1');
    window.dispatchEvent(new Event('pagehide'));
    expect(location.search).toBe('?s=3');
    address.dispose();
  });

  it('a disposed sync writes nothing more', () => {
    vi.useFakeTimers();
    const address = new AddressSync(250);
    address.write('d=1');
    address.write('d=2');
    address.dispose();
    window.dispatchEvent(new Event('pagehide'));
    vi.advanceTimersByTime(300);
    expect(location.search).toBe('?d=1');
  });
});
