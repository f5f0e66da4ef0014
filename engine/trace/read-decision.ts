/**
 * Reads one event's `decision` (schema.ts DecisionTrace) back from JSON: its heads (evicted, merged
 * entries with count/memberTokens/similarity, re-encoded, repositioned), measures and scores grid,
 * checked against the model's dimensions. Part of the trace reader (read.ts).
 */
import type { DecisionTrace } from './schema.ts';
import { type Dims, fail, float32s, grid, integer, integers, list, number, object, string } from './read-json.ts';

/** An event's decision, for a model of `dims`; throws TraceFormatError naming the first bad field. */
export function decision(value: unknown, path: string, dims: Dims): DecisionTrace {
  const o = object(value, path);
  const heads = list(o.heads, `${path}.heads`).map((raw, i) => {
    const p = `${path}.heads[${i}]`;
    const h = object(raw, p);
    const layer = integer(h.layer, `${p}.layer`);
    const kvHead = integer(h.kvHead, `${p}.kvHead`);
    if (layer >= dims.layers || kvHead >= dims.kvHeads) fail(p, `head ${layer}/${kvHead} does not exist (${dims.layers} layers × ${dims.kvHeads} KV heads)`);
    return {
      ...h,
      layer,
      kvHead,
      before: integer(h.before, `${p}.before`),
      after: integer(h.after, `${p}.after`),
      evictedTokens: integers(h.evictedTokens, `${p}.evictedTokens`),
      evictedPositions: h.evictedPositions === undefined ? [] : integers(h.evictedPositions, `${p}.evictedPositions`),
      merged: (h.merged === undefined ? [] : list(h.merged, `${p}.merged`)).map((m, k) => {
        const mp = `${p}.merged[${k}]`;
        const mo = object(m, mp);
        const origins = integers(mo.origins, `${mp}.origins`);
        if (origins.length < 2) fail(`${mp}.origins`, 'a merged entry stands for at least 2 tokens');
        const weights = mo.weights === undefined ? [] : list(mo.weights, `${mp}.weights`).map((w, j) => number(w, `${mp}.weights[${j}]`));
        return {
          ...mo,
          into: integer(mo.into, `${mp}.into`),
          origins,
          weights,
          ...(mo.count !== undefined ? { count: integer(mo.count, `${mp}.count`, 1) } : {}),
          ...(mo.memberTokens !== undefined ? { memberTokens: memberTokens(mo.memberTokens, `${mp}.memberTokens`, weights.length, origins) } : {}),
          ...(mo.similarity !== undefined ? { similarity: similarities(mo.similarity, `${mp}.similarity`, weights.length) } : {}),
        };
      }),
      reencoded: (h.reencoded === undefined ? [] : list(h.reencoded, `${p}.reencoded`)).map((r, k) => {
        const rp = `${p}.reencoded[${k}]`;
        const ro = object(r, rp);
        return { ...ro, index: integer(ro.index, `${rp}.index`), codec: string(ro.codec, `${rp}.codec`), ...(ro.token !== undefined ? { token: integer(ro.token, `${rp}.token`) } : {}) };
      }),
      repositioned: h.repositioned === undefined ? 0 : integer(h.repositioned, `${p}.repositioned`),
      ...(h.reencodedTokens !== undefined
        ? { reencodedTokens: integers(h.reencodedTokens, `${p}.reencodedTokens`, h.reencoded === undefined ? 0 : list(h.reencoded, `${p}.reencoded`).length) }
        : {}),
    };
  });
  let scores: DecisionTrace['scores'] = null;
  if (o.scores !== null && o.scores !== undefined) {
    scores = grid(o.scores, `${path}.scores`, dims.layers, dims.kvHeads, (v, p) => (v === null ? null : float32s(v, p)));
  }
  return {
    ...o,
    heads,
    evicted: integer(o.evicted, `${path}.evicted`),
    merged: integer(o.merged, `${path}.merged`),
    reencoded: integer(o.reencoded, `${path}.reencoded`),
    ...(o.note !== undefined ? { note: string(o.note, `${path}.note`) } : {}),
    ...(o.nextPosition !== undefined ? { nextPosition: integer(o.nextPosition, `${path}.nextPosition`) } : {}),
    ...(o.measures !== undefined ? { measures: measures(o.measures, `${path}.measures`, dims.layers) } : {}),
    ...(o.headMeasures !== undefined ? { headMeasures: headMeasures(o.headMeasures, `${path}.headMeasures`, dims.layers, dims.kvHeads) } : {}),
    scores,
  } as DecisionTrace;
}

/** Measure names, per layer and per head alike, are lower-case identifiers. */
function checkMeasureName(name: string, path: string, what: string): void {
  if (!/^[a-z][a-z0-9_]*$/.test(name)) fail(path, `${what} name ${JSON.stringify(name)} must be lower-case letters, digits and _`);
}

/** Decision.headMeasures: name → [layer][kvHead] → numbers (NaN travels as null in JSON). */
function headMeasures(value: unknown, path: string, layers: number, kvHeads: number): Record<string, number[][][]> {
  const o = object(value, path);
  const out: Record<string, number[][][]> = {};
  for (const [name, raw] of Object.entries(o)) {
    checkMeasureName(name, path, 'head measure');
    out[name] = grid(raw, `${path}.${name}`, layers, kvHeads, (v, p) => list(v, p).map((x, k) => (x === null ? Number.NaN : number(x, `${p}[${k}]`))));
  }
  return out;
}

/** A merged entry's `memberTokens`: one token ≥ 0 per member (as many as weights), each among its origins. */
function memberTokens(value: unknown, path: string, members: number, origins: readonly number[]): number[] {
  const tokens = integers(value, path, members);
  const known = new Set(origins);
  tokens.forEach((t, j) => {
    if (t < 0) fail(`${path}[${j}]`, `expected a token ≥ 0, got ${t}`);
    if (!known.has(t)) fail(`${path}[${j}]`, `token ${t} is not among the entry's origins`);
  });
  return tokens;
}

/** A merged entry's `similarity`: one cosine per member (as many as weights), finite, in [−1, 1] up to rounding. */
function similarities(value: unknown, path: string, members: number): number[] {
  const items = list(value, path);
  if (items.length !== members) fail(path, `expected ${members} values (one per weight), got ${items.length}`);
  return items.map((x, j) => {
    if (typeof x !== 'number' || !Number.isFinite(x) || x < -1.0001 || x > 1.0001) fail(`${path}[${j}]`, `expected a cosine in [-1, 1], got ${JSON.stringify(x)?.slice(0, 40)}`);
    return x;
  });
}

/** Decision.measures: name → one number per layer (NaN travels as null in JSON). */
function measures(value: unknown, path: string, layers: number): Record<string, number[]> {
  const o = object(value, path);
  const out: Record<string, number[]> = {};
  for (const [name, raw] of Object.entries(o)) {
    checkMeasureName(name, path, 'measure');
    const values = list(raw, `${path}.${name}`);
    if (values.length !== layers) fail(`${path}.${name}`, `expected ${layers} layers, got ${values.length}`);
    out[name] = values.map((v, l) => (v === null ? Number.NaN : number(v, `${path}.${name}[${l}]`)));
  }
  return out;
}
