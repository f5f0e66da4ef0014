/**
 * Reads an exported trace (schema.ts TraceJson) back into typed events, for replay without the
 * model. Everything is checked before anything is returned: the JSON shape (with the path of the
 * first bad field in the message), the version (files of version 1 … TRACE_VERSION are read; newer
 * ones are refused by name), and — by replaying every decision (replay.ts) — that the events agree
 * with themselves and with the memory each one reports. Unknown fields are kept and ignored.
 *
 * JSON turned typed arrays into plain arrays and NaN into null; both are turned back here. Fields
 * this reader does not know are kept as they were (a re-export writes them again). The checkers
 * of single fields live in read-json.ts, the reading of an event's decision in read-decision.ts.
 */
import { decision } from './read-decision.ts';
import { speculative } from './read-speculative.ts';
import { type Dims, type Json, TraceFormatError, boolean, fail, float32s, grid, int32s, integer, integers, list, number, object, string } from './read-json.ts';
import { CacheReplay, TraceReplayError, describeEvent } from './replay.ts';
import {
  TRACE_VERSION,
  type AttentionTop,
  type HeadEntries,
  type LayerAttention,
  type MemoryTrace,
  type PolicySwitchTrace,
  type PrefillTrace,
  type ProtectedHeadsTrace,
  type ReferenceTrace,
  type StepTrace,
  type TokenProb,
  type TraceEvent,
  type TraceHeader,
  type TraceModel,
  type TraceOptions,
} from './schema.ts';

/** The oldest trace version this reader understands. */
export const OLDEST_READABLE_TRACE_VERSION = 1;

export { TraceFormatError };

export interface ReadTrace {
  /** the version the file was written with */
  version: number;
  header: TraceHeader;
  events: TraceEvent[];
}

function tokenProb(value: unknown, path: string): TokenProb {
  const o = object(value, path);
  return { id: integer(o.id, `${path}.id`), piece: string(o.piece, `${path}.piece`), prob: number(o.prob, `${path}.prob`) };
}

function timings(value: unknown, path: string): { forwardMs: number; policyMs: number; totalMs: number } {
  if (value === undefined) return { forwardMs: 0, policyMs: 0, totalMs: 0 };
  const o = object(value, path);
  return { forwardMs: number(o.forwardMs, `${path}.forwardMs`), policyMs: number(o.policyMs, `${path}.policyMs`), totalMs: number(o.totalMs, `${path}.totalMs`) };
}

function model(value: unknown, path: string): TraceModel {
  const o = object(value, path);
  const m: TraceModel = {
    id: string(o.id, `${path}.id`),
    name: string(o.name, `${path}.name`),
    layers: integer(o.layers, `${path}.layers`, 1),
    heads: integer(o.heads, `${path}.heads`, 1),
    kvHeads: integer(o.kvHeads, `${path}.kvHeads`, 1),
    headDim: integer(o.headDim, `${path}.headDim`, 1),
    context: integer(o.context, `${path}.context`, 1),
  };
  if (m.heads % m.kvHeads !== 0) fail(path, `${m.heads} query heads do not split into ${m.kvHeads} KV heads`);
  return m;
}

function memory(value: unknown, path: string, dims: Dims): MemoryTrace {
  const o = object(value, path);
  const n = (key: string) => number(o[key], `${path}.${key}`);
  return {
    ...o,
    tokens: integer(o.tokens, `${path}.tokens`),
    entries: grid(o.entries, `${path}.entries`, dims.layers, dims.kvHeads, (v, p) => integer(v, p)),
    heldEntries: integer(o.heldEntries, `${path}.heldEntries`),
    kBytes: n('kBytes'),
    vBytes: n('vBytes'),
    bytes: n('bytes'),
    fullKBytes: n('fullKBytes'),
    fullVBytes: n('fullVBytes'),
    fullBytes: n('fullBytes'),
    ratio: n('ratio'),
    bitsPerElement: n('bitsPerElement'),
  } as MemoryTrace;
}

