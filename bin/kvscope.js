#!/usr/bin/env node
// The kvscope command line. The engine is TypeScript run without a build step: register tsx's
// ESM loader, then import engine/cli/index.ts and run it (docs/cli.md).
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

register({ tsconfig: fileURLToPath(new URL('../tsconfig.json', import.meta.url)) });

// `kvscope … | head` closes stdout early: end quietly instead of an EPIPE stack trace.
process.stdout.on('error', (error) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const { main } = await import('../engine/cli/index.ts');
const code = await main(process.argv.slice(2));

// Exit as soon as stdout and stderr are flushed: left to itself, Node lingers for a second or
// more after the work is done (V8 winding down onnxruntime's WebAssembly compilation).
const flushed = (stream) => new Promise((resolve) => stream.write('', resolve));
await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
process.exit(code);
