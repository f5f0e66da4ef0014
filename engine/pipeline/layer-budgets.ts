/**
 * Per-layer budget schedules for prefill compression (the totals a window allocator hands out,
 * pipeline/window-votes.ts windowAllocator). Values are entries per KV head, window included.
 *
 * pyramidKvBudgets — PyramidKV (Cai et al., 2024, https://arxiv.org/abs/2406.02069): totals falling
 *   linearly from the bottom layer to the top (policies/common.ts pyramidBudgets, with the
 *   reference's clamp to the prompt). The reference (Zefan-Cai/KVCache-Factory
 *   `pyramidkv/pyramidkv_utils.py` PyramidKVCluster) uses them only when the prompt is at least
 *   2(C − W) long; below that every layer gets the uniform C.
 *
 * errorAwareBudgets — CompressKV (Lin et al., 2025, https://arxiv.org/abs/2508.02401; reference
 *   TUDa-HWAI/CompressKV `longbench/pred_compresskv.py` error_aware_layer_budget_allocation):
 *   B_l = clip(m + round(e_l·(L·B − m·L)), m, maxFactor·B) from the normalized per-layer output
 *   errors e_l, then adjusted one entry at a time until they sum to L·B (adding to the largest e_l
 *   first among layers below the cap, removing from the smallest e_l first among layers above m;
 *   ties by layer index). m is capped at B (with B < m the reference's floor would exceed the total).
 */
import { pyramidBudgets } from '../policies/common.ts';

export function pyramidKvBudgets(nLayers: number, budget: number, window: number, beta: number, promptLength: number): number[] {
  if (promptLength >= 2 * (budget - window)) return pyramidBudgets(nLayers, budget, window, beta, promptLength);
  return Array.from({ length: nLayers }, () => budget);
}

export function errorAwareBudgets(errors: readonly number[], perLayer: number, minTokens = 32, maxFactor = 3): number[] {
  const L = errors.length;
  const B = Math.max(1, Math.floor(perLayer));
  const min = Math.max(1, Math.min(Math.floor(minTokens), B));
  const max = Math.max(min, Math.floor(maxFactor * B));
  const total = L * B;
  const budgets = errors.map((e) => Math.min(max, Math.max(min, min + Math.round(e * (total - min * L)))));
  let diff = total - budgets.reduce((a, b) => a + b, 0);
  const byError = (ascending: boolean) =>
    Array.from({ length: L }, (_, i) => i).sort((a, b) => (ascending ? errors[a] - errors[b] : errors[b] - errors[a]) || a - b);
  while (diff !== 0) {
    const order = diff > 0 ? byError(false).filter((i) => budgets[i] < max) : byError(true).filter((i) => budgets[i] > min);
    if (order.length === 0) break;
    for (const i of order) {
      if (diff === 0) break;
      budgets[i] += diff > 0 ? 1 : -1;
      diff += diff > 0 ? -1 : 1;
    }
  }
  return budgets;
}
