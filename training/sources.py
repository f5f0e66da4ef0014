"""Plain-text documents from the Debian packages of the corpus (prepare_corpus.py).

Each extractor takes the root where the packages were unpacked (dpkg -x) and yields documents.
Standard library only.
"""
from __future__ import annotations

import gzip
import html.parser
import re
import subprocess
from pathlib import Path

CHUNK_CHARS = 6000


def _chunks(text: str, min_chars: int = 200):
    for i in range(0, len(text), CHUNK_CHARS):
        chunk = text[i:i + CHUNK_CHARS].strip()
        if len(chunk) > min_chars:
            yield chunk


def _tidy(lines: list[str]) -> str:
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


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


NAV_LINE = re.compile(r"^(\|?|index|modules \||next \||previous \||Navigation|Theme|Auto|Light|Dark|.*»|Prev|Next|Up|Home"
                      r"|Previous:.*|Next:.*|Up:.*|Contents|Index|Prev Up.*|(Prev|Next)(Chapter|Part|Appendix|\d).*)$")


def html_text(markup: str) -> str:
    parser = _HtmlText()
    parser.feed(markup)
    lines = [line.strip() for line in "".join(parser.parts).replace("¶", "").replace("\xa0", " ").splitlines()]
    # Drop the navigation boilerplate (breadcrumbs, next/previous links) around every page.
    return _tidy([line for line in lines if not NAV_LINE.match(line)])


def html_tree_docs(base: Path, skip_prefixes: tuple[str, ...] = ()):
    """Every HTML page under `base` (sorted, so the output is deterministic), in 6,000-character chunks."""
    for path in sorted(base.rglob("*.html")):
        if path.is_symlink() or not path.is_file() or path.name.startswith(skip_prefixes):
            continue
        yield from _chunks(html_text(path.read_text("utf-8", "replace")))


def python_doc_docs(root: Path):
    yield from html_tree_docs(root / "usr/share/doc/python3.11/html", ("genindex", "modindex", "search", "py-modindex"))


def pod_docs(root: Path):
    """Perl's manual (POD): headings and paragraphs kept, POD commands and formatting codes dropped."""
    for path in sorted((root / "usr/share/perl").rglob("*.pod")):
        lines = []
        for line in path.read_text("utf-8", "replace").splitlines():
            if line.startswith(("=pod", "=cut", "=begin", "=end", "=for", "=encoding", "=over", "=back")):
                continue
            line = re.sub(r"^=(head\d|item)\s*", "", line)
            line = re.sub(r"[BCFIEJLSXZ]<<+\s*(.*?)\s*>+>", r"\1", line)
            line = re.sub(r"[BCFIEJLSXZ]<([^<>]*)>", r"\1", line)
            lines.append(line.rstrip())
        yield from _chunks(_tidy(lines))


def text_tree_docs(base: Path, suffix: str):
    for path in sorted(base.rglob(f"*{suffix}")):
        if path.is_symlink() or not path.is_file():
            continue
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            yield from _chunks(_tidy([line.rstrip() for line in f.read().splitlines()]))


def dictzip_docs(path: Path):
    """A dictd database (dictzip is gzip) in 6,000-character runs of entries."""
    text = gzip.open(path).read().decode("utf-8", "replace").replace("{", "").replace("}", "")
    yield from _chunks(_tidy([line.rstrip() for line in text.splitlines()]))


RUST_BOOKS = ("book", "reference", "nomicon", "rust-by-example", "edition-guide", "embedded-book", "cargo", "rustc",
              "rustdoc", "std")


def rust_docs(root: Path):
    for book in RUST_BOOKS:
        yield from html_tree_docs(root / "usr/share/doc/rust-doc/html" / book, ("print", "toc", "search"))


def jargon_docs(root: Path):
    """The Jargon File, one document per run of entries (its HTML holds the whole lexicon)."""
    with gzip.open(root / "usr/share/doc/jargon-text/jargon.txt.gz", "rt", encoding="utf-8", errors="replace") as f:
        text = f.read().replace("{", "").replace("}", "")
    # From the lexicon on (the front matter is tables and a table of contents).
    text = text[text.find("\n   :0:"):] if "\n   :0:" in text else text
    yield from _chunks(_tidy([line.strip() for line in text.splitlines()]))


