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
import html.parser
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

PACKAGES = {
    # package: licence as stated in its /usr/share/doc/<pkg>/copyright
    "bible-kjv": "GPL-2+ (program); the KJV text itself is public domain",
    "bible-kjv-text": "GPL-2+ packaging of the public-domain KJV text",
    "fortunes": "BSD-4-Clause (Regents of the University of California); cookie files carry their own notes",
    "fortunes-min": "BSD-4-Clause",
    "dict-gcide": "GPL-3+ (GCIDE; derived from the public-domain Webster's 1913 and WordNet 1.5)",
    "wordnet-base": "WordNet 3.0 licence (permissive, Princeton University)",
    "python3.11-doc": "PSF-2.0 (Python documentation)",
}
HELDOUT_PERCENT = 1
SEED = 1234


def unpack(debs: Path) -> Path:
    root = debs / "root"
    if (root / "usr").exists():
        return root
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    root.mkdir(exist_ok=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def bible_docs(root: Path):
    out = subprocess.run(
        [str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "-l100000", "Gen1:1-Rev22:21"],
        check=True, capture_output=True, text=True).stdout
    # One document per chapter; the program prints "Book N" headers followed by numbered verses.
    chapter: list[str] = []
    for line in out.splitlines():
        if re.match(r"^[1-3]?\s?[A-Z][A-Za-z ]+ \d+$", line.strip()) and not line.startswith(" "):
            if chapter:
                yield "\n".join(chapter).strip()
            chapter = [line.strip()]
        elif line.strip():
            chapter.append(re.sub(r"^\s*\d+\s+", "", line))
    if chapter:
        yield "\n".join(chapter).strip()


def fortune_docs(root: Path):
    base = root / "usr/share/games/fortunes"
    for path in sorted(base.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.suffix in (".dat", ".u8"):
            continue
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        for cookie in re.split(r"\n%\n", text):
            cookie = cookie.strip("%\n ")
            if len(cookie) > 20:
                yield cookie


def gcide_docs(root: Path):
    text = gzip.open(root / "usr/share/dictd/gcide.dict.dz").read().decode("utf-8", "replace")
    text = re.sub(r"\[[^\]\n]{0,40}(Webster|PJC|WordNet|Century|Johnson|Sh\.|R\. C\.)[^\]\n]{0,40}\]", "", text)
    text = re.sub(r"\\[^\\\n]{1,60}\\", "", text)  # \pro*nun\ marks
    text = text.replace("{", "").replace("}", "")
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n +", "\n", text)
    entries = [e.strip() for e in re.split(r"\n\s*\n", text) if len(e.strip()) > 3]
    start = next(i for i, e in enumerate(entries) if e.startswith("A\n") or e.startswith("A "))
    doc: list[str] = []
    size = 0
    for entry in entries[start:]:
        doc.append(entry)
        size += len(entry)
        if size > 3000:
            yield "\n\n".join(doc)
            doc, size = [], 0
    if doc:
        yield "\n\n".join(doc)


def wordnet_docs(root: Path):
    for pos in ("noun", "verb", "adj", "adv"):
        lines = []
        for line in (root / f"usr/share/wordnet/data.{pos}").read_text("latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            head, gloss = line.split("|", 1)
            fields = head.split()
            count = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
            words = [re.sub(r"\(.*\)$", "", w) for w in words]
            lines.append(f"{', '.join(words)} ({pos}): {gloss.strip()}")
            if len(lines) == 40:
                yield "\n".join(lines)
                lines = []
        if lines:
            yield "\n".join(lines)


class _HtmlText(html.parser.HTMLParser):
    SKIP = {"script", "style", "head", "nav"}
    BLOCK = {"p", "div", "pre", "li", "h1", "h2", "h3", "h4", "dt", "dd", "tr", "br", "section", "table"}

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


NAV_LINE = re.compile(r"^(\|?|index|modules \||next \||previous \||Navigation|Theme|Auto|Light|Dark|.*»)$")


def python_doc_docs(root: Path):
    base = root / "usr/share/doc/python3.11/html"
    for path in sorted(base.rglob("*.html")):
        if path.name.startswith(("genindex", "modindex", "search", "py-modindex")):
            continue
        parser = _HtmlText()
        parser.feed(path.read_text("utf-8", "replace"))
        lines = [line.strip() for line in "".join(parser.parts).replace("¶", "").splitlines()]
        # Drop the navigation boilerplate (breadcrumbs, next/previous links) around every page.
        lines = [line for line in lines if not NAV_LINE.match(line)]
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        for i in range(0, len(text), 6000):
            chunk = text[i:i + 6000].strip()
            if len(chunk) > 200:
                yield chunk


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="corpus")
    ap.add_argument("--debs", default="/tmp/kvscope-debs")
    ap.add_argument("--synthetic-share", type=float, default=0.06, help="share of characters in synthetic tasks")
    ap.add_argument("--heldout-sample", default="static/data/heldout.json", help="where to write the shipped held-out sample")
    args = ap.parse_args()
    root = unpack(Path(args.debs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    sources = {
        "bible-kjv": list(bible_docs(root)),
        "fortunes": list(fortune_docs(root)),
        "gcide": list(gcide_docs(root)),
        "wordnet": list(wordnet_docs(root)),
        "python-doc": list(python_doc_docs(root)),
    }
    natural_chars = sum(len(d) for docs in sources.values() for d in docs)
    rng = random.Random(SEED)
    prose = sources["bible-kjv"] + sources["fortunes"] + sources["python-doc"]
    sentences = sentences_of(prose)
    paragraphs = [p for d in prose for p in d.split("\n\n") if len(p) > 200]
    share = args.synthetic_share
    sources["synthetic"] = list(synthetic_docs(rng, sentences, paragraphs, int(natural_chars * share / (1 - share))))

    stats = {"sources": {}, "licences": PACKAGES, "heldout_percent": HELDOUT_PERCENT, "seed": SEED}
    held_docs: list[dict] = []
    with gzip.open(out / "train.jsonl.gz", "wt", encoding="utf-8") as train, \
            gzip.open(out / "heldout.jsonl.gz", "wt", encoding="utf-8") as held:
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


if __name__ == "__main__":
    main()
