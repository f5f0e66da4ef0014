"""Corpus reading and tokenization shared by the training steps."""
from __future__ import annotations

import gzip
import json
import lzma
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>"]  # ids 0, 1, 2
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


def read_docs(corpus: Path, split: str) -> list[dict]:
    """{split}.jsonl.gz, or {split}.jsonl.xz (smaller, to carry the corpus to a GPU machine)."""
    xz = Path(corpus) / f"{split}.jsonl.xz"
    opener = (lambda: lzma.open(xz, "rt", encoding="utf-8")) if xz.exists() else \
        (lambda: gzip.open(Path(corpus) / f"{split}.jsonl.gz", "rt", encoding="utf-8"))
    with opener() as f:
        return [json.loads(line) for line in f]


def tokenize_docs(tokenizer, docs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate BOS + doc + EOS for every document; return (tokens uint16, BOS offsets int64)."""
    encodings = tokenizer.encode_batch([d["text"] for d in docs], add_special_tokens=False)
    lengths = np.array([len(e.ids) + 2 for e in encodings], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    tokens = np.empty(int(lengths.sum()), dtype=np.uint16)
    for start, enc in zip(starts, encodings):
        tokens[start] = BOS_ID
        tokens[start + 1: start + 1 + len(enc.ids)] = enc.ids
        tokens[start + 1 + len(enc.ids)] = EOS_ID
    return tokens, starts


def load_or_tokenize(tokenizer_path: Path, corpus: Path, split: str, cache_dir: Path):
    from tokenizers import Tokenizer

    cache = Path(cache_dir) / f"{split}-tokens.npz"
    if cache.exists():
        data = np.load(cache)
        return data["tokens"], data["starts"]
    tok = Tokenizer.from_file(str(tokenizer_path))
    tokens, starts = tokenize_docs(tok, read_docs(corpus, split))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, tokens=tokens, starts=starts)
    return tokens, starts