# source name → (Debian packages, extractor, licence as stated in /usr/share/doc/<pkg>/copyright)
TRAINING_SOURCES = {
    "bible-kjv": (("bible-kjv", "bible-kjv-text"), bible_docs,
                  "GPL-2+ (program and packaging); the KJV text itself is public domain"),
    "fortunes": (("fortunes", "fortunes-min"), fortune_docs,
                 "BSD-4-Clause (Regents of the University of California); cookie files carry their own notes"),
    "gcide": (("dict-gcide",), gcide_docs, "GPL-3+ (GCIDE; derived from the public-domain Webster's 1913 and WordNet 1.5)"),
    "wordnet": (("wordnet-base",), wordnet_docs, "WordNet 3.0 licence (permissive, Princeton University)"),
    "python-doc": (("python3.11-doc",), python_doc_docs, "PSF-2.0 (Python documentation)"),
    "perl-doc": (("perl-doc",), pod_docs, "GPL-1+ or Artistic (Perl documentation)"),
    "debian-handbook": (("debian-handbook",),
                        lambda root: html_tree_docs(root / "usr/share/doc/debian-handbook/html/en-US"),
                        "GPL-2+ or CC-BY-SA-3.0 (The Debian Administrator's Handbook)"),
    "vim-doc": (("vim-doc",), lambda root: html_tree_docs(root / "usr/share/doc/vim/html"), "Vim licence (GPL-compatible)"),
    "git-doc": (("git-doc",), lambda root: text_tree_docs(root / "usr/share/doc/git-doc", ".txt"), "GPL-2"),
    "postgresql-doc": (("postgresql-doc-15",), lambda root: html_tree_docs(root / "usr/share/doc/postgresql-doc-15/html"),
                       "PostgreSQL licence (BSD-style)"),
    "octave-doc": (("octave-doc",), lambda root: html_tree_docs(root / "usr/share/doc/octave"), "GPL-3+"),
    "gnu-standards": (("gnu-standards",), lambda root: html_tree_docs(root / "usr/share/doc/gnu-standards"),
                      "GFDL-1.3+ without invariant sections (GNU Coding Standards, Information for Maintainers)"),
    "debian-reference": (("debian-reference-en", "debian-reference-common"),
                         lambda root: html_tree_docs(root / "usr/share/debian-reference"), "GPL-2+ (Debian Reference)"),
    "debian-policy": (("debian-policy",), lambda root: html_tree_docs(root / "usr/share/doc/debian-policy"),
                      "GPL-2+ (Debian Policy Manual; never shipped in the app's data)"),
    "linux-doc": (("linux-doc-6.1",), lambda root: html_tree_docs(root / "usr/share/doc/linux-doc-6.1/html", ("genindex", "search")),
                  "GPL-2 (the Linux kernel's documentation)"),
    "rust-doc": (("rust-doc",), rust_docs, "MIT or Apache-2.0 (Rust's books and standard library documentation)"),
    "django-doc": (("python-django-doc",), lambda root: html_tree_docs(root / "usr/share/doc/python-django-doc/html", ("genindex", "search", "py-modindex")),
                   "BSD-3-Clause (Django documentation)"),
    "cmake-doc": (("cmake-doc", "cmake-data"), lambda root: html_tree_docs(root / "usr/share/doc/cmake-data/html", ("genindex", "search")),
                  "BSD-3-Clause (CMake documentation)"),
    "libreoffice-help": (("libreoffice-help-en-us",), lambda root: html_tree_docs(root / "usr/share/libreoffice/help/en-US"),
                         "MPL-2.0 (LibreOffice help)"),
    "apache-doc": (("apache2-doc",), lambda root: html_tree_docs(root / "usr/share/doc/apache2-doc/manual/en"), "Apache-2.0 (Apache HTTP Server documentation)"),
    "foldoc": (("dict-foldoc",), lambda root: dictzip_docs(root / "usr/share/dictd/foldoc.dict.dz"),
               "GFDL-1.1+ without invariant sections (Free On-line Dictionary of Computing)"),
    "devil": (("dict-devil",), lambda root: dictzip_docs(root / "usr/share/dictd/devil.dict.dz"),
              "public domain (Ambrose Bierce, The Devil's Dictionary)"),
}

# Never trained on: the filler of the held-out needle family (needle_family.py) comes from these.
HELDOUT_FILLER_SOURCES = {
    "jargon": (("jargon-text",), jargon_docs, "public domain (the Jargon File 4.4.7, Eric S. Raymond)"),
    "sqlite-doc": (("sqlite3-doc",), lambda root: html_tree_docs(root / "usr/share/doc/sqlite3"),
                   "public domain (SQLite documentation)"),
}
