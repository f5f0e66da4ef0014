/**
 * Policy spec strings — `full`, `window:size=128`, `h2o:heavy=64,recent=32`, and compositions
 * `snapkv:budget=256 + think:ratio=0.4` — shared by the CLI, share links, the UI and tests. This
 * file is the one place that splits, checks and formats them: parsing checks every parameter
 * against the policy's schema, fills in defaults, and fails with a message that says what to write
 * instead. A composition runs its members in the order written (engine/policies/chain.ts).
 */
import { PolicySpecError } from '../errors.ts';
import { findPolicy, POLICIES } from './index.ts';
import type { ParamSpec, ParamValue, Policy, PolicyContext, PolicyDefinition, PolicyParams } from './types.ts';

export interface PolicySpec {
  id: string;
  /** every parameter of the schema, defaults filled in */
  params: PolicyParams;
}

/** Levenshtein distance, for "did you mean" suggestions. */
function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}

export function closest(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best !== undefined && bestDistance <= Math.max(1, Math.floor(best.length / 3)) ? best : undefined;
}

function rangeText(spec: { min?: number; max?: number }): string {
  if (spec.min !== undefined && spec.max !== undefined) return ` in [${spec.min}, ${spec.max}]`;
  if (spec.min !== undefined) return ` ≥ ${spec.min}`;
  if (spec.max !== undefined) return ` ≤ ${spec.max}`;
  return '';
}

/** What a valid value of this parameter looks like, e.g. "an integer ≥ 1". */
export function describeParam(spec: ParamSpec): string {
  switch (spec.kind) {
    case 'int':
      return `an integer${rangeText(spec)}`;
    case 'float':
      return `a number${rangeText(spec)}`;
    case 'bool':
      return 'true or false';
    case 'enum':
      return `one of ${spec.choices.join(', ')}`;
  }
}

/** Checks one parameter value (string from a spec, or a typed value from the UI) and returns it typed. */
export function parseParamValue(policyId: string, spec: ParamSpec, raw: ParamValue): ParamValue {
  const bad = (): never => {
    throw new PolicySpecError(`${policyId}: ${spec.name} must be ${describeParam(spec)}, got ${JSON.stringify(String(raw))}`);
  };
  switch (spec.kind) {
    case 'int': {
      const value = typeof raw === 'number' ? raw : /^[+-]?\d+$/.test(String(raw).trim()) ? Number(String(raw).trim()) : NaN;
      if (!Number.isSafeInteger(value)) bad();
      if ((spec.min !== undefined && value < spec.min) || (spec.max !== undefined && value > spec.max)) bad();
      return value;
    }
    case 'float': {
      const text = String(raw).trim();
      const value = typeof raw === 'number' ? raw : /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text) ? Number(text) : NaN;
      if (!Number.isFinite(value)) bad();
      if ((spec.min !== undefined && value < spec.min) || (spec.max !== undefined && value > spec.max)) bad();
      return value;
    }
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      const text = String(raw).trim().toLowerCase();
      if (text === 'true' || text === '1') return true;
      if (text === 'false' || text === '0') return false;
      return bad();
    }
    case 'enum': {
      const text = String(raw).trim();
      if (!spec.choices.includes(text)) bad();
      return text;
    }
  }
}

/** Completes and checks a parameter object against a policy's schema (unknown names are errors). */
export function resolveParams(definition: PolicyDefinition, given: Readonly<Record<string, ParamValue>>): PolicyParams {
  const names = definition.params.map((p) => p.name);
  for (const name of Object.keys(given)) {
    refuseReserved(name, 'parameter name');
    if (!names.includes(name)) {
      const suggestion = closest(name, names);
      const hint = suggestion
        ? ` (did you mean ${suggestion}?)`
        : names.length > 0
          ? ` (parameters: ${names.join(', ')})`
          : ' (it takes no parameters)';
      throw new PolicySpecError(`${definition.id}: unknown parameter ${JSON.stringify(name)}${hint}`);
    }
  }
  const params: Record<string, ParamValue> = {};
  for (const spec of definition.params) {
    params[spec.name] = Object.hasOwn(given, spec.name) ? parseParamValue(definition.id, spec, given[spec.name]) : spec.default;
  }
  return params;
}

/** Names that would reach Object.prototype if used as keys: refused outright, never looked up. */
const RESERVED_NAMES = new Set(['__proto__', 'constructor', 'prototype']);

function refuseReserved(name: string, what: string): void {
  if (RESERVED_NAMES.has(name)) throw new PolicySpecError(`${JSON.stringify(name)} is a reserved name and cannot be a ${what}`);
}

/**
 * A composition splits at `+` followed by a policy id (a letter), so an exponent such as
 * `1e+3` inside a value stays whole.
 */
const COMPOSITION_SPLIT = /\s*\+\s*(?=[A-Za-z_])/;

/** Parses a spec or a composition (`a:… + b:…`) into its members, in order. */
export function parsePolicyChain(text: string, registry: readonly PolicyDefinition[] = POLICIES): PolicySpec[] {
  const trimmed = text.trim();
  if (trimmed === '') throw new PolicySpecError(`empty policy spec (known: ${registry.map((p) => p.id).join(', ')})`);
  const parts = trimmed.split(COMPOSITION_SPLIT);
  if (parts.some((part) => part.trim() === '') || /\+\s*$/.test(trimmed) || /^\+/.test(trimmed)) {
    throw new PolicySpecError(`${JSON.stringify(trimmed)}: a composition needs a policy on each side of "+"`);
  }
  return parts.map((part) => parsePolicySpec(part, registry));
}

