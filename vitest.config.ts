import { svelte } from '@sveltejs/vite-plugin-svelte';
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
        resolve: { conditions: ['browser'] },
        test: { name: 'components', include: ['tests/components/**/*.test.ts'], environment: 'happy-dom', testTimeout: 30_000 },
      },
    ],
  },
});