function attention(value: unknown, path: string, dims: Dims): LayerAttention[] | null {
  if (value === null || value === undefined) return null;
  const layers = list(value, path);
  if (layers.length !== dims.layers) fail(path, `expected ${dims.layers} layers, got ${layers.length}`);
  const group = dims.heads / dims.kvHeads;
  return layers.map((raw, l) => {
    const p = `${path}[${l}]`;
    const o = object(raw, p);
    const entries = list(o.entries, `${p}.entries`);
    if (entries.length !== dims.kvHeads) fail(`${p}.entries`, `expected ${dims.kvHeads} KV heads, got ${entries.length}`);
    const heads: HeadEntries[] = entries.map((e, h) => {
      const ep = `${p}.entries[${h}]`;
      const eo = object(e, ep);
      const tokens = int32s(eo.tokens, `${ep}.tokens`);
      return {
        tokens,
        positions: int32s(eo.positions, `${ep}.positions`, tokens.length),
        counts: eo.counts === null || eo.counts === undefined ? null : int32s(eo.counts, `${ep}.counts`, tokens.length),
        origins:
          eo.origins === null || eo.origins === undefined
            ? null
            : list(eo.origins, `${ep}.origins`).map((x, i) => (x === null ? null : integers(x, `${ep}.origins[${i}]`))),
      };
    });
    const weights = list(o.weights, `${p}.weights`);
    if (weights.length !== dims.heads) fail(`${p}.weights`, `expected ${dims.heads} query heads, got ${weights.length}`);
    return { entries: heads, weights: weights.map((w, qh) => float32s(w, `${p}.weights[${qh}]`, heads[Math.floor(qh / group)].tokens.length)) };
  });
}

function attentionTop(value: unknown, path: string, dims: Dims): AttentionTop | null {
  if (value === null || value === undefined) return null;
  const o = object(value, path);
  const k = integer(o.k, `${path}.k`);
  const size = dims.layers * dims.heads * k;
  return { k, tokens: int32s(o.tokens, `${path}.tokens`, size), positions: int32s(o.positions, `${path}.positions`, size), weights: float32s(o.weights, `${path}.weights`, size) };
}

function options(value: unknown, path: string): TraceOptions {
  const o = object(value, path);
  return {
    fullSteps: integer(o.fullSteps, `${path}.fullSteps`),
    topTokens: integer(o.topTokens, `${path}.topTokens`),
    attentionTop: integer(o.attentionTop, `${path}.attentionTop`),
    attention: boolean(o.attention, `${path}.attention`),
  };
}

function reference(value: unknown, path: string, layers: number): ReferenceTrace | null {
  if (value === null || value === undefined) return null;
  const o = object(value, path);
  const steps = list(o.steps, `${path}.steps`).map((raw, i) => {
    const p = `${path}.steps[${i}]`;
    const r = object(raw, p);
    const massByLayer = list(r.massByLayer, `${p}.massByLayer`).map((v, l) => number(v, `${p}.massByLayer[${l}]`));
    if (massByLayer.length !== layers) fail(`${p}.massByLayer`, `expected ${layers} layers, got ${massByLayer.length}`);
    return {
      step: integer(r.step, `${p}.step`),
      tokenIndex: integer(r.tokenIndex, `${p}.tokenIndex`),
      kl: number(r.kl, `${p}.kl`),
      agree: boolean(r.agree, `${p}.agree`),
      fullTop: integer(r.fullTop, `${p}.fullTop`),
      policyTop: integer(r.policyTop, `${p}.policyTop`),
      mass: number(r.mass, `${p}.mass`),
      massByLayer,
      memoryRatio: number(r.memoryRatio, `${p}.memoryRatio`),
      policyBytes: number(r.policyBytes, `${p}.policyBytes`),
      fullBytes: number(r.fullBytes, `${p}.fullBytes`),
    };
  });
  return { steps, ...(o.stopped !== undefined ? { stopped: string(o.stopped, `${path}.stopped`) } : {}) };
}

function protects(value: unknown, path: string, dims: Dims): ProtectedHeadsTrace | null {
  if (value === null || value === undefined) return null;
  const o = object(value, path);
  return {
    description: string(o.description, `${path}.description`),
    kvHeads: o.kvHeads === null || o.kvHeads === undefined ? null : grid(o.kvHeads, `${path}.kvHeads`, dims.layers, dims.kvHeads, boolean),
    queryHeads: o.queryHeads === null || o.queryHeads === undefined ? null : grid(o.queryHeads, `${path}.queryHeads`, dims.layers, dims.heads, boolean),
  };
}

