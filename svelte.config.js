import adapter from '@sveltejs/adapter-static';
import { vitePreprocess } from '@sveltejs/vite-plugin-svelte';

/** @type {import('@sveltejs/kit').Config} */
const config = {
  preprocess: vitePreprocess(),
  compilerOptions: { runes: true },
  kit: {
    // A static site (DESIGN.md §6): every page is prerendered into build/, deployable anywhere.
    adapter: adapter({ pages: 'build', assets: 'build', precompress: false, strict: true }),
    serviceWorker: { register: true },
    version: { pollInterval: 0 },
  },
};

export default config;
