/**
 * Render timings for the UI benchmark (bench/ui.ts reads `window.__kvscopePerf`): every chart
 * records how long each draw took. Bounded: the newest LIMIT samples per chart are kept.
 */
const LIMIT = 2000;

export interface PerfRecorder {
  renders: Record<string, number[]>;
}

function recorder(): PerfRecorder | null {
  if (typeof globalThis === 'undefined') return null;
  const g = globalThis as { __kvscopePerf?: PerfRecorder };
  g.__kvscopePerf ??= { renders: {} };
  return g.__kvscopePerf;
}

export function recordRender(name: string, ms: number): void {
  const r = recorder();
  if (!r) return;
  const list = (r.renders[name] ??= []);
  list.push(ms);
  if (list.length > LIMIT) list.splice(0, list.length - LIMIT);
}

/** Runs `draw` and records its duration under `name`. */
export function timed<T>(name: string, draw: () => T): T {
  const t0 = performance.now();
  try {
    return draw();
  } finally {
    recordRender(name, performance.now() - t0);
  }
}

export function mark(name: string): void {
  try {
    if (performance.getEntriesByName(name, 'mark').length === 0) performance.mark(name);
  } catch {
    // marks are best effort
  }
}
