/**
 * Reads a step's `speculative` field (schema.ts SpeculativeStepTrace): how speculative decoding
 * fed the token, and on a round's last token the round's verification. Checked like every other
 * field, so the acceptance view can trust an imported trace.
 */
import { boolean, fail, integer, list, number, object, string } from './read-json.ts';
import type { DraftedToken, SpeculativeOrigin, SpeculativeStepTrace, VerifyTrace } from './schema.ts';

const ORIGINS: readonly SpeculativeOrigin[] = ['draft', 'correction', 'bonus', 'target'];
const ENDS: readonly VerifyTrace['end'][] = ['rejected', 'all-accepted', 'cache-changed', 'no-draft', 'eos'];

function oneOf<T extends string>(value: unknown, choices: readonly T[], path: string): T {
  const text = string(value, path);
  if (!(choices as readonly string[]).includes(text)) fail(path, `must be one of ${choices.join(', ')}, got ${JSON.stringify(text)}`);
  return text as T;
}

function probability(value: unknown, path: string): number {
  const p = number(value, path);
  if (!(p >= 0 && p <= 1)) fail(path, `must be a probability in [0, 1], got ${p}`);
  return p;
}

function drafted(value: unknown, path: string): DraftedToken {
  const o = object(value, path);
  return {
    id: integer(o.id, `${path}.id`),
    piece: string(o.piece, `${path}.piece`),
    q: probability(o.q, `${path}.q`),
    p: o.p === null ? null : probability(o.p, `${path}.p`),
    accepted: boolean(o.accepted, `${path}.accepted`),
  };
}

function verify(value: unknown, path: string): VerifyTrace {
  const o = object(value, path);
  const tokens = list(o.drafted, `${path}.drafted`).map((t, i) => drafted(t, `${path}.drafted[${i}]`));
  const accepted = integer(o.accepted, `${path}.accepted`);
  if (accepted < 0 || accepted > tokens.length) fail(`${path}.accepted`, `must be between 0 and the ${tokens.length} drafted tokens, got ${accepted}`);
  const next = object(o.next, `${path}.next`);
  return {
    drafter: string(o.drafter, `${path}.drafter`),
    gamma: integer(o.gamma, `${path}.gamma`),
    drafted: tokens,
    accepted,
    next: { id: integer(next.id, `${path}.next.id`), piece: string(next.piece, `${path}.next.piece`), origin: oneOf(next.origin, ORIGINS, `${path}.next.origin`) },
    end: oneOf(o.end, ENDS, `${path}.end`),
    draftMs: number(o.draftMs, `${path}.draftMs`),
    verifyMs: number(o.verifyMs, `${path}.verifyMs`),
  };
}

export function speculative(value: unknown, path: string): SpeculativeStepTrace {
  const o = object(value, path);
  const trace: SpeculativeStepTrace = {
    round: integer(o.round, `${path}.round`),
    row: integer(o.row, `${path}.row`),
    origin: oneOf(o.origin, ORIGINS, `${path}.origin`),
  };
  if (o.verify !== undefined) trace.verify = verify(o.verify, `${path}.verify`);
  return trace;
}
