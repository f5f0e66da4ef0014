/** Number formatting of the text reports. */

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

/** 5200 → "5,200" */
export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

/** 7123456 → "7.12 M", 5200 → "5.2 k" */
export function formatMillions(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : String(n);
}

export function percent(x: number): string {
  return `${(100 * x).toFixed(0)}%`;
}

/** A bar of `width` cells for x in [0, 1], with eighth-cell resolution, padded to `width`. */
export function bar(x: number, width = 30): string {
  const cells = Math.max(0, Math.min(width, x * width));
  const full = Math.floor(cells);
  const partial = ' ▏▎▍▌▋▊▉'[Math.round((cells - full) * 8) % 8];
  return ('█'.repeat(full) + (full < width && partial !== ' ' ? partial : '')).padEnd(width);
}
