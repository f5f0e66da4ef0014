/**
 * Shared transforms (stages.ts Transform).
 *
 * rerotateToIndex — StreamingLLM's P2 positions (Xiao et al., 2024, `pos_shift`): after every
 *   decision each kept key is re-rotated to its index in the head (0..n−1) and the next token is
 *   fed at the longest head's length, so positions never exceed the budget and generation can go
 *   past the model's context. Keys are stored post-RoPE, so the engine applies the RoPE delta
 *   (Decision.reposition); repeated deltas accumulate float32 rounding (~1e-7 relative per rotation).
 */
import { keptIndices, type Transform } from './stages.ts';

export function rerotateToIndex(): Transform {
  let longest = 0;
  return {
    layer(env, layer, heads) {
      if (layer === 0) longest = 0;
      for (const head of heads) {
        const kept = keptIndices(head);
        longest = Math.max(longest, kept.length);
        const positions = env.cache.positions(head.layer, head.kvHead);
        for (let j = 0; j < kept.length; j++) if (positions[kept[j]] !== j) head.reposition.push({ index: kept[j], pos: j });
      }
    },
    finish(_env, decision) {
      // the next token sits right after the (longest) head, even when nothing changed this time
      decision.nextPosition = longest;
    },
  };
}
