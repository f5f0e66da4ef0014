import { copyFileSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig, type Plugin } from 'vite';

const root = dirname(fileURLToPath(import.meta.url));

/**
 * onnxruntime-web's wasm runtime is served by the app itself, never from a CDN: the files are
 * copied from node_modules into static/ort/ (gitignored) before SvelteKit lists the static files,
 * so `vite dev`, `vite build` (→ build/ort/) and the service worker's precache all see them.
 * Only the plain wasm build is needed: the engine worker imports `onnxruntime-web/wasm` (no WebGPU).
 */
export const ORT_FILES = ['ort-wasm-simd-threaded.wasm', 'ort-wasm-simd-threaded.mjs'];

function copyOrtRuntime(): Plugin {
  return {
    name: 'kvscope:ort-runtime',
    enforce: 'pre',
    config() {
      const from = join(root, 'node_modules/onnxruntime-web/dist');
      const to = join(root, 'static/ort');
      mkdirSync(to, { recursive: true });
      for (const file of ORT_FILES) {
        const source = join(from, file);
        const target = join(to, file);
        let fresh = false;
        try {
          const a = statSync(source);
          const b = statSync(target);
          fresh = a.size === b.size && b.mtimeMs >= a.mtimeMs;
        } catch {
          fresh = false;
        }
        if (!fresh) copyFileSync(source, target);
      }
    },
  };
}

/**
 * onnxruntime-web's bundle holds a `new URL("ort-wasm-simd-threaded.wasm", import.meta.url)`
 * fallback that Vite would turn into a second, hashed 14 MB copy of the runtime. The worker always
 * sets ort.env.wasm.wasmPaths to the static copy, so mark that URL @vite-ignore.
 */
function ortWasmFromStatic(): Plugin {
  return {
    name: 'kvscope:ort-wasm-from-static',
    enforce: 'pre',
    transform(code, id) {
      if (!id.includes('onnxruntime-web') || !code.includes('new URL("ort-wasm')) return null;
      return { code: code.replaceAll('new URL("ort-wasm', 'new URL(/* @vite-ignore */ "ort-wasm'), map: null };
    },
  };
}

export default defineConfig({
  plugins: [copyOrtRuntime(), ortWasmFromStatic(), sveltekit()],
  resolve: {
    // The engine imports 'onnxruntime-web'; in the browser only the wasm backend is used, whose
    // runtime is ort-wasm-simd-threaded.wasm (the default entry would need the 28 MB WebGPU build).
    alias: [{ find: /^onnxruntime-web$/, replacement: 'onnxruntime-web/wasm' }],
  },
  worker: { format: 'es', plugins: () => [ortWasmFromStatic()] },
  optimizeDeps: { exclude: ['onnxruntime-web'] },
  build: { chunkSizeWarningLimit: 1500 },
});
