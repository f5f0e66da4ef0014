/** Mounting a Svelte component in happy-dom for the component tests; `afterEach(unmountAll)` removes what was mounted. */
import { flushSync, mount, unmount, type Component } from 'svelte';

const mounted: ReturnType<typeof mount>[] = [];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function render(component: Component<any>, props: Record<string, unknown>): HTMLElement {
  const target = document.createElement('div');
  document.body.appendChild(target);
  mounted.push(mount(component, { target, props }));
  flushSync();
  return target;
}

export function unmountAll(): void {
  for (const c of mounted.splice(0)) unmount(c);
  document.body.innerHTML = '';
}
