/**
 * Compositions (`snapkv:budget=256 + think:ratio=0.4`, `h2o:… + kivi:bits=2`): members run in the
 * order written, each on the cache as the previous one left it. After a member's decision is
 * applied, the observation the next member sees is remapped to the surviving entries (attention of
 * a merged entry = the sum over its members), so every member reads arrays that match the cache.
 * Each member declares its store columns under its own prefix (`0.h2o.`, `1.window.`; a single
 * policy keeps the plain `h2o.`).
 */
import type { Decision, HeadDecision } from '../cache/decision.ts';
import type { KVCacheStore } from '../cache/store.ts';
import type { AppliedDecision } from '../cache/view.ts';
import { headLengths } from '../observe.ts';
import type { JsonValue } from '../types.ts';
import { findPolicy, POLICIES } from './index.ts';
import { formatPolicyChain, resolveParams, type PolicySpec } from './spec.ts';
import { PolicySpecError } from '../errors.ts';
import type { Policy, PolicyContext, PolicyDefinition, PolicyNeeds, PrefillObservation, ProtectedHeads, StateScope, StepObservation } from './types.ts';

export type Hook = { kind: 'prefill'; observation: PrefillObservation } | { kind: 'step'; observation: StepObservation } | { kind: 'attach' };

export interface ChainResult {
  applied: AppliedDecision;
  /** each member's decision, in order (the trace takes scores from the first that gave any) */
  decisions: Decision[];
}

export class PolicyChain {
  readonly members: readonly Policy[];

  constructor(
    readonly specs: readonly PolicySpec[],
    context: PolicyContext,
    private readonly registry: readonly PolicyDefinition[] = POLICIES,
  ) {
    if (specs.length === 0) throw new PolicySpecError('a policy composition needs at least one policy');
    this.members = specs.map((spec, i) => {
      const definition = findPolicy(spec.id, registry);
      if (!definition) throw new PolicySpecError(`unknown policy ${JSON.stringify(spec.id)}`);
      const memberContext = specs.length > 1 ? { ...context, columnPrefix: `${i}.${spec.id}.` } : context;
      return definition.create(resolveParams(definition, spec.params), memberContext);
    });
  }

  /** canonical spec string of the whole composition */
  get spec(): string {
    return formatPolicyChain(this.specs, this.registry);
  }

  get id(): string {
    return this.members.map((m) => m.id).join('+');
  }

  get needs(): PolicyNeeds {
    const needs: PolicyNeeds = { attention: false, queries: false, calibration: false };
    for (const m of this.members) {
      needs.attention ||= m.needs.attention;
      needs.queries ||= m.needs.queries;
      needs.calibration ||= m.needs.calibration;
      if (m.needs.prefillWindow) needs.prefillWindow = Math.max(needs.prefillWindow ?? 0, m.needs.prefillWindow);
    }
    return needs;
  }

  get protects(): ProtectedHeads | undefined {
    return this.members.find((m) => m.protects)?.protects;
  }

  /** what the composition does when attached without history, member by member */
  get withoutHistory(): string | undefined {
    const parts = this.members.filter((m) => m.withoutHistory).map((m) => (this.members.length > 1 ? `${m.id}: ${m.withoutHistory}` : m.withoutHistory!));
    return parts.length > 0 ? parts.join('; ') : undefined;
  }

  /** The member when there is one (its own state format), else the list of member states. */
  getState(scope: StateScope = 'portable'): JsonValue {
    return this.members.length === 1 ? this.members[0].getState(scope) : this.members.map((m) => m.getState(scope));
  }

  setState(state: JsonValue): void {
    if (this.members.length === 1) {
      this.members[0].setState(state);
      return;
    }
    const states = Array.isArray(state) ? state : [];
    this.members.forEach((m, i) => m.setState(states[i] ?? null));
  }

  reset(): void {
    for (const m of this.members) m.reset();
  }

