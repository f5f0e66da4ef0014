"""Prepare the training corpus from Debian packages.

Downloads (apt-get download) and unpacks (dpkg -x) a few Debian packages that carry natural
English text, extracts plain-text documents, adds synthetic retrieval documents (passkeys,
key-value recall, repeated passages) and writes a deterministic train / held-out split:

    corpus/train.jsonl.gz     {"src": ..., "text": ...} one document per line
    corpus/heldout.jsonl.gz
    corpus/stats.json         documents and characters per source, licences

Standard library only (runs on any Debian machine with python3). Usage:

    python3 training/prepare_corpus.py --out corpus [--debs /tmp/kvscope-debs]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

from needle_family import write_family
from sources import HELDOUT_FILLER_SOURCES, TRAINING_SOURCES

HELDOUT_PERCENT = 1
SEED = 1234
ALL_SOURCES = {**TRAINING_SOURCES, **HELDOUT_FILLER_SOURCES}
PACKAGES = sorted({pkg for pkgs, _, _ in ALL_SOURCES.values() for pkg in pkgs})


def unpack(debs: Path) -> Path:
    """Downloads what is missing and unpacks every package (again when a package was added)."""
    root = debs / "root"
    debs.mkdir(parents=True, exist_ok=True)
    have = {deb.name.split("_")[0] for deb in debs.glob("*.deb")}
    missing = [pkg for pkg in PACKAGES if pkg not in have]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs, check=True)
    stamp = root / ".unpacked"
    wanted = "\n".join(sorted(deb.name for deb in debs.glob("*.deb")))
    if not stamp.exists() or stamp.read_text() != wanted:
        root.mkdir(exist_ok=True)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        stamp.write_text(wanted)
    return root


# ---------------------------------------------------------------- synthetic retrieval tasks
# The passkey wording is shared with the engine's needle evaluation (engine/metrics/needle.ts).
PASSKEY_INTRO = "There is a pass key hidden inside a lot of irrelevant text. Find it and remember it.\n\n"
PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key.\n"
PASSKEY_QUESTION = "\nWhat is the pass key? The pass key is"


def sentences_of(docs: list[str]) -> list[str]:
    out = []
    for d in docs:
        for s in re.split(r"(?<=[.!?])\s+", d.replace("\n", " ")):
            if 20 <= len(s) <= 200 and not re.search(r"\d", s):
                out.append(s.strip())
    return out


def synthetic_docs(rng: random.Random, sentences: list[str], paragraphs: list[str], n_chars: int):
    made = 0
    while made < n_chars:
        kind = rng.random()
        if kind < 0.5:  # passkey at a random depth
            target = rng.randint(300, 2200)
            key = str(rng.randint(10000, 99999))
            filler: list[str] = []
            while sum(len(s) + 1 for s in filler) < target:
                filler.append(rng.choice(sentences))
            at = rng.randint(0, len(filler))
            body = " ".join(filler[:at]) + ("\n" if at else "") + PASSKEY_NEEDLE.format(key=key) + " ".join(filler[at:])
            doc = PASSKEY_INTRO + body + PASSKEY_QUESTION + f" {key}."
        elif kind < 0.8:  # key-value recall
            words = [w for w in rng.sample(sentences, 40) for w in w.split()[:1]]
            pairs = [(f"{rng.choice(words).lower().strip(',.;:')}-{rng.randint(10, 99)}", rng.randint(1000, 9999))
                     for _ in range(rng.randint(5, 40))]
            lines = "\n".join(f"{k}: {v}" for k, v in pairs)
            asks = rng.sample(pairs, min(3, len(pairs)))
            doc = "Here is a list of records.\n" + lines + "\n\n" + "\n".join(f"The value of {k} is {v}." for k, v in asks)
        else:  # repeated passage
            p = rng.choice(paragraphs)[:800]
            doc = p + "\n\nOnce more, word for word:\n\n" + p
        made += len(doc)
        yield doc


HELDOUT_SAMPLE_CHARS = {"bible-kjv": 60000, "fortunes": 30000, "python-doc": 40000, "gcide": 40000, "wordnet": 20000}


def write_heldout_sample(held_docs: list[dict], path: Path) -> None:
    """The held-out documents the app and CLI ship (filler for needle prompts, text for
    perplexity and draft acceptance): natural sources only, in a fixed order, capped per source."""
    chosen = []
    for src, budget in HELDOUT_SAMPLE_CHARS.items():
        size = 0
        for doc in (d for d in held_docs if d["src"] == src):
            if size > budget:
                break
            chosen.append(doc)
            size += len(doc["text"])
    path.parent.mkdir(parents=True, exist_ok=True)
    about = ("Held-out documents of the kvscope training corpus (never trained on): filler for needle prompts, "
             "text for perplexity and draft acceptance. Made by training/prepare_corpus.py "
             "(1% split by sha256 of the document).")
    path.write_text(json.dumps({"about": about, "documents": chosen}, ensure_ascii=False, indent=0))


def _gzip_text(path: Path):
    """gzip with a zero timestamp, so the same corpus is the same bytes."""
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="corpus")
    ap.add_argument("--debs", default="/tmp/kvscope-debs")
    ap.add_argument("--synthetic-share", type=float, default=0.02, help="share of characters in static synthetic tasks (train.py adds fresh ones every step)")
    ap.add_argument("--heldout-sample", default="static/data/heldout.json", help="where to write the shipped held-out sample")
    ap.add_argument("--needle-family", default="static/data/needle-family.json",
                    help="where to write the held-out needle family (never-trained wordings and filler)")
    args = ap.parse_args()
    root = unpack(Path(args.debs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    sources = {name: list(extract(root)) for name, (_, extract, _) in TRAINING_SOURCES.items()}
    natural_chars = sum(len(d) for docs in sources.values() for d in docs)
    rng = random.Random(SEED)
    prose = sources["bible-kjv"] + sources["fortunes"] + sources["python-doc"]
    sentences = sentences_of(prose)
    paragraphs = [p for d in prose for p in d.split("\n\n") if len(p) > 200]
    share = args.synthetic_share
    sources["synthetic"] = list(synthetic_docs(rng, sentences, paragraphs, int(natural_chars * share / (1 - share))))

    licences = {name: {"packages": list(pkgs), "licence": licence} for name, (pkgs, _, licence) in ALL_SOURCES.items()}
    stats = {"sources": {}, "licences": licences, "heldout_percent": HELDOUT_PERCENT, "seed": SEED,
             "heldout_filler_sources": sorted(HELDOUT_FILLER_SOURCES)}
    held_docs: list[dict] = []
    with _gzip_text(out / "train.jsonl.gz") as train, _gzip_text(out / "heldout.jsonl.gz") as held:
        for src, docs in sources.items():
            n_train = n_held = c_train = c_held = 0
            for text in docs:
                digest = hashlib.sha256(text.encode()).digest()
                is_held = digest[0] * 100 // 256 < HELDOUT_PERCENT
                line = json.dumps({"src": src, "text": text}, ensure_ascii=False) + "\n"
                (held if is_held else train).write(line)
                if is_held:
                    held_docs.append({"src": src, "text": text})
                if is_held:
                    n_held, c_held = n_held + 1, c_held + len(text)
                else:
                    n_train, c_train = n_train + 1, c_train + len(text)
            stats["sources"][src] = {"train_docs": n_train, "train_chars": c_train,
                                     "heldout_docs": n_held, "heldout_chars": c_held}
            print(f"{src:12s} train {n_train:7d} docs {c_train / 1e6:6.2f} MB   held-out {n_held:5d} docs {c_held / 1e6:5.2f} MB",
                  file=sys.stderr)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    write_heldout_sample(held_docs, Path(args.heldout_sample))
    filler = {name: (licence, list(extract(root))) for name, (_, extract, licence) in HELDOUT_FILLER_SOURCES.items()}
    write_family(filler, Path(args.needle_family))


if __name__ == "__main__":
    main()
