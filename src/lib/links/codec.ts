/**
 * Experiment links: `/?v=1&x=<payload>`, the payload being the experiment's wire JSON
 * (validate.ts) deflated (fflate) and base64url-encoded. `v` stays readable outside the payload so
 * a link from a newer app is refused politely before anything is decoded.
 *
 * Links are capped at MAX_PAYLOAD_CHARS (8 KB) in the address: a longer experiment (a very long
 * prompt) travels in a notebook bundle instead. Decoding never throws: it answers the experiment
 * or one message that names the problem (a fuzz test feeds it 10,000 mangled links).
 */
import { deflateSync, inflateSync, strFromU8, strToU8 } from 'fflate';
import { base64FromBytes } from '../base64.ts';
import { EXPERIMENT_VERSION, type Experiment } from './experiment.ts';
import { LinkError, readWire, toWire } from './validate.ts';

/** the most characters the `x` payload may have (≤ 8 KB in the address) */
export const MAX_PAYLOAD_CHARS = 8192;
/** inflated JSON larger than this is refused (a payload of 8 KB cannot honestly need more) */
const MAX_JSON_BYTES = 1 << 20;

export type LinkReading =
  | { kind: 'none' }
  | { kind: 'experiment'; experiment: Experiment; draft: string | null }
  | { kind: 'error'; message: string };

function toBase64Url(bytes: Uint8Array): string {
  return base64FromBytes(bytes).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromBase64Url(text: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw new LinkError('its data is damaged (not base64url text)');
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** The payload of an experiment (`draft`: an edited prompt not yet applied, for the address bar only). */
export function encodePayload(experiment: Experiment, draft: string | null = null): string {
  return toBase64Url(deflateSync(strToU8(JSON.stringify(toWire(experiment, draft))), { level: 9 }));
}

/** The query string (without "?") of an experiment link, or null when it would pass the cap. */
export function experimentQuery(experiment: Experiment, draft: string | null = null): string | null {
  const payload = encodePayload(experiment, draft);
  if (payload.length > MAX_PAYLOAD_CHARS) return null;
  return `v=${EXPERIMENT_VERSION}&x=${payload}`;
}

/** Why an experiment has no link (its payload passes the cap), in words; null when it has one. */
export function linkTooLong(experiment: Experiment): string | null {
  const chars = encodePayload(experiment).length;
  if (chars <= MAX_PAYLOAD_CHARS) return null;
  return `this experiment needs ${(chars / 1024).toFixed(1)} KB in a link, more than the ${MAX_PAYLOAD_CHARS / 1024} KB a link may carry (a long prompt): add it to a notebook and export the bundle instead`;
}

function readPayload(payload: string): { experiment: Experiment; draft: string | null } {
  if (payload.length > MAX_PAYLOAD_CHARS) throw new LinkError(`it is longer than the ${MAX_PAYLOAD_CHARS / 1024} KB a link may carry`);
  const bytes = fromBase64Url(payload);
  let json: string;
  try {
    const inflated = inflateSync(bytes);
    if (inflated.length > MAX_JSON_BYTES) throw new LinkError('its data is damaged (too large once decompressed)');
    json = strFromU8(inflated);
  } catch (error) {
    if (error instanceof LinkError) throw error;
    throw new LinkError('its data is damaged (it cannot be decompressed: was the link cut short?)');
  }
  let wire: unknown;
  try {
    wire = JSON.parse(json);
  } catch {
    throw new LinkError('its data is damaged (not JSON once decompressed)');
  }
  return readWire(wire);
}

/** Reads the experiment of a page's query string; `none` when the address carries none. */
export function readExperimentQuery(search: string): LinkReading {
  let q: URLSearchParams;
  try {
    q = new URLSearchParams(search.startsWith('?') ? search.slice(1) : search);
  } catch {
    return { kind: 'error', message: 'This link cannot be opened: its address is not a valid query string.' };
  }
  const payload = q.get('x');
  const version = q.get('v');
  if (payload === null) return { kind: 'none' };
  if (version !== String(EXPERIMENT_VERSION)) {
    const n = Number(version);
    if (version !== null && Number.isInteger(n) && n > EXPERIMENT_VERSION) {
      return { kind: 'error', message: `This link was made by a newer kvscope (link version ${n}); this app opens version ${EXPERIMENT_VERSION} links. Update the app (reload it) to open it.` };
    }
    return { kind: 'error', message: `This link cannot be opened: its version ${JSON.stringify(version ?? '(missing)')} is not one this app knows (it opens version ${EXPERIMENT_VERSION}).` };
  }
  try {
    const { experiment, draft } = readPayload(payload);
    return { kind: 'experiment', experiment, draft };
  } catch (error) {
    const reason = error instanceof LinkError ? error.message : 'its data is damaged';
    return { kind: 'error', message: `This link cannot be opened: ${reason}.` };
  }
}
