/**
 * Names that come from a model folder and end up in a file path or URL: the paths its manifest
 * lists and the model ids it names (`draft`). Nothing a folder says may make the Node loader read
 * outside it or the browser fetch outside the models URL.
 *
 * A path is resolved by two readers that disagree on escapes: `fetch(base + path)` decodes
 * `%2e%2e` to `..` (the URL standard treats it as a dot segment) and drops everything after `?`
 * or `#`, while the disk takes the characters literally. So a path may hold only what both read
 * the same: no percent-escapes, no scheme or drive colon, no query, fragment, backslash or control
 * character, no absolute start, no empty, `.` or `..` segment.
 */
import { ModelError } from '../errors.ts';

const MAX_PATH_LENGTH = 1024;
const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Why `path` is not a plain relative path inside a model directory, or null when it is one. */
export function modelPathProblem(path: string): string | null {
  if (path.length === 0) return 'it is empty';
  if (path.length > MAX_PATH_LENGTH) return `it is longer than ${MAX_PATH_LENGTH} characters`;
  if (/[\u0000-\u001f\u007f]/.test(path)) return 'it holds a control character';
  if (path.includes('%')) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(path);
    } catch {
      return 'it holds a malformed percent-escape';
    }
    const dots = decoded.split(/[/\\]/).some((segment) => segment === '..' || segment === '.');
    return dots ? `it decodes to ${JSON.stringify(decoded)}, which a browser resolves outside the directory` : 'it holds a percent-escape (a browser decodes it, a disk does not)';
  }
  if (path.includes('\\')) return 'it holds a backslash';
  if (path.includes('?') || path.includes('#')) return 'it holds a URL query or fragment ("?" or "#")';
  if (path.includes(':')) return 'it holds a colon (a URL scheme or a drive letter)';
  if (path.startsWith('/')) return 'it is absolute';
  const segments = path.split('/');
  if (segments.includes('..')) return 'a ".." segment leaves the directory';
  if (segments.includes('.')) return 'it holds a "." segment';
  if (segments.includes('')) return 'it holds an empty segment ("//" or a trailing "/")';
  return null;
}

/** `path` itself when it is a plain relative path inside a model directory; else a ModelError naming `where`. */
export function checkModelPath(path: string, where = JSON.stringify(path)): string {
  const problem = modelPathProblem(path);
  if (problem) throw new ModelError(`${where} must be a plain relative path inside the model directory, got ${quote(path)} (${problem})`);
  return path;
}

/** True for a model id: letters, digits, ".", "_", "-", starting with a letter or digit, at most 128 characters. */
export function isModelId(id: string): boolean {
  return MODEL_ID.test(id);
}

/** `id` itself when it is a model id (never a path: no "/", no ".."); else a ModelError naming `where`. */
export function checkModelId(id: string, where = 'model id'): string {
  if (!isModelId(id)) {
    throw new ModelError(`${where} must be a model id (letters, digits, ".", "_", "-"; starting with a letter or digit; at most 128 characters), not a path, got ${quote(id)}`);
  }
  return id;
}

/** JSON-quoted, cut to 80 characters so that a megabyte string does not become a megabyte message. */
export function quote(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text);
}
