import type { ErrorKind } from './protocol.ts';

/** A failure with the kind the page shows it under. */
export class HostError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(message);
  }
}
