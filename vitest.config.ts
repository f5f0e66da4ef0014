import { svelte } from '@sveltejs/vite-plugin-svelte';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 30_000,
    projects: [
      {
        // engine, CLI and every other Node test
        test: { name: 'engine', include: ['tests/**/*.test.ts'], exclude: ['tests/ui/**', 'tests/components/**'], testTimeout: 30_000 },
      },
      {
        // the app's framework-free modules (worker host, protocol, charts, caching) in Node
        test: { name: 'ui', include: ['tests/ui/**/*.test.ts'], testTimeout: 30_000 },
      },
      {
        // Svelte components and runes state in a DOM (happy-dom)
        plugins: [svelte({ compilerOptions: { runes: true } })],
        // $app/paths has no SvelteKit runtime here: plain paths (tests/components/app-paths.ts)
        resolve: { conditions: ['browser'], alias: { '$app/paths': fileURLToPath(new URL('./tests/components/app-paths.ts', import.meta.url)) } },
        test: { name: 'components', include: ['tests/components/**/*.test.ts'], environment: 'happy-dom', testTimeout: 30_000 },
      },
    ],
  },
});
