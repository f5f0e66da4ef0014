/**
 * The tokenizer probe (engine/model/tokenizer-check.ts) accepts every model type it lists: a
 * WordPiece tokenizer whose decoder puts spaces around punctuation ("fox , 42 times .") loads,
 * and one that loses a word of the probe text is still refused.
 */
import { describe, expect, it } from 'vitest';
import { ModelError } from '../../engine/errors.ts';
import { loadModel } from '../../engine/model/load.ts';
import { spacingNormalised } from '../../engine/model/tokenizer-check.ts';
import { memorySource, mutatedFolder, type Json } from './untrusted-folder.ts';

const SPECIAL = ['<|pad|>', '<|bos|>', '<|eos|>'];

/** The fixture's tokenizer.json turned into a BERT-style WordPiece one over `words` (ids after the special tokens). */
function wordPiece(words: readonly string[], cleanup: boolean): (t: Json) => void {
  return (t) => {
    t.normalizer = { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true };
    t.pre_tokenizer = { type: 'BertPreTokenizer' };
    t.decoder = { type: 'WordPiece', prefix: '##', cleanup };
    t.model = {
      type: 'WordPiece',
      unk_token: '[UNK]',
      continuing_subword_prefix: '##',
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries([...SPECIAL, '[UNK]', ...words].map((w, i) => [w, i])),
    };
  };
}

const PROBE_WORDS = ['the', 'quick', 'brown', 'f', '##ox', ',', '4', '##2', 'times', '.'];

describe('spacingNormalised', () => {
  it('collapses whitespace and drops spaces before punctuation, nothing else', () => {
    expect(spacingNormalised(' the  quick\nfox , 42 times . ')).toBe('the quick fox, 42 times.');
    expect(spacingNormalised('fox,42')).toBe('fox,42');
    expect(spacingNormalised('f ox')).toBe('f ox');
  });
});

describe('probeTokenizer with WordPiece', () => {
  for (const cleanup of [false, true]) {
    it(`loads a WordPiece tokenizer (decoder cleanup ${cleanup}) and round-trips text through it`, async () => {
      const model = await loadModel(memorySource(await mutatedFolder({ tokenizer: wordPiece(PROBE_WORDS, cleanup) })), { numThreads: 1 });
      const ids = model.tokenizer.encode('the quick brown fox, 42 times.');
      expect(ids[0]).toBe(1);
      expect(ids.slice(1)).toEqual([4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
      const text = model.tokenizer.decode(ids.slice(1));
      expect(text).toBe(cleanup ? 'the quick brown fox, 42 times.' : 'the quick brown fox , 42 times .');
      await model.release();
    });
  }

  it('still refuses a WordPiece tokenizer that loses a word of the probe text', async () => {
    const words = PROBE_WORDS.filter((w) => w !== 'quick');
    const loading = loadModel(memorySource(await mutatedFolder({ tokenizer: wordPiece(words, false) })), { numThreads: 1 });
    await expect(loading).rejects.toThrow(
      new ModelError('tokenizer.json: the probe text "the quick brown fox, 42 times." encodes to 10 tokens that decode to "the [UNK] brown fox , 42 times .", not back to it'),
    );
  });
});