/** Canonical string of a composition: its members' canonical specs joined with " + ". */
export function formatPolicyChain(specs: readonly PolicySpec[], registry: readonly PolicyDefinition[] = POLICIES): string {
  if (specs.length === 0) throw new PolicySpecError('a policy composition needs at least one policy');
  return specs.map((spec) => formatPolicySpec(spec, registry)).join(' + ');
}

/** Parses `id` or `id:name=value,name=value` against the registry (one policy; compositions: parsePolicyChain). */
export function parsePolicySpec(text: string, registry: readonly PolicyDefinition[] = POLICIES): PolicySpec {
  const trimmed = text.trim();
  if (trimmed === '') throw new PolicySpecError(`empty policy spec (known: ${registry.map((p) => p.id).join(', ')})`);
  if (COMPOSITION_SPLIT.test(trimmed)) {
    throw new PolicySpecError(`${JSON.stringify(trimmed)} composes several policies; this accepts one (compositions are parsed with parsePolicyChain)`);
  }
  const colon = trimmed.indexOf(':');
  const id = (colon < 0 ? trimmed : trimmed.slice(0, colon)).trim();
  refuseReserved(id, 'policy id');
  const definition = findPolicy(id, registry);
  if (!definition) {
    const known = registry.map((p) => p.id);
    const suggestion = closest(id, known);
    throw new PolicySpecError(
      `unknown policy ${JSON.stringify(id)} (known: ${known.join(', ')})${suggestion ? ` — did you mean ${suggestion}?` : ''}`,
    );
  }
  const given: Record<string, string> = Object.create(null) as Record<string, string>;
  const rest = colon < 0 ? '' : trimmed.slice(colon + 1).trim();
  if (rest !== '') {
    for (const part of rest.split(',')) {
      const eq = part.indexOf('=');
      const key = (eq < 0 ? part : part.slice(0, eq)).trim();
      if (eq < 0 || key === '') {
        throw new PolicySpecError(`${id}: expected name=value, got ${JSON.stringify(part.trim())}`);
      }
      refuseReserved(key, 'parameter name');
      if (key in given) throw new PolicySpecError(`${id}: parameter ${JSON.stringify(key)} given twice`);
      given[key] = part.slice(eq + 1).trim();
    }
  }
  return { id, params: resolveParams(definition, given) };
}

/** Canonical spec string: every parameter in schema order (explicit, so links survive default changes). */
export function formatPolicySpec(spec: PolicySpec, registry: readonly PolicyDefinition[] = POLICIES): string {
  const definition = findPolicy(spec.id, registry);
  if (!definition) throw new PolicySpecError(`unknown policy ${JSON.stringify(spec.id)}`);
  const params = resolveParams(definition, spec.params);
  if (definition.params.length === 0) return definition.id;
  return `${definition.id}:${definition.params.map((p) => `${p.name}=${String(params[p.name])}`).join(',')}`;
}

/** A policy instance from a spec string or a parsed spec. */
export function createPolicy(spec: string | PolicySpec, context: PolicyContext, registry: readonly PolicyDefinition[] = POLICIES): Policy {
  const parsed = typeof spec === 'string' ? parsePolicySpec(spec, registry) : spec;
  const definition = findPolicy(parsed.id, registry);
  if (!definition) throw new PolicySpecError(`unknown policy ${JSON.stringify(parsed.id)}`);
  return definition.create(resolveParams(definition, parsed.params), context);
}

// ---------------------------------------------------------------------------------------------
// Reading spec strings without a registry (display, links): still the one place that splits them.

function members(text: string): string[] {
  return text
    .trim()
    .split(COMPOSITION_SPLIT)
    .map((part) => part.trim())
    .filter((part) => part !== '');
}

/** The policy ids of a spec or composition, in order (not validated: for display and lookups). */
export function policyIds(text: string): string[] {
  return members(text).map((part) => {
    const colon = part.indexOf(':');
    return (colon < 0 ? part : part.slice(0, colon)).trim();
  });
}

/** Short display name: "h2o:heavy=64,…" → "h2o"; a composition → "snapkv + think". */
export function policyLabel(text: string): string {
  return policyIds(text).join(' + ');
}

/** Names of the parameters a single spec sets explicitly (`h2o:heavy=8,recent=8` → heavy, recent). */
export function explicitParamNames(text: string): string[] {
  const colon = text.indexOf(':');
  if (colon < 0) return [];
  return text
    .slice(colon + 1)
    .split(',')
    .map((part) => part.split('=')[0].trim())
    .filter((name) => name !== '');
}

const MEMBER_SHAPE = /^[a-z0-9_-]+(:[A-Za-z0-9_]+=[A-Za-z0-9_.+-]+(,[A-Za-z0-9_]+=[A-Za-z0-9_.+-]+)*)?$/;

/** Whether text has the shape of a spec or composition (characters only; parsePolicyChain validates). */
export function looksLikePolicySpec(text: string): boolean {
  const parts = members(text);
  return parts.length > 0 && parts.every((part) => MEMBER_SHAPE.test(part));
}

/**
 * Splits a list of specs separated by spaces or new lines, keeping compositions whole:
 * "window:size=8 h2o + tova:budget=4" → ["window:size=8", "h2o + tova:budget=4"].
 */
export function splitPolicyList(text: string): string[] {
  const out: string[] = [];
  let joinNext = false;
  for (const token of text.split(/\s+/).filter(Boolean)) {
    if (token === '+') {
      if (out.length > 0) out[out.length - 1] += ' +';
      joinNext = true;
      continue;
    }
    if ((joinNext || token.startsWith('+')) && out.length > 0) out[out.length - 1] += ` ${token}`;
    else out.push(token);
    joinNext = token.endsWith('+');
  }
  return out.map((spec) => spec.split(COMPOSITION_SPLIT).map((part) => part.trim()).join(' + '));
}
