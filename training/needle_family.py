"""The held-out needle family: retrieval prompts whose wordings, key formats and filler never
appear in training (issue 12). prepare_corpus.py writes it to static/data/needle-family.json,
which `kvscope inspect` reads (engine/metrics/needle-family.ts builds the prompts).

The training rows (retrieval.py) draw key phrases from open vocabulary, values as digit strings,
lower-case words or arbitrary token runs, and frames from their own lists; `check_disjoint`
asserts that none of the phrases below is one of those frames and that no key pattern here is a
training value format. The filler comes from packages the corpus never trains on
(sources.HELDOUT_FILLER_SOURCES).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

# `key`: D = a digit, L = a capital letter, anything else literal (engine/metrics/needle-family.ts).
WORDINGS = [
    {"id": "vault-code",
     "needle": "Note: the access code for the vault is {key}.",
     "question": "What was the access code for the vault? The access code for the vault is",
     "key": "LL-DDDD"},
    {"id": "meeting-room",
     "needle": "Reminder: this week the budget meeting takes place in room {key}.",
     "question": "Where does the budget meeting take place this week? In room",
     "key": "DDDL"},
    {"id": "router-serial",
     "needle": "The label on the back of the router says: serial number {key}.",
     "question": "Look at that label once more. What does it say? Serial number",
     "key": "DDDD-DDDD"},
    {"id": "train-ticket",
     "needle": "Your confirmation number for the train ticket is {key}, so please keep it safe.",
     "question": "I have lost my ticket. Can you help? Your confirmation number for the train ticket is",
     "key": "LLLDDD"},
    {"id": "locker",
     "needle": "Ada wrote the locker combination {key} on a yellow sticky note.",
     "question": "Ada has forgotten it. On the sticky note she wrote the locker combination",
     "key": "DD-DD-DD"},
]

FILLER_DOCUMENT_CHARS = 120_000  # per source: enough sentences for every prompt length


def key_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(r"\d" if c == "D" else "[A-Z]" if c == "L" else re.escape(c) for c in pattern))


def check_disjoint(training_frames: list[str], training_value_examples: list[str]) -> None:
    """Fails if a held-out wording reuses a training frame or a training value looks like a held-out key."""
    for w in WORDINGS:
        for frame in training_frames:
            core = frame.replace("{name}", "").replace("{value}", "").strip(" .:,")
            if len(core) >= 8 and (core in w["needle"] or core in w["question"]):
                raise SystemExit(f"held-out wording {w['id']} contains the training frame {frame!r}")
        rx = key_regex(w["key"])
        for value in training_value_examples:
            if rx.fullmatch(value.strip()):
                raise SystemExit(f"training value {value!r} has the held-out key format {w['key']}")


def write_family(filler: dict[str, tuple[str, list[str]]], path: Path) -> None:
    """filler: source name → (licence, documents). Keeps the first documents of each source, in order."""
    sources = []
    for src, (licence, docs) in filler.items():
        chosen, size = [], 0
        for doc in docs:
            if size > FILLER_DOCUMENT_CHARS:
                break
            chosen.append(doc)
            size += len(doc)
        sources.append({"src": src, "licence": licence, "documents": chosen})
    about = ("kvscope's held-out needle family (training/needle_family.py): wordings, key formats and filler "
             "that never appear in training. key: D = digit, L = capital letter, other characters literal.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"about": about, "version": 1, "wordings": WORDINGS, "filler": sources},
                               ensure_ascii=False, indent=0) + "\n")
