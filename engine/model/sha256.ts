/** SHA-256 through WebCrypto: available as globalThis.crypto.subtle in Node ≥ 20 and in browsers. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  // subtle.digest wants an ArrayBuffer-backed view; copy only if the bytes live elsewhere.
  const view = bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
  const digest = await globalThis.crypto.subtle.digest('SHA-256', view);
  const out = new Uint8Array(digest);
  let hex = '';
  for (let i = 0; i < out.length; i++) hex += out[i].toString(16).padStart(2, '0');
  return hex;
}
