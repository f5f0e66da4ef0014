/**
 * Base64 of bytes or of text (its UTF-8), for data: URLs and links. btoa takes a "binary string",
 * and String.fromCharCode takes a bounded number of arguments, so the bytes go in chunks.
 */
const CHUNK = 0x8000;

export function base64FromBytes(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += CHUNK) binary += String.fromCharCode(...bytes.subarray(i, i + CHUNK));
  return btoa(binary);
}

export function base64FromText(text: string): string {
  return base64FromBytes(new TextEncoder().encode(text));
}
