"""Associative-recall rows for training, built fresh every step (a fixed pool gets memorised).

TRAINING_NOTES.md: a passkey circuit trained on one template stays tied to it; open-vocabulary
key phrases are the lever. A row here states 1–5 facts "<frame with a key phrase> <value>" at
random depths of corpus filler, then asks for 1–2 of them by repeating the words that led up to
the value (the last 2–all words of the frame, under a question frame of its own), and the answer
follows. Key phrases are 1–4 random words of the tokenizer's vocabulary; values are digit strings,
lower-case words or runs of arbitrary tokens. needle_family.check_disjoint keeps the held-out
family's wordings and key formats out of all of this.

variety 2 (the second training stage of the shipped target) adds what the first stage's
held-out family results showed missing: key phrases that are runs of real corpus words, values
that are codes of mixed letters, digits and `._/` (never a held-out key format), and a repeated
lead whose first word changes case ("serial number" asked as "Serial number").
"""
from __future__ import annotations

import re

import numpy as np

from corpus import BOS_ID, EOS_ID
from needle_family import WORDINGS, key_regex

HELDOUT_KEYS = [key_regex(w["key"]) for w in WORDINGS]
CODE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

# {name} = the key phrase, {value} = the value. No frame may occur in needle_family.WORDINGS.
STATEMENT_FRAMES = [
    "The {name} is {value}.",
    "{Name}: {value}",
    "Remember that the {name} is {value}.",
    "Important: the {name} is {value}.",
    "For the record, the {name} was {value}.",
    "We set the {name} to {value} yesterday.",
    "Write this down - {name} = {value}.",
    "They told me the {name} equals {value}.",
    "Keep in mind: {name} {value}.",
    "The {name} of the day is {value}!",
    "- {name}: {value};",
    "According to the file, the {name} reads {value}.",
    "My {name} has always been {value}.",
    "the {name} -> {value}",
    "Please memorise the {name}, which is {value}.",
    "Listed under {name}: {value}.",
]
QUESTION_FRAMES = [
    "What is the {name}?",
    "Do you remember it?",
    "Question:",
    "Now answer.",
    "Recall the fact stated earlier.",
    "Which value was given?",
    "Tell me.",
    "Q:",
    "Let us check what was written above.",
    "",
]
INTROS = [
    "",
    "",
    "Some facts are hidden in the text below. Find them.\n\n",
    "Read carefully; you will be asked about a detail.\n\n",
    "Records follow.\n",
]


