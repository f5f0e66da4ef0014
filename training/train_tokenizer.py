"""Train the byte-level BPE tokenizer (Hugging Face `tokenizers`) on the training split.

Digits are split one per token so that numbers (pass keys, values) are copied digit by digit.
Usage: python training/train_tokenizer.py --corpus corpus --vocab 4096 --out runs/tokenizer.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from corpus import SPECIAL_TOKENS, read_docs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="corpus")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--out", default="runs/tokenizer.json")
    args = ap.parse_args()
    t0 = time.time()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    docs = read_docs(Path(args.corpus), "train")
    tok.train_from_iterator((d["text"] for d in docs), trainer=trainer, length=len(docs))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tok.save(args.out)
    sample = docs[0]["text"][:2000]
    n = len(tok.encode(sample).ids)
    print(f"tokenizer: vocab {tok.get_vocab_size()}, {len(sample.encode()) / n:.2f} bytes/token on a sample, {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
