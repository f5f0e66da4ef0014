/**
 * GQA reductions, explicit everywhere (a method's `gqa` parameter): policies observe attention
 * per *query* head but the cache is per KV head. Query head q belongs to KV head ⌊q / group⌋
 * (Llama's `repeat_kv` layout). `mean` averages the group (kvpress / SnapKV-with-GQA default),
 * `max` takes the largest (an entry survives if any query head wants it), `sum` adds them
 * (H2O-style total mass; ranks like mean).
 */
import type { ParamSpec } from '../policies/types.ts';

export type GqaReduce = 'mean' | 'max' | 'sum';
export const GQA_CHOICES: readonly GqaReduce[] = ['mean', 'max', 'sum'];

/** Query heads per KV head; throws when H is not a multiple of Hkv. */
export function gqaGroup(nHeads: number, nKvHeads: number): number {
  if (nKvHeads <= 0 || nHeads % nKvHeads !== 0) throw new RangeError(`query heads ${nHeads} not a multiple of KV heads ${nKvHeads}`);
  return nHeads / nKvHeads;
}

/**
 * Reduces per-query-head score arrays to one array per KV head. `perQueryHead[q]` belongs to KV
 * head ⌊q / group⌋. Arrays of one group may differ in length only if entries were appended after
 * some were written — they must not here: every array of a group must have the same length.
 * Returns `nKvHeads` Float64Arrays (sums in double precision, so near-ties stay stable).
 */
export function reduceGqa(perQueryHead: readonly ArrayLike<number>[], nKvHeads: number, mode: GqaReduce = 'mean'): Float64Array[] {
  const group = gqaGroup(perQueryHead.length, nKvHeads);
  const out: Float64Array[] = [];
  for (let kv = 0; kv < nKvHeads; kv++) {
    const first = perQueryHead[kv * group];
    const n = first.length;
    const acc = new Float64Array(n);
    if (mode === 'max') acc.fill(-Infinity);
    for (let g = 0; g < group; g++) {
      const row = perQueryHead[kv * group + g];
      if (row.length !== n) throw new RangeError(`query heads of KV head ${kv} disagree on length (${row.length} vs ${n})`);
      if (mode === 'max') for (let j = 0; j < n; j++) acc[j] = Math.max(acc[j], row[j]);
      else for (let j = 0; j < n; j++) acc[j] += row[j];
    }
    if (mode === 'mean') for (let j = 0; j < n; j++) acc[j] /= group;
    out.push(acc);
  }
  return out;
}

/** Same reduction for one KV head's group only (query heads kv·group … kv·group+group−1). */
export function reduceGqaHead(perQueryHead: readonly ArrayLike<number>[], kvHead: number, nKvHeads: number, mode: GqaReduce = 'mean'): Float64Array {
  const group = gqaGroup(perQueryHead.length, nKvHeads);
  return reduceGqa(perQueryHead.slice(kvHead * group, kvHead * group + group), 1, mode)[0];
}

/** Schema entry for a method's GQA reduction. */
export function gqaParam(defaultValue: GqaReduce, description = "how the query heads' scores of a KV head combine"): ParamSpec {
  return { name: 'gqa', kind: 'enum', default: defaultValue, choices: GQA_CHOICES, description };
}

/**
 * Reduces a [n, width] per-query-head column (one value per query head of the group) to one
 * value per entry, in double precision; query heads are added in group order.
 */
export function reduceGroupColumn(column: ArrayLike<number>, n: number, width: number, mode: GqaReduce, out = new Float64Array(n)): Float64Array {
  for (let j = 0; j < n; j++) {
    const base = j * width;
    let acc = mode === 'max' ? -Infinity : 0;
    for (let g = 0; g < width; g++) {
      const x = column[base + g];
      acc = mode === 'max' ? Math.max(acc, x) : acc + x;
    }
    out[j] = mode === 'mean' ? acc / width : acc;
  }
  return out;
}

/** Entry j of a KV head's query-head rows reduced to one value (one row at a time: D2O's reading). */
export function reduceAt(rows: readonly ArrayLike<number>[], j: number, mode: GqaReduce): number {
  let acc = mode === 'max' ? -Infinity : 0;
  for (const row of rows) acc = mode === 'max' ? Math.max(acc, row[j]) : acc + row[j];
  return mode === 'mean' ? acc / rows.length : acc;
}
