// A static site: every route is prerendered by adapter-static. The explorer needs the browser
// (Web Worker, canvas, WebAssembly), so pages render client-side (the prerendered HTML is a shell).
export const prerender = true;
export const ssr = false;
export const trailingSlash = 'never';
