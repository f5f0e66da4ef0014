/**
 * The attention-density allocator (stages.ts Allocator) — D2O (Wan et al., 2025,
 * https://arxiv.org/abs/2406.13035; reference AIoT-MLSys-Lab/D2O `modeling_llama3_new.py`, the
 * layer allocation): layers whose prompt attention is dense (low variance) keep more.
 *
 * After prefill, per layer and query head, the column sums of the prompt's attention
 * (PrefillObservation.attentionSums); v_h = their variance over key positions (unbiased, as
 * torch.var), min-max normalised across the layer's heads and averaged → v_l. Then
 *   ratio_l = clamp(softmax(−v)_l · L · ρ, 0.01, 1),  ρ = heavy ratio + recent ratio,
 * split between heavy and recent in the proportion heavy : recent, as entries of the prompt length
 * (⌊n·ratio_l·share⌋, recent at least 1). Absolute budgets (≥ 1 entries) are scaled per layer by
 * w_l = clamp(softmax(−v)_l·L, 0.01, L) (mean 1) instead. Without prompt attention (attached
 * mid-run, or `uniform`) every layer gets the same budgets. Budgets are fixed from then on: each
 * layer's KV heads hold `heavy_l + recent_l`, of which `recent_l` are the recent window.
 */
import type { JsonValue } from '../types.ts';
import { isRatio, resolveBudget } from '../policies/common.ts';
import type { Allocator, HeadBudget, StageEnv } from './stages.ts';

/** v_l of one layer: per query head the unbiased variance of its column sums, min-max normalised across heads, averaged. */
export function layerDensity(columnSums: readonly ArrayLike<number>[]): number {
  const variances = columnSums.map((sums) => {
    const n = sums.length;
    if (n < 2) return 0;
    let mean = 0;
    for (let j = 0; j < n; j++) mean += sums[j];
    mean /= n;
    let v = 0;
    for (let j = 0; j < n; j++) v += (sums[j] - mean) ** 2;
    return v / (n - 1);
  });
  const min = Math.min(...variances);
  const max = Math.max(...variances);
  return variances.reduce((acc, v) => acc + (v - min) / (max - min + 1e-6), 0) / variances.length;
}

/** ratio_l = clamp(softmax(−v)_l · L · ρ, 0.01, max) (max 1: a layer never keeps more than the prompt). */
export function densityRatios(v: readonly number[], rho: number, max = 1): number[] {
  const L = v.length;
  const top = Math.max(...v.map((x) => -x));
  const exps = v.map((x) => Math.exp(-x - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => Math.min(max, Math.max(0.01, (e / sum) * L * rho)));
}

/** What the allocator knows, in D2O's state format. */
export type DensityBudgets = {
  promptTokens: number;
  /** [layer] heavy / recent entries */
  heavy: number[];
  recent: number[];
  /** [layer] v_l, null before a prefill observation */
  density: number[] | null;
};

export interface DensityOptions {
  nLayers: number;
  /** budget values: entries if ≥ 1, else ratios of the prompt length */
  heavy: number;
  recent: number;
  mode: 'density' | 'uniform';
}

export interface DensityAllocator extends Allocator {
  /** the current budgets (live; copy what you keep) */
  readonly budgets: DensityBudgets;
  observe(env: StageEnv): void;
  state: { get(): DensityBudgets; set(state: JsonValue): void; reset(): void };
}

export function densityAllocator(options: DensityOptions): DensityAllocator {
  const { nLayers, heavy: heavyValue, recent: recentValue } = options;
  const empty = (): DensityBudgets => ({ promptTokens: 0, heavy: new Array<number>(nLayers).fill(0), recent: new Array<number>(nLayers).fill(0), density: null });
  let budgets = empty();
  let perLayer: HeadBudget[] = [];
  const load = (next: DensityBudgets) => {
    budgets = next;
    perLayer = next.heavy.map((h, l) => ({ total: h + next.recent[l], recent: next.recent[l] }));
  };
  load(budgets);

  /** Per-layer heavy / recent entries for a prompt of n tokens (density: v_l, or null for uniform). */
  const budgetsFor = (n: number, density: readonly number[] | null): { heavy: number[]; recent: number[] } => {
    if (!density || options.mode === 'uniform') {
      return { heavy: new Array<number>(nLayers).fill(resolveBudget(heavyValue, n)), recent: new Array<number>(nLayers).fill(resolveBudget(recentValue, n)) };
    }
    if (!isRatio(heavyValue) || !isRatio(recentValue)) {
      const scale = densityRatios(density, 1, nLayers);
      return {
        heavy: scale.map((w) => Math.floor(resolveBudget(heavyValue, n) * w)),
        recent: scale.map((w) => Math.max(1, Math.floor(resolveBudget(recentValue, n) * w))),
      };
    }
    const rho = heavyValue + recentValue;
    const ratios = densityRatios(density, rho);
    return {
      heavy: ratios.map((r) => Math.floor(n * r * (heavyValue / rho))),
      recent: ratios.map((r) => Math.max(1, Math.floor(n * r * (recentValue / rho)))),
    };
  };

  return {
    get budgets() {
      return budgets;
    },
    needs: { attention: true },
    observe(env) {
      const n = env.cache.tokenCount;
      if (env.phase === 'prefill') {
        // a prefill without attention sums keeps the density it had
        const sums = env.prefill?.attentionSums;
        const density = sums ? sums.map((layer) => layerDensity(layer)) : budgets.density;
        load({ promptTokens: n, density, ...budgetsFor(n, density) });
      } else if (env.phase === 'attach' || budgets.promptTokens === 0) {
        load({ promptTokens: n, density: budgets.density, ...budgetsFor(n, null) });
      }
    },
    allocate: (env) => perLayer.map((b) => Array.from({ length: env.cache.nKvHeads }, () => b)),
    state: {
      get: () => ({ promptTokens: budgets.promptTokens, heavy: [...budgets.heavy], recent: [...budgets.recent], density: budgets.density ? [...budgets.density] : null }),
      set(state) {
        if (state === null || typeof state !== 'object' || Array.isArray(state)) return load(empty());
        const numbers = (x: JsonValue | undefined): number[] | null => (Array.isArray(x) ? x.map((v) => (typeof v === 'number' ? v : 0)) : null);
        load({
          promptTokens: typeof state.promptTokens === 'number' ? state.promptTokens : 0,
          heavy: numbers(state.heavy) ?? new Array<number>(nLayers).fill(0),
          recent: numbers(state.recent) ?? new Array<number>(nLayers).fill(0),
          density: numbers(state.density),
        });
      },
      reset: () => load(empty()),
    },
  };
}
