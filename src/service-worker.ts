/// <reference types="@sveltejs/kit" />
/// <reference no-default-lib="true"/>
/// <reference lib="esnext" />
/// <reference lib="webworker" />
/**
 * Offline support: the app shell (built JS/CSS, prerendered pages) and the wasm runtime are
 * precached per build; everything else same-origin is served network-first with a cached
 * fallback. Model files are NOT handled here: the engine worker caches them itself, keyed by
 * sha256 (src/lib/worker/model-cache.ts), and old versions are cleaned up there.
 */
import { build, files, prerendered, version } from '$service-worker';

declare const self: ServiceWorkerGlobalScope;

const CACHE = `kvscope-app-${version}`;
// model files only: the /models page (uploads, no trailing slash) is prerendered, so part of the shell
const MODEL_PREFIX = '/models/';
const SHELL = [...build, ...prerendered, ...files.filter((f) => !f.includes(MODEL_PREFIX) && !f.includes('/data/'))];

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('kvscope-app-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' && request.method !== 'HEAD') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.includes(MODEL_PREFIX) || url.pathname.includes('/__kvscope__/')) return;

  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      const shell = SHELL.includes(url.pathname) ? await cache.match(url.pathname) : undefined;
      if (shell) return shell;
      try {
        const response = await fetch(request);
        if (request.method === 'GET' && response.ok && response.type === 'basic') cache.put(request, response.clone()).catch(() => undefined);
        return response;
      } catch (error) {
        const cached = (await cache.match(request)) ?? (url.pathname === '/' || !url.pathname.includes('.') ? await cache.match('/') : undefined);
        if (cached) return cached;
        throw error;
      }
    })(),
  );
});