function header(value: unknown, version: number): TraceHeader {
  const o = object(value, 'header');
  if (o.version !== undefined && o.version !== version) fail('header.version', `says ${JSON.stringify(o.version)}, the file says ${version}`);
  const m = model(o.model, 'header.model');
  const s = object(o.sampler, 'header.sampler');
  const h: TraceHeader = {
    version: TRACE_VERSION,
    model: m,
    sampler: {
      temperature: number(s.temperature, 'header.sampler.temperature'),
      topK: integer(s.topK, 'header.sampler.topK'),
      topP: number(s.topP, 'header.sampler.topP'),
      seed: integer(s.seed, 'header.sampler.seed', Number.MIN_SAFE_INTEGER),
    },
    policy: string(o.policy, 'header.policy'),
    options: options(o.options, 'header.options'),
  };
  if (o.prompt !== undefined) h.prompt = o.prompt === null ? null : string(o.prompt, 'header.prompt');
  const ref = reference(o.reference, 'header.reference', m.layers);
  if (ref) h.reference = ref;
  if (o.next !== undefined) h.next = list(o.next, 'header.next').map((t, i) => tokenProb(t, `header.next[${i}]`));
  if (o.protects !== undefined) h.protects = protects(o.protects, 'header.protects', m);
  return h;
}

function event(value: unknown, index: number, dims: Dims, stepsSoFar: number): TraceEvent {
  const path = `events[${index}]`;
  const o = object(value, path);
  const kind = o.kind;
  if (index === 0 && kind !== 'prefill') fail(`${path}.kind`, `a trace starts with the prefill, not ${JSON.stringify(kind)}`);
  switch (kind) {
    case 'prefill': {
      if (index !== 0) fail(path, 'a second prefill: the explorer replays traces of one prompt');
      const tokenIds = integers(o.tokenIds, `${path}.tokenIds`);
      if (tokenIds.length === 0) fail(`${path}.tokenIds`, 'the prompt has no tokens');
      const pieces = list(o.pieces, `${path}.pieces`).map((p, i) => string(p, `${path}.pieces[${i}]`));
      if (pieces.length !== tokenIds.length) fail(`${path}.pieces`, `${pieces.length} pieces for ${tokenIds.length} tokens`);
      const prefill: PrefillTrace = {
        ...o,
        kind: 'prefill',
        firstToken: integer(o.firstToken, `${path}.firstToken`),
        tokenIds,
        pieces,
        firstPosition: integer(o.firstPosition, `${path}.firstPosition`),
        chunks: o.chunks === undefined ? 1 : integer(o.chunks, `${path}.chunks`),
        policy: string(o.policy, `${path}.policy`),
        decision: decision(o.decision, `${path}.decision`, dims),
        memory: memory(o.memory, `${path}.memory`, dims),
        timings: timings(o.timings, `${path}.timings`),
      };
      return prefill;
    }
    case 'step': {
      const step = integer(o.step, `${path}.step`);
      if (step !== stepsSoFar) fail(`${path}.step`, `expected step ${stepsSoFar} (steps are numbered in order), got ${step}`);
      const trace: StepTrace = {
        ...o,
        kind: 'step',
        step,
        tokenIndex: integer(o.tokenIndex, `${path}.tokenIndex`),
        position: integer(o.position, `${path}.position`),
        token: tokenProb(o.token, `${path}.token`),
        sampleProb: number(o.sampleProb, `${path}.sampleProb`),
        forced: o.forced === undefined ? false : boolean(o.forced, `${path}.forced`),
        topK: list(o.topK, `${path}.topK`).map((t, i) => tokenProb(t, `${path}.topK[${i}]`)),
        attention: attention(o.attention, `${path}.attention`, dims),
        attentionTop: attentionTop(o.attentionTop, `${path}.attentionTop`, dims),
        policy: string(o.policy, `${path}.policy`),
        decision: decision(o.decision, `${path}.decision`, dims),
        memory: memory(o.memory, `${path}.memory`, dims),
        timings: timings(o.timings, `${path}.timings`),
      };
      if (o.speculative !== undefined) trace.speculative = speculative(o.speculative, `${path}.speculative`);
      return trace;
    }
    case 'policy': {
      const atStep = integer(o.atStep, `${path}.atStep`);
      if (atStep !== stepsSoFar) fail(`${path}.atStep`, `the switch says it came after ${atStep} steps, the trace has ${stepsSoFar} before it`);
      const trace: PolicySwitchTrace = {
        ...o,
        kind: 'policy',
        atStep,
        from: string(o.from, `${path}.from`),
        to: string(o.to, `${path}.to`),
        ...(o.withoutHistory !== undefined ? { withoutHistory: string(o.withoutHistory, `${path}.withoutHistory`) } : {}),
        decision: decision(o.decision, `${path}.decision`, dims),
        memory: memory(o.memory, `${path}.memory`, dims),
      };
      return trace;
    }
    default:
      return fail(`${path}.kind`, `unknown event kind ${JSON.stringify(kind)?.slice(0, 40)} (this kvscope knows prefill, step and policy)`);
  }
}