class RetrievalRows:
    def __init__(self, tokenizer, tokens: np.ndarray, width: int, rng: np.random.Generator, variety: int = 1):
        self.tok, self.tokens, self.width, self.rng, self.variety = tokenizer, tokens, width, rng, variety
        vocab = tokenizer.get_vocab()
        # Byte-level BPE marks a leading space with "Ġ": whole lower-case words of the vocabulary.
        self.words = sorted(t[1:] for t in vocab if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower() and len(t) > 3)
        self.newline = self.enc("\n")[0]
        self.n_vocab = tokenizer.get_vocab_size()

    def enc(self, text: str) -> np.ndarray:
        return np.array(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def _word(self) -> str:
        return self.words[int(self.rng.integers(len(self.words)))]

    def _code(self) -> str:
        """Letters and digits with optional `._/` separators, never in a held-out key format."""
        while True:
            n = int(self.rng.integers(4, 10))
            chars = [CODE_CHARS[i] for i in self.rng.integers(0, len(CODE_CHARS), n)]
            if self.rng.random() < 0.4:
                chars.insert(int(self.rng.integers(1, n)), "._/"[int(self.rng.integers(3))])
            code = "".join(chars)
            if not any(rx.fullmatch(code) for rx in HELDOUT_KEYS):
                return code

    def _phrase(self) -> str:
        """2–5 consecutive words of a random stretch of the corpus, lower-cased."""
        at = int(self.rng.integers(0, len(self.tokens) - 24))
        words = [w for w in re.findall(r"[A-Za-z]+", self.tok.decode(self.tokens[at:at + 24].tolist())) if len(w) > 1]
        if len(words) < 3:
            return self._word()
        n = int(self.rng.integers(2, min(5, len(words) - 1) + 1))
        start = int(self.rng.integers(1, len(words) - n + 1))  # the first word may be cut
        return " ".join(words[start:start + n]).lower()

    def value(self) -> str:
        kind = self.rng.random()
        if self.variety >= 2:
            if kind < 0.3:
                return self._code()
            kind = (kind - 0.3) / 0.7
        if kind < 0.45:  # digits, 3–8 of them, no leading zero
            n = int(self.rng.integers(3, 9))
            return str(int(self.rng.integers(1, 10))) + "".join(str(d) for d in self.rng.integers(0, 10, n - 1))
        if kind < 0.75:
            return " ".join(self._word() for _ in range(int(self.rng.integers(1, 4))))
        # a run of arbitrary tokens (decoded): copy anything
        ids = self.rng.integers(3, self.n_vocab, int(self.rng.integers(2, 6))).tolist()
        text = self.tok.decode(ids).strip()
        return text if text and "\n" not in text else self._word()

    def _fact(self) -> tuple[str, str, str, str]:
        if self.variety >= 2 and self.rng.random() < 0.5:
            name = self._phrase()
        else:
            name = " ".join(self._word() for _ in range(int(self.rng.integers(1, 5))))
        value = self.value()
        frame = STATEMENT_FRAMES[int(self.rng.integers(len(STATEMENT_FRAMES)))]
        text = frame.replace("{Name}", name[:1].upper() + name[1:]).replace("{name}", name)
        lead = text[:text.index("{value}")].rstrip()
        return text.replace("{value}", value), lead, value, name

    def _question(self, lead: str, name: str) -> str:
        words = lead.split(" ")
        keep = int(self.rng.integers(min(2, len(words)), len(words) + 1))
        frame = QUESTION_FRAMES[int(self.rng.integers(len(QUESTION_FRAMES)))]
        if self.variety < 2:
            name = lead  # variety 1 named the whole lead (frame words too)
        asked = frame.replace("{name}", name.lower().strip(" :-=>")) if "{name}" in frame else frame
        suffix = " ".join(words[-keep:])
        if self.variety >= 2 and self.rng.random() < 0.35:
            suffix = suffix[:1].swapcase() + suffix[1:]
        return (asked + " " if asked else "") + suffix

    def _filler(self, n: int) -> np.ndarray:
        at = int(self.rng.integers(0, len(self.tokens) - n - 1))
        return np.where(self.tokens[at:at + n] < 3, self.newline, self.tokens[at:at + n]).astype(np.int64)

    def row(self) -> np.ndarray:
        facts = [self._fact() for _ in range(int(self.rng.integers(1, 6)))]
        asked = sorted(self.rng.choice(len(facts), size=min(len(facts), int(self.rng.integers(1, 3))), replace=False))
        intro = self.enc(INTROS[int(self.rng.integers(len(INTROS)))]) if self.rng.random() < 0.5 else np.zeros(0, np.int64)
        stated = [np.concatenate([[self.newline], self.enc(fact[0]), [self.newline]]) for fact in facts]
        tail = [np.concatenate([[self.newline], self.enc(self._question(facts[i][1], facts[i][3])), self.enc(" " + facts[i][2] + "."), [self.newline]])
                for i in asked]
        fixed = 2 + len(intro) + sum(map(len, stated)) + sum(map(len, tail))
        total = int(self.rng.integers(min(fixed + 32, self.width), self.width + 1))
        n_fill = max(0, total - fixed)
        filler = self._filler(n_fill)
        cuts = np.sort(self.rng.integers(0, n_fill + 1, len(stated)))
        parts, prev = [np.array([BOS_ID]), intro], 0
        for cut, piece in zip(cuts, stated):
            parts += [filler[prev:cut], piece]
            prev = cut
        parts += [filler[prev:], *tail, np.array([EOS_ID])]
        doc = np.concatenate(parts)[: self.width + 1]
        if len(doc) < self.width + 1:
            doc = np.concatenate([doc, self._filler(self.width + 1 - len(doc))])
        return doc

    def rows(self, n: int) -> np.ndarray:
        return np.stack([self.row() for _ in range(n)])

    def examples(self, n: int = 2000) -> tuple[list[str], list[str]]:
        """Frames and values as generated (for needle_family.check_disjoint)."""
        return STATEMENT_FRAMES + QUESTION_FRAMES, [self.value() for _ in range(n)]
