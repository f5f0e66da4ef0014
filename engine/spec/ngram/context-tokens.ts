/**
 * The text so far as one more document of an ∞-gram corpus: the infinigram drafter's `context`
 * option. The corpus indexes (suffix array, FM-index) are built once; the session's own tokens
 * change every round, so they are searched directly — at most a context's length (≤ a few
 * thousand tokens) per query, and a longest-suffix search makes O(log L) queries.
 */
import type { NextTokenCounts, NgramSource } from './token-index.ts';

/** Start positions of `pattern` in `tokens` that a token follows (the end of the text has no continuation). */
function continuedOccurrences(tokens: readonly number[], pattern: readonly number[]): number[] {
  const n = pattern.length;
  const found: number[] = [];
  for (let start = 0; start + n < tokens.length; start++) {
    let match = true;
    for (let j = 0; j < n; j++) {
      if (tokens[start + j] !== pattern[j]) {
        match = false;
        break;
      }
    }
    if (match) found.push(start);
  }
  return found;
}

/** A corpus index and the live token array `tokens` searched as one corpus (counts add up). */
export function withContext(index: NgramSource, tokens: readonly number[]): NgramSource {
  return {
    continuationCount(pattern) {
      return index.continuationCount(pattern) + continuedOccurrences(tokens, pattern).length;
    },
    nextTokens(pattern): NextTokenCounts {
      const counts = new Map<number, number>();
      const fromIndex = index.continuationCount(pattern) > 0 ? index.nextTokens(pattern) : null;
      fromIndex?.tokens.forEach((token, i) => counts.set(token, fromIndex.counts[i]));
      for (const start of continuedOccurrences(tokens, pattern)) {
        const next = tokens[start + pattern.length];
        counts.set(next, (counts.get(next) ?? 0) + 1);
      }
      const ids = [...counts.keys()].sort((a, b) => a - b);
      const values = ids.map((id) => counts.get(id)!);
      return { tokens: ids, counts: values, total: values.reduce((a, b) => a + b, 0) };
    },
  };
}