/**
 * Checks that replaying the decisions gives, after every event, the entries per head the event's
 * memory report counted — the trace agrees with itself, so the views drawn from it are the run's.
 */
export function checkReplay(trace: Pick<ReadTrace, 'header' | 'events'>): void {
  const { layers, kvHeads } = trace.header.model;
  const replay = new CacheReplay({ layers, kvHeads });
  trace.events.forEach((e, i) => {
    try {
      replay.apply(e, i);
    } catch (error) {
      if (error instanceof TraceReplayError) throw new TraceFormatError(`the trace contradicts itself: ${error.message}`);
      throw error;
    }
    for (let l = 0; l < layers; l++) {
      for (let h = 0; h < kvHeads; h++) {
        const counted = e.memory.entries[l][h];
        if (replay.length(l, h) !== counted) {
          throw new TraceFormatError(`the trace contradicts itself: ${describeEvent(e, i)}: layer ${l} KV head ${h} holds ${replay.length(l, h)} entries by its decisions, its memory report says ${counted}`);
        }
      }
    }
    if (e.memory.tokens !== replay.tokenCount) {
      throw new TraceFormatError(`the trace contradicts itself: ${describeEvent(e, i)}: ${replay.tokenCount} tokens fed, its memory report says ${e.memory.tokens}`);
    }
  });
}

/** "version 1" or "versions 1–3": what this reader understands, for messages. */
function readableVersions(): string {
  return OLDEST_READABLE_TRACE_VERSION === TRACE_VERSION ? `version ${TRACE_VERSION}` : `versions ${OLDEST_READABLE_TRACE_VERSION}–${TRACE_VERSION}`;
}

/** Reads a trace from its JSON text (or parsed value); throws TraceFormatError naming the problem. */
export function readTrace(input: string | unknown): ReadTrace {
  let value: unknown = input;
  if (typeof input === 'string') {
    if (input.trim() === '') throw new TraceFormatError('the file is empty');
    try {
      value = JSON.parse(input);
    } catch (error) {
      throw new TraceFormatError(`not JSON: ${(error as Error).message}`);
    }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || !('events' in value) || !('header' in value)) {
    throw new TraceFormatError('not a kvscope trace: expected an object with "version", "header" and "events" (Export trace writes one)');
  }
  const root = value as Json;
  const version = root.version;
  if (typeof version !== 'number' || !Number.isInteger(version)) throw new TraceFormatError(`not a kvscope trace: "version" is ${JSON.stringify(version) ?? 'missing'}, expected a whole number`);
  if (version > TRACE_VERSION) {
    throw new TraceFormatError(`this trace is version ${version}, written by a newer kvscope; this one reads trace ${readableVersions()}. Open it with a newer kvscope.`);
  }
  if (version < OLDEST_READABLE_TRACE_VERSION) throw new TraceFormatError(`trace version ${version} is not one kvscope writes (it reads trace ${readableVersions()})`);
  const head = header(root.header, version);
  const dims: Dims = head.model;
  const raw = list(root.events, 'events');
  if (raw.length === 0) throw new TraceFormatError('events: the trace has no events (not even the prefill)');
  const events: TraceEvent[] = [];
  let steps = 0;
  raw.forEach((r, i) => {
    const e = event(r, i, dims, steps);
    if (e.kind === 'step') steps++;
    events.push(e);
  });
  const trace: ReadTrace = { version, header: head, events };
  checkReplay(trace);
  return trace;
}
