/** Small helpers for reading untrusted JSON (manifest, tokenizer, calibration and needle-family files). */

export type JsonObject = Record<string, unknown>;

/** A JSON object: not null, not an array. */
export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
