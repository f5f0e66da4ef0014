/**
 * Error classes of the engine. Every message names the exact problem (file, field, value) so
 * that the UI and the CLI can show it to the user as is.
 */

export class KvscopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A model directory, manifest, file or graph does not match docs/model-format.md. */
export class ModelError extends KvscopeError {}

/** A session was used wrongly (empty prompt, prompt longer than the context, context full…). */
export class SessionError extends KvscopeError {}

/** The context window is full: no further position can be fed to the model. */
export class ContextFullError extends SessionError {}

/** A policy spec string or parameter value is invalid. */
export class PolicySpecError extends KvscopeError {}

/** A policy returned a decision the engine cannot apply (out-of-range index, empty head…). */
export class PolicyDecisionError extends KvscopeError {}

/** A drafter spec (speculative decoding), its parameters or its draft model / index is invalid. */
export class DraftSpecError extends KvscopeError {}
