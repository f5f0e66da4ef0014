// Entry of an evaluation worker thread (threads.ts). A worker thread does not inherit the tsx
// loader that bin/kvscope.js registered, so register it here, then run the TypeScript body.
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

register({ tsconfig: fileURLToPath(new URL('../../tsconfig.json', import.meta.url)) });
await import('./worker-node.ts');
