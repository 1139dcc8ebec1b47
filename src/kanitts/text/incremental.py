"""Incremental text cutting: text deltas in (an LLM's output as it streams), speakable pieces out.

:class:`TextCutter` buffers deltas and cuts the buffer at clause and sentence boundaries
(the same marks and abbreviation rules as :mod:`kanitts.text.chunking`: ``. ! ? …``, line
breaks, ``, ; :`` followed by a space, dashes) once the piece before the boundary holds at
least ``min_chars`` characters. A piece with no boundary is cut between two words once it
holds ``max_chars`` characters. Nothing is ever cut inside a word or a number: a boundary
counts only once a non-space character follows it, so "3." followed later by "5" is
"3.5", "1," followed by "000" is "1,000", and "Dr." never ends a sentence.

The cut points depend only on the text, never on how it was split into deltas: feeding
``"Hello there, world. How"`` at once or character by character gives the same pieces.
:meth:`TextCutter.flush` hands out whatever is buffered as one piece (the client's
``flush``/``close``), so only the flush points (the client's choice) add cuts.

Pieces are the input's own characters, stripped at both ends (whitespace inside kept).
"""

from __future__ import annotations

import re

from kanitts.text.chunking import _CLAUSE_RE, _END_RE, _is_sentence_end

__all__ = ["DEFAULT_MIN_CHARS", "DEFAULT_MAX_CHARS", "TextCutter"]

#: Shortest piece cut at a boundary (shorter ones wait for the next boundary or a flush).
DEFAULT_MIN_CHARS = 24
#: Longest piece without a boundary before it is cut between words.
DEFAULT_MAX_CHARS = 300

# What may follow a boundary before the text after it is known: whitespace and the
# openers _STARTS_SENTENCE skips. A boundary is decided once a character outside these follows.
_DECIDES = re.compile(r"[^\s\"'“«(¿¡\[]")
_SPACE = re.compile(r"\s+")


class TextCutter:
    """Cuts a growing text into pieces at clause/sentence boundaries (see the module docstring).

    ``min_chars`` >= 1 and ``max_chars`` >= ``min_chars`` count characters of the piece with
    its whitespace collapsed. Raises ``ValueError`` for bounds outside those ranges.
    """

    def __init__(self, min_chars: int = DEFAULT_MIN_CHARS, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        if min_chars < 1 or max_chars < min_chars:
            raise ValueError(f"need 1 <= min_chars <= max_chars, got {min_chars}, {max_chars}")
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._buf = ""

    @property
    def pending(self) -> str:
        """The buffered text not yet cut (raw, unstripped)."""
        return self._buf

    def feed(self, delta: str) -> list[str]:
        """Append ``delta``; return the pieces that are now decided, in order (maybe none)."""
        self._buf += delta
        pieces: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if piece:
                pieces.append(piece)
        return pieces

    def flush(self) -> list[str]:
        """Everything buffered as one piece (``[]`` when only whitespace is buffered)."""
        piece, self._buf = self._buf.strip(), ""
        return [piece] if piece else []

    def clear(self) -> str:
        """Drop the buffer (a barge-in); returns what was dropped."""
        dropped, self._buf = self._buf, ""
        return dropped

    # -- cutting -------------------------------------------------------------------------
    def _next_cut(self) -> int | None:
        """End offset of the first decided cut in the buffer, or None (wait for more text).

        Candidates in text order: sentence ends and clause marks once the piece is
        ``min_chars`` long, gaps between words once it is ``max_chars`` long. The first
        candidate with nothing decisive after it stops the search (it may still change)."""
        text = self._buf
        cands = sorted(
            [(m.end(), 0, m.start()) for m in _END_RE.finditer(text)]
            + [(m.end(), 1, m.start()) for m in _CLAUSE_RE.finditer(text)]
            + [(m.start(), 2, m.start()) for m in _SPACE.finditer(text) if m.start() > 0]
        )
        for end, kind, start in cands:
            if not self._long_enough(text, end, self.max_chars if kind == 2 else self.min_chars):
                continue
            if not _DECIDES.search(text, end):
                return None
            if kind == 0 and not _is_sentence_end(text, start, end):
                continue  # an abbreviation or an initial ("Dr.", "J.")
            return end
        return None

    @staticmethod
    def _long_enough(text: str, end: int, need: int) -> bool:
        return len(" ".join(text[:end].split())) >= need