  /** Runs one hook through every member, applying each decision before the next member looks. */
  run(store: KVCacheStore, hook: Hook): ChainResult {
    const decisions: Decision[] = [];
    const applied: AppliedDecision = { heads: [], evicted: 0, merged: 0, reencoded: 0, hidden: 0 };
    const notes: string[] = [];
    let current: Hook = hook;
    this.members.forEach((member, i) => {
      const decision =
        current.kind === 'prefill'
          ? member.afterPrefill(store, current.observation)
          : current.kind === 'step'
            ? member.afterStep(store, current.observation)
            : (member.onAttach?.(store) ?? { layers: null });
      const last = i === this.members.length - 1;
      const lengths = last ? null : headLengths(store);
      const result = store.apply(decision);
      decisions.push(decision);
      applied.heads.push(...result.heads);
      applied.evicted += result.evicted;
      applied.merged += result.merged;
      applied.reencoded += result.reencoded;
      applied.hidden = (applied.hidden ?? 0) + (result.hidden ?? 0);
      if (result.note) notes.push(result.note);
      if (result.nextPosition !== undefined) applied.nextPosition = result.nextPosition;
      if (result.budgets) applied.budgets = result.budgets;
      if (result.measures) applied.measures = { ...applied.measures, ...result.measures };
      if (result.headMeasures) applied.headMeasures = { ...applied.headMeasures, ...result.headMeasures };
      if (lengths && decision.layers) {
        // re-indexing attention costs O(entries) per query head: only for later members that read it
        const laterRead = this.members.slice(i + 1).some((m) => m.needs.attention);
        current = laterRead ? remapHook(current, decision, lengths, store.groupSize) : withoutAttention(current);
      }
    });
    if (notes.length > 0) applied.note = notes.join('; ');
    return { applied, decisions };
  }
}


/** For one head's decision: per new entry, the old entries it stands for (kept: itself; merged: its members). */
function survivors(decision: HeadDecision, n: number): number[][] {
  const groups = new Map<number, readonly number[]>();
  for (const group of decision.merge ?? []) groups.set(group.anchor ?? group.members[0], group.members);
  const kept = new Set<number>(Array.from(decision.keep));
  const out: number[][] = [];
  for (let i = 0; i < n; i++) {
    if (kept.has(i)) out.push([i]);
    else if (groups.has(i)) out.push([...groups.get(i)!]);
  }
  return out;
}

function remapRow(row: ArrayLike<number>, map: readonly number[][], offset = 0): Float32Array {
  const out = new Float32Array(map.length);
  map.forEach((members, j) => {
    let s = 0;
    for (const m of members) s += row[offset + m];
    out[j] = s;
  });
  return out;
}

/** The hook without attention (what the session hands members when none reads it): no stale indices travel on. */
function withoutAttention(hook: Hook): Hook {
  if (hook.kind === 'attach') return hook;
  if (hook.kind === 'step') return { kind: 'step', observation: { ...hook.observation, attention: null } };
  // queries do not index entries: they travel on
  return { kind: 'prefill', observation: { ...hook.observation, attentionSums: null, windowAttention: null } };
}

/** The hook's observation with attention re-indexed to the entries left after `decision`. */
function remapHook(hook: Hook, decision: Decision, lengths: number[][], group: number): Hook {
  if (hook.kind === 'attach') return hook;
  // one map per KV head, shared by its query heads
  const maps = new Map<number, number[][] | null>();
  const mapFor = (l: number, qh: number): number[][] | null => {
    const kvHead = Math.floor(qh / group);
    const key = l * lengths[l].length + kvHead;
    if (!maps.has(key)) {
      const head = decision.layers?.[l]?.[kvHead];
      maps.set(key, head ? survivors(head, lengths[l][kvHead]) : null);
    }
    return maps.get(key)!;
  };
  if (hook.kind === 'step') {
    const attention = hook.observation.attention?.map((rows, l) => rows.map((row, qh) => {
      const map = mapFor(l, qh);
      return map ? remapRow(row, map) : row;
    })) ?? null;
    return { kind: 'step', observation: { ...hook.observation, attention } };
  }
  const obs = hook.observation;
  const attentionSums = obs.attentionSums?.map((rows, l) => rows.map((row, qh) => {
    const map = mapFor(l, qh);
    return map ? remapRow(row, map) : row;
  })) ?? null;
  const windowAttention = obs.windowAttention?.map((blocks, l) => blocks.map((block, qh) => {
    const map = mapFor(l, qh);
    if (!map || obs.windowRows === 0) return block;
    const entries = block.length / obs.windowRows;
    const out = new Float32Array(obs.windowRows * map.length);
    for (let r = 0; r < obs.windowRows; r++) out.set(remapRow(block, map, r * entries), r * map.length);
    return out;
  })) ?? null;
  return { kind: 'prefill', observation: { ...obs, attentionSums, windowAttention } };
}
