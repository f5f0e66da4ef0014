/**
 * GQA reductions, explicit everywhere (a method's `gqa` parameter): policies observe attention
 * per *query* head but the cache is per KV head. Query head q belongs to KV head ⌊q / group⌋
 * (Llama's `repeat_kv` layout). `mean` averages the group (kvpress / SnapKV-with-GQA default),
 * `max` takes the largest (an entry survives if any query head wants it), `sum` adds them
 * (H2O-style total mass; ranks like mean).
 */
import type { ParamSpec } from '../policies/types.ts';
import { GQA_CHOICES, type GqaReduce } from '../policies/common.ts';

export { GQA_CHOICES, type GqaReduce };

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
