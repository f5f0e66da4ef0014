/** $app/paths for component tests (no SvelteKit runtime): the app's paths are the plain paths. */
export const base = '';
export const assets = '';
export function resolve(path: string): string {
  return path;
}
