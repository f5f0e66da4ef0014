/**
 * Drafter spec strings (docs/cli.md, "--draft"): `model:gamma=4`, `lookup:max_ngram=3,k=10`,
 * `infinigram:gamma=4`, `omnidraft:max_gamma=8`, `self:gamma=4,policy=streaming(sinks=4,recent=60)`.
 *
 * Same shape as policy specs (engine/policies/spec.ts): an id, then `name=value` pairs. A value that
 * is itself a KV-cache policy (the draft's cache) is written with parentheses instead of a colon so
 * it nests without quoting: `policy=streaming(sinks=4,recent=60)`, and a composition joins members
 * with `+`: `policy=snapkv(budget=256)+kivi(bits=4)`. Commas inside parentheses belong to the inner
 * policy. Canonical form writes every parameter (the inner policy's too), so a stored spec keeps its
 * meaning when defaults change. `none` means plain decoding.
 */
import { DraftSpecError, PolicySpecError } from '../errors.ts';
import type { ParamValue } from '../policies/types.ts';
import { closest, formatPolicyChain, parseParamValue, parsePolicyChain } from '../policies/spec.ts';
import type { DrafterDefinition, DrafterParams, DrafterParamSpec } from './drafter.ts';

export interface DraftSpec {
  id: string;
  params: DrafterParams;
}

const RESERVED = new Set(['__proto__', 'constructor', 'prototype']);

/** Splits at commas outside parentheses; refuses unbalanced ones. */
function splitTopLevel(text: string, what: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')') {
      depth--;
      if (depth < 0) throw new DraftSpecError(`${what}: unbalanced ")" in ${JSON.stringify(text)}`);
    } else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  if (depth !== 0) throw new DraftSpecError(`${what}: unbalanced "(" in ${JSON.stringify(text)}`);
  parts.push(text.slice(start));
  return parts;
}

/** `streaming(sinks=4,recent=60)+kivi(bits=4)` → `streaming:sinks=4,recent=60 + kivi:bits=4`. */
export function nestedPolicyToSpec(value: string): string {
  const members: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i <= value.length; i++) {
    const c = value[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    if (i === value.length || (c === '+' && depth === 0 && /[A-Za-z_]/.test(value.slice(i + 1).trim()[0] ?? ''))) {
      members.push(value.slice(start, i).trim());
      start = i + 1;
    }
  }
  return members
    .map((member) => {
      const open = member.indexOf('(');
      if (open < 0) return member;
      if (!member.endsWith(')')) throw new PolicySpecError(`${JSON.stringify(member)}: a nested policy is written id(name=value,…)`);
      return `${member.slice(0, open).trim()}:${member.slice(open + 1, -1)}`;
    })
    .join(' + ');
}

/** Canonical nested form of a policy spec string: `id(name=value,…)` members joined by `+`. */
export function specToNestedPolicy(spec: string): string {
  const canonical = formatPolicyChain(parsePolicyChain(spec));
  return canonical
    .split(' + ')
    .map((member) => {
      const colon = member.indexOf(':');
      return colon < 0 ? member : `${member.slice(0, colon)}(${member.slice(colon + 1)})`;
    })
    .join('+');
}

function paramValue(definition: DrafterDefinition, spec: DrafterParamSpec, raw: ParamValue): ParamValue {
  if (spec.kind === 'policy') {
    const text = String(raw).trim();
    try {
      // stored as a plain policy spec string (what Session takes); written nested
      return formatPolicyChain(parsePolicyChain(text.includes('(') || !text.includes(':') ? nestedPolicyToSpec(text) : text));
    } catch (error) {
      if (error instanceof PolicySpecError) throw new DraftSpecError(`${definition.id}: ${spec.name}: ${error.message}`);
      throw error;
    }
  }
  if (spec.kind === 'text') {
    const text = String(raw).trim();
    if (spec.pattern && !spec.pattern.test(text)) throw new DraftSpecError(`${definition.id}: ${spec.name} must be ${spec.patternText ?? `like ${spec.pattern}`}, got ${JSON.stringify(text)}`);
    return text;
  }
  try {
    return parseParamValue(definition.id, spec, raw);
  } catch (error) {
    if (error instanceof PolicySpecError) throw new DraftSpecError(error.message);
    throw error;
  }
}

/** Completes and checks a drafter's parameters (unknown names are errors). */
export function resolveDraftParams(definition: DrafterDefinition, given: Readonly<Record<string, ParamValue>>): DrafterParams {
  const names = definition.params.map((p) => p.name);
  for (const name of Object.keys(given)) {
    if (RESERVED.has(name)) throw new DraftSpecError(`${JSON.stringify(name)} is a reserved name and cannot be a parameter name`);
    if (!names.includes(name)) {
      const suggestion = closest(name, names);
      throw new DraftSpecError(`${definition.id}: unknown parameter ${JSON.stringify(name)}${suggestion ? ` (did you mean ${suggestion}?)` : ` (parameters: ${names.join(', ')})`}`);
    }
  }
  const params: Record<string, ParamValue> = {};
  for (const spec of definition.params) params[spec.name] = paramValue(definition, spec, Object.hasOwn(given, spec.name) ? given[spec.name] : spec.default);
  return params;
}

/** Parses a drafter spec against the registry; `none` (or an empty string) gives null: plain decoding. */
export function parseDraftSpec(text: string, registry: readonly DrafterDefinition[]): DraftSpec | null {
  const trimmed = text.trim();
  if (trimmed === '' || trimmed === 'none') return null;
  const colon = trimmed.indexOf(':');
  const id = (colon < 0 ? trimmed : trimmed.slice(0, colon)).trim();
  if (RESERVED.has(id)) throw new DraftSpecError(`${JSON.stringify(id)} is a reserved name and cannot be a drafter id`);
  const definition = registry.find((d) => d.id === id);
  if (!definition) {
    const known = registry.map((d) => d.id);
    const suggestion = closest(id, known);
    throw new DraftSpecError(`unknown drafter ${JSON.stringify(id)} (known: ${known.join(', ')}, or none)${suggestion ? ` — did you mean ${suggestion}?` : ''}`);
  }
  const given: Record<string, string> = Object.create(null) as Record<string, string>;
  const rest = colon < 0 ? '' : trimmed.slice(colon + 1).trim();
  if (rest !== '') {
    for (const part of splitTopLevel(rest, id)) {
      const eq = part.indexOf('=');
      const key = (eq < 0 ? part : part.slice(0, eq)).trim();
      if (eq < 0 || key === '') throw new DraftSpecError(`${id}: expected name=value, got ${JSON.stringify(part.trim())}`);
      if (RESERVED.has(key)) throw new DraftSpecError(`${JSON.stringify(key)} is a reserved name and cannot be a parameter name`);
      if (key in given) throw new DraftSpecError(`${id}: parameter ${JSON.stringify(key)} given twice`);
      given[key] = part.slice(eq + 1).trim();
    }
  }
  return { id, params: resolveDraftParams(definition, given) };
}

/** Canonical drafter spec: every parameter in schema order, policies nested. */
export function formatDraftSpec(spec: DraftSpec, registry: readonly DrafterDefinition[]): string {
  const definition = registry.find((d) => d.id === spec.id);
  if (!definition) throw new DraftSpecError(`unknown drafter ${JSON.stringify(spec.id)}`);
  const params = resolveDraftParams(definition, spec.params);
  if (definition.params.length === 0) return definition.id;
  const written = definition.params.map((p) => `${p.name}=${p.kind === 'policy' ? specToNestedPolicy(String(params[p.name])) : String(params[p.name])}`);
  return `${definition.id}:${written.join(',')}`;
}
