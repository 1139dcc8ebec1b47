"""Text normalization for speech: written forms -> words the model can read aloud.

``normalize(text, language, *, lexicon=None, markdown=True, code_blocks="summarize")``
runs, in order: sanitizing (control characters, emoji, odd spaces), chat markdown
(:mod:`.markdown`), the SSML subset (:mod:`.ssml`), pronunciation lexicons
(:mod:`.lexicon`) and the language's rewrite rules (numbers, money, dates, times,
units, phone numbers, addresses, URLs, e-mail, abbreviations, Roman numerals, symbols)
for English ("en", :mod:`.en`), Spanish ("es", :mod:`.es`) and German ("de",
:mod:`.de`).  Any other language gets the language-free steps only.

Guarantees
----------
* Never raises: every rule runs inside its own guard; a rule that fails on a token
  leaves that token as written, and a failure of a whole step skips that step.
* ``<break .../>`` tags are kept byte-for-byte (chunking parses them).
* Paragraph breaks (blank lines) are kept as exactly ``"\\n\\n"``; a single line break is
  kept as ``"\\n"``; every other run of whitespace becomes one space.
* Text produced by a lexicon entry, ``<sub alias>`` or ``<say-as>`` reaches the output
  as written.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

from kanitts.text.normalize import de, en, es
from kanitts.text.normalize.base import Language
from kanitts.text.normalize.lexicon import Lexicon, LexiconError, as_lexicons, load_lexicon
from kanitts.text.normalize.markdown import CODE_BLOCK_RULES, strip_markdown
from kanitts.text.normalize.rules import apply_rules
from kanitts.text.normalize.ssml import apply_ssml

__all__ = ["CODE_BLOCK_RULES", "LANGUAGES", "Lexicon", "LexiconError", "Normalizer", "load_lexicon",
           "normalize"]

logger = logging.getLogger(__name__)

#: Languages with full normalization: code -> its :class:`Language` module object.
LANGUAGES: dict[str, Language] = {"en": en.LANGUAGE, "es": es.LANGUAGE, "de": de.LANGUAGE}

_BREAK_TAG_RE = re.compile(r"<break\b[^<>]{0,200}>", re.IGNORECASE)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_EMOJI_RE = re.compile(
    "["
    "\U0001F000-\U0001FAFF"  # pictographs, emoticons, transport, flags, ...
    "\u2600-\u27BF"  # misc symbols, dingbats
    "\u2B00-\u2BFF"  # arrows, stars
    "\uFE00-\uFE0F"  # variation selectors
    "\u20E3"  # combining keycap
    "\U000E0000-\U000E007F"  # tag characters (flag sequences)
    "]+"
)
#: digit groups joined by a no-break or thin space ("10 000") are one number
_GROUP_SPACE_RE = re.compile(r"(?<=\d)[\u00a0\u202f\u2009](?=\d{3}(?!\d))")
#: placeholders for finished text: one Private Use character each (input never holds them)
_PLACEHOLDER_BASE = 0xF0000
_PLACEHOLDER_RE = re.compile("[\U000F0000-\U000FFFFD]")


def _sanitize(text: str) -> str:
    text = _SURROGATE_RE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2029", "\n\n").replace("\u2028", "\n").replace("\x85", "\n")
    text = text.replace("\x0b", "\n").replace("\x0c", "\n\n")
    text = _GROUP_SPACE_RE.sub("", text)
    text = _EMOJI_RE.sub(" ", text)
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        if ch == "\n":
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc":
            out.append(" " if ch == "\t" else "")
        elif cat == "Cf":
            out.append("\u200c" if ch == "\u200c" else "")  # keep ZWNJ (Persian etc.)
        elif cat in ("Zs", "Zl", "Zp"):
            out.append(" ")
        elif cat in ("Co", "Cn", "Cs"):
            out.append("")
        else:
            out.append(ch)
    return "".join(out)


def _collapse_ws(text: str) -> str:
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    return re.sub(r"\n{2,}", "\n\n", text)


def _base_lang(language: Any) -> str:
    if not isinstance(language, str):
        return ""
    return language.strip().lower().replace("_", "-").split("-")[0]


class _Protected:
    """Finished pieces of text, each replaced by one placeholder character until the end."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def __call__(self, text: str) -> str:
        if len(self.pieces) >= 0xFFFD:
            return text
        self.pieces.append(text)
        return chr(_PLACEHOLDER_BASE + len(self.pieces) - 1)

    def restore(self, text: str) -> str:
        if not self.pieces:
            return text
        return _PLACEHOLDER_RE.sub(lambda m: self.pieces[ord(m.group(0)) - _PLACEHOLDER_BASE], text)


