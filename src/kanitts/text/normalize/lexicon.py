"""Pronunciation lexicon: whole-word, case-aware replacements applied before normalization.

* An entry whose written form has an upper-case letter matches exactly that spelling
  ("Nguyen", "SQL"); an all-lower-case entry matches any capitalisation ("kubectl",
  "Kubectl", "KUBECTL"), and a capitalised match gets a capitalised replacement.
* Whole words only: "SQL" does not match inside "MySQL"; written forms may hold
  punctuation ("C++", "node.js").
* The replacement reaches the model as written (the normalizer does not rewrite it).
* Several lexicons apply in order; an earlier one wins for a word both contain (the
  request's lexicon before the server's).

A lexicon file is JSON (an object ``{"written": "spoken"}``) when its name ends in
``.json``; otherwise one entry per line, ``written = spoken`` or ``written<TAB>spoken``,
with blank lines and ``#`` comments ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Callable

__all__ = ["Lexicon", "LexiconError", "load_lexicon"]

#: Longest written form / replacement accepted (characters).
MAX_WORD_CHARS = 100
MAX_REPLACEMENT_CHARS = 500


class LexiconError(ValueError):
    """A lexicon file or mapping that cannot be used; the message names the entry."""


class Lexicon:
    """A compiled set of replacements; ``apply(text, protect)`` rewrites ``text``."""

    __slots__ = ("entries", "_exact", "_folded", "_pattern")

    def __init__(self, entries: Mapping[str, str]) -> None:
        clean: dict[str, str] = {}
        for written, spoken in entries.items():
            if not isinstance(written, str) or not isinstance(spoken, str):
                raise LexiconError(f"lexicon entry {written!r}: written and spoken forms must be strings")
            w = written.strip()
            if not w or len(w) > MAX_WORD_CHARS or len(spoken) > MAX_REPLACEMENT_CHARS:
                raise LexiconError(f"lexicon entry {written!r}: empty or too long")
            clean[w] = spoken.strip()
        self.entries = clean
        self._exact = {w: s for w, s in clean.items() if w != w.lower()}
        self._folded = {w.lower(): s for w, s in clean.items() if w == w.lower()}
        alts = sorted(clean, key=len, reverse=True)
        self._pattern = re.compile(
            r"(?<!\w)(" + "|".join(re.escape(a) for a in alts) + r")(?!\w)", re.IGNORECASE
        ) if alts else None

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, word: str) -> str | None:
        """The replacement for a matched ``word`` (case rules above), or None."""
        if word in self._exact:
            return self._exact[word]
        spoken = self._folded.get(word.lower())
        if spoken is None:
            return None
        if word[:1].isupper() and spoken[:1].islower():
            spoken = spoken[:1].upper() + spoken[1:]
        return spoken

    def apply(self, text: str, protect: Callable[[str], str]) -> str:
        if self._pattern is None:
            return text

        def repl(m: re.Match[str]) -> str:
            spoken = self.lookup(m.group(1))
            return m.group(0) if spoken is None else protect(spoken)

        return self._pattern.sub(repl, text)


@lru_cache(maxsize=256)
def _compiled(items: tuple[tuple[str, str], ...]) -> Lexicon:
    return Lexicon(dict(items))


def as_lexicons(lexicon: object) -> list[Lexicon]:
    """``None``, a mapping, a :class:`Lexicon` or an iterable of those -> compiled lexicons."""
    if lexicon is None:
        return []
    if isinstance(lexicon, Lexicon):
        return [lexicon]
    if isinstance(lexicon, Mapping):
        return [_compiled(tuple(sorted((str(k), str(v)) for k, v in lexicon.items())))] if lexicon else []
    if isinstance(lexicon, Iterable) and not isinstance(lexicon, (str, bytes)):
        out: list[Lexicon] = []
        for item in lexicon:
            out.extend(as_lexicons(item))
        return out
    raise LexiconError(f"a lexicon must be a mapping of written to spoken forms, got {type(lexicon).__name__}")


def load_lexicon(path: str | Path | None) -> Lexicon | None:
    """Read a lexicon file (format in the module docstring); None for no path.

    Raises :class:`LexiconError` naming the file and line for unreadable or malformed files.
    """
    if path is None or str(path) == "":
        return None
    p = Path(path).expanduser()
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LexiconError(f"lexicon file {p}: {exc}") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LexiconError(f"lexicon file {p}: invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise LexiconError(f"lexicon file {p}: expected a JSON object of written -> spoken forms")
        entries = data
    else:
        entries = {}
        for n, line in enumerate(raw.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            written, sep, spoken = line.partition("\t") if "\t" in line else line.partition("=")
            if not sep or not written.strip():
                raise LexiconError(f"lexicon file {p}, line {n}: expected 'written = spoken'")
            entries[written.strip()] = spoken.strip()
    try:
        return Lexicon(entries)
    except LexiconError as exc:
        raise LexiconError(f"lexicon file {p}: {exc}") from None
