#!/usr/bin/env node
/**
 * A tiny static file server for the built app (build/), used by the end-to-end tests and the UI
 * benchmark: correct MIME types (application/wasm, text/javascript for .mjs), Content-Length for
 * download progress, SPA fallback to index.html, and fault injection for error-path tests.
 *
 *   node scripts/serve-static.mjs [dir] [--port N]     (port 0 / default: a free port)
 */
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.md': 'text/markdown; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * Starts serving `root`. `faults` maps a URL path to a number (answer with that HTTP status) or
 * to 'corrupt' (serve the file with its bytes flipped, same size). Returns { url, port, faults, close }.
 */
export function serveStatic(root, { port = 0, host = '127.0.0.1', quiet = true } = {}) {
  const base = resolve(root);
  const faults = new Map();
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    let path = decodeURIComponent(url.pathname);
    const fault = faults.get(path);
    if (typeof fault === 'number') {
      res.writeHead(fault, { 'content-type': 'text/plain' });
      res.end(`fault injected: ${fault}`);
      return;
    }
    let file = normalize(join(base, path));
    if (!file.startsWith(base)) {
      res.writeHead(403);
      res.end();
      return;
    }
    let info;
    try {
      info = statSync(file);
      if (info.isDirectory()) {
        file = join(file, 'index.html');
        info = statSync(file);
      }
    } catch {
      // prerendered routes are files like /about.html; unknown paths fall back to the app shell
      try {
        info = statSync(`${file}.html`);
        file = `${file}.html`;
      } catch {
        if (extname(path) === '') {
          file = join(base, 'index.html');
          info = statSync(file);
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not found');
          return;
        }
      }
    }
    const headers = {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'content-length': String(info.size),
      'cache-control': 'no-cache',
    };
    if (req.method === 'HEAD') {
      res.writeHead(200, headers);
      res.end();
      return;
    }
    res.writeHead(200, headers);
    if (fault === 'corrupt') {
      const stream = createReadStream(file);
      let first = true;
      stream.on('data', (chunk) => {
        if (first) {
          chunk = Buffer.from(chunk);
          for (let i = 0; i < Math.min(64, chunk.length); i++) chunk[i] ^= 0xff;
          first = false;
        }
        res.write(chunk);
      });
      stream.on('end', () => res.end());
      stream.on('error', () => res.destroy());
      return;
    }
    createReadStream(file).pipe(res);
  });
  return new Promise((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const address = server.address();
      const actual = typeof address === 'object' && address ? address.port : port;
      const url = `http://${host}:${actual}`;
      if (!quiet) console.log(`serving ${base} at ${url}`);
      resolvePromise({
        url,
        port: actual,
        faults,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const portAt = args.indexOf('--port');
  const port = portAt >= 0 ? Number(args[portAt + 1]) : 0;
  const dir = args.find((a, i) => !a.startsWith('--') && (portAt < 0 || i !== portAt + 1)) ?? 'build';
  serveStatic(dir, { port, quiet: false });
}