def _step(name: str, fn: Any, text: str, *args: Any) -> str:
    try:
        return fn(text, *args)
    except Exception:  # noqa: BLE001 - a failing step is skipped, never fails the request
        logger.debug("normalize: step %s failed", name, exc_info=True)
        return text


def normalize(
    text: str,
    language: str,
    *,
    lexicon: Any = None,
    markdown: bool = True,
    code_blocks: str = "summarize",
) -> str:
    """Rewrite ``text`` for speech in ``language`` (see module docstring).

    ``lexicon``: None, a ``{written: spoken}`` mapping, a :class:`Lexicon`, or a list of
    those (earlier wins). ``markdown``: read chat markdown as sentences. ``code_blocks``:
    ``"skip"``, ``"summarize"`` or ``"read"`` for fenced code. Returns a ``str``; never raises.
    """
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:  # noqa: BLE001
            return ""
    try:
        text = _sanitize(text)
    except Exception:  # noqa: BLE001
        text = _PLACEHOLDER_RE.sub("", _SURROGATE_RE.sub("", text))
    code = _base_lang(language)
    lang = LANGUAGES.get(code)
    protect = _Protected()
    try:
        text = _BREAK_TAG_RE.sub(lambda m: protect(m.group(0)), text)
        if markdown:
            text = _step("markdown", strip_markdown, text, code, code_blocks)
        text = _step("ssml", apply_ssml, text, lang, protect)
        try:
            lexicons = as_lexicons(lexicon)
        except LexiconError:
            lexicons = []
        for lex in lexicons:
            text = _step("lexicon", lex.apply, text, protect)
        if lang is not None:
            parts = re.split(r"(\n+)", text)
            text = "".join(p if p.startswith("\n") else apply_rules(p, lang) for p in parts)
        out = _collapse_ws(protect.restore(_collapse_ws(text)))
    except Exception:  # noqa: BLE001
        out = _collapse_ws(protect.restore(text))
    return out.strip()


class Normalizer:
    """``normalize`` with server-wide settings bound: a lexicon, the markdown and code rules.

    ``normalizer(text, language, lexicon=request_lexicon)`` applies the request's lexicon
    before the server's (the request wins for a word both define).
    """

    def __init__(self, lexicon: Lexicon | None = None, *, markdown: bool = True,
                 code_blocks: str = "summarize", warm_up: bool = True) -> None:
        if code_blocks not in CODE_BLOCK_RULES:
            raise ValueError(f"code_blocks must be one of {CODE_BLOCK_RULES}, got {code_blocks!r}")
        self.lexicon = lexicon
        self.markdown = markdown
        self.code_blocks = code_blocks
        if warm_up:  # build every language's rules now, not on its first request (~30-130 ms)
            for code in LANGUAGES:
                self("Warm up: 1,234 $5 at 3:30 on 2024-03-15.", code)

    def __call__(self, text: str, language: str, lexicon: Any = None) -> str:
        lexicons = [x for x in (lexicon, self.lexicon) if x]
        return normalize(text, language, lexicon=lexicons or None, markdown=self.markdown,
                         code_blocks=self.code_blocks)
