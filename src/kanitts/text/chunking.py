"""Long-form planning: split text into chunks the model speaks in one generation.

Rules (``plan_chunks``)
-----------------------
* A text estimated under ``threshold_seconds`` with no paragraph break and no
  ``<break>`` tag is one chunk.
* Otherwise whole sentences are packed greedily into chunks of at most
  ``max_chunk_seconds``.  A sentence longer than that is cut at clause marks
  (``, ; : — –``), then between words.  Nothing is ever cut inside a word, so
  "3.14", "1,000", "$5.50", "e.g." and "Dr." stay whole; abbreviations such as
  "Dr.", "e.g.", "Sr.", "p. ej." never end a sentence.
* Pauses after a chunk: ``sentence_pause`` inside a paragraph, ``paragraph_pause``
  across a blank line, and exactly the requested silence across ``<break>`` tags
  (consecutive tags add up; a break replaces the sentence/paragraph pause).
  The last chunk's pause is 0, so breaks at the very end are dropped.
* Break tags: ``<break time="500ms"/>``, ``<break time="1.5s"/>`` (quotes optional,
  a unit is required), ``<break strength="weak"/>`` (none 0, x-weak 0.1, weak 0.25,
  medium 0.5, strong 0.75, x-strong 1.0 s) and ``<break/>`` = 0.5 s.  Values are
  clamped to 0..10 s.  A leading break gives a first chunk with text "".
  Anything else that looks like markup (including a malformed break) is text.
* Chunk texts are the input's own characters with whitespace collapsed: joining
  them reproduces the input (minus whitespace and the break tags) in order.

Durations are estimated from characters (``DEFAULT_CHARS_PER_SECOND``), so give
the planner normalized text (``normalize`` keeps paragraph breaks and break tags).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_CHARS_PER_SECOND",
    "DEFAULT_BREAK_SECONDS",
    "MAX_BREAK_SECONDS",
    "TextChunk",
    "estimate_seconds",
    "plan_chunks",
    "parse_breaks",
]

DEFAULT_CHARS_PER_SECOND: dict[str, float] = {"en": 15.0, "es": 14.0}
FALLBACK_CHARS_PER_SECOND = 14.0
DEFAULT_BREAK_SECONDS = 0.5
MAX_BREAK_SECONDS = 10.0
_STRENGTH = {"none": 0.0, "x-weak": 0.1, "weak": 0.25, "medium": 0.5, "strong": 0.75, "x-strong": 1.0}


@dataclass(frozen=True)
class TextChunk:
    """One generation: ``text`` ("" for a pure pause) then ``pause_after`` seconds of silence."""

    text: str
    pause_after: float


# ----------------------------------------------------------------------------------
# Break tags
# ----------------------------------------------------------------------------------

_TAG_RE = re.compile(r"<break\b([^<>]{0,200})>", re.IGNORECASE)
_ATTR_RE = re.compile(
    r"\s*(?:(?P<name>time|strength)\s*=\s*"
    r"(?:\"(?P<v1>[^\"<>]*)\"|'(?P<v2>[^'<>]*)'|(?P<v3>[^\"'<>\s/]+))\s*)?/?\s*",
    re.IGNORECASE,
)
_TIME_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)", re.IGNORECASE)


def _break_seconds(attrs: str) -> float | None:
    """Seconds for a break tag's attribute text, or None if it is not a valid break."""
    m = _ATTR_RE.fullmatch(attrs)
    if not m:
        return None
    name = (m.group("name") or "").lower()
    if not name:
        return DEFAULT_BREAK_SECONDS
    val = (m.group("v1") or m.group("v2") or m.group("v3") or "").strip().lower()
    if name == "strength":
        secs = _STRENGTH.get(val)
        if secs is None:
            return None
    else:
        t = _TIME_RE.fullmatch(val)
        if not t:
            return None
        try:
            secs = float(t.group(1))
        except ValueError:
            return None
        if t.group(2).lower() == "ms":
            secs /= 1000.0
    if secs != secs:  # NaN
        return None
    return min(max(secs, 0.0), MAX_BREAK_SECONDS)


def parse_breaks(text: str) -> list[str | float]:
    """Split ``text`` into text pieces (str) and valid break durations (float)."""
    out: list[str | float] = []
    pos = 0
    for m in _TAG_RE.finditer(text):
        secs = _break_seconds(m.group(1))
        if secs is None:
            continue  # malformed: stays in the text
        if m.start() > pos:
            out.append(text[pos : m.start()])
        out.append(secs)
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


# ----------------------------------------------------------------------------------
# Estimation
# ----------------------------------------------------------------------------------


def _cps(language: str, chars_per_second: float | None) -> float:
    if chars_per_second is None:
        lang = (language or "").lower().replace("_", "-").split("-")[0]
        chars_per_second = DEFAULT_CHARS_PER_SECOND.get(lang, FALLBACK_CHARS_PER_SECOND)
    cps = float(chars_per_second)
    if not cps > 0 or cps == float("inf"):
        raise ValueError(f"chars_per_second must be a positive number, got {chars_per_second!r}")
    return cps


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _spoken_len(text: str) -> int:
    pieces = parse_breaks(text) if "<" in text else [text]
    return len(" ".join(_collapse(p) for p in pieces if isinstance(p, str) and p.strip()))


def estimate_seconds(text: str, language: str, chars_per_second: float | None = None) -> float:
    """Estimated speech duration of ``text``: characters (whitespace collapsed, break
    tags removed) divided by the language's characters per second."""
    return _spoken_len(text) / _cps(language, chars_per_second)


# ----------------------------------------------------------------------------------
# Sentence / clause / word splitting
# ----------------------------------------------------------------------------------

# Words whose trailing period never ends a sentence (compared lower-cased).
_NEVER_END = frozenset(
    """dr. mr. mrs. ms. mx. prof. st. mt. capt. sgt. gen. lt. col. gov. rev. sen. rep.
    fig. figs. no. nos. vol. vols. ch. sec. approx. vs. cf. e.g. i.e. eg. ie. viz. al.
    jan. feb. mar. apr. jun. jul. aug. sep. sept. oct. nov. dec.
    sr. sra. srta. sres. dra. lic. lcda. ing. profa. dña. sto. sta. aprox. av. avda.
    pág. págs. tel. núm. n.º nº ej. p. pp. art. ud. uds. vd. vds.""".split()
)
# May end a sentence, but only when the next sentence visibly starts.
_MAYBE_END = frozenset("etc. inc. ltd. co. corp. jr. a.m. p.m. u.s. u.k. ee.uu. ee. uu.".split())

_END_RE = re.compile(r"(?:[.!?…]+|[。！？]+|\.\.\.)[\"'”’»)\]]*(?=\s|$|[¿¡\"“«(])|[。！？]+|\n")
_STARTS_SENTENCE = re.compile(r"\s*[\"'“«(¿¡]*[A-ZÁÉÍÓÚÑÜ0-9]")
_CLAUSE_RE = re.compile(r"[,;:](?=\s)|\s[—–-]\s|[—–]")


def _is_sentence_end(text: str, start: int, end: int) -> bool:
    mark = text[start:end]
    if mark == "\n" or not mark.startswith(".") or mark.startswith(".."):
        return True
    word_start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start), text.rfind("\t", 0, start)) + 1
    word = text[word_start : start + 1].lower().lstrip("\"'“«(¿¡[")
    if not word or word == ".":
        return True
    if word in _NEVER_END:
        return False
    core = word[:-1]
    if len(core) == 1 and core.isalpha():
        return False  # an initial: "J. K. Rowling", "p. ej."
    follows = _STARTS_SENTENCE.match(text, end) is not None or not text[end:].strip()
    if word in _MAYBE_END or re.fullmatch(r"(?:\w\.){2,}", word):
        return follows
    return True


def _split_at(text: str, pattern: re.Pattern[str], is_boundary: Callable[[str, int, int], bool] | None = None) -> list[str]:
    """Pieces of ``text`` ending at each ``pattern`` match that ``is_boundary`` accepts (all when
    None), each piece keeping its delimiter; whitespace-only pieces are dropped."""
    out: list[str] = []
    pos = 0
    for m in pattern.finditer(text):
        if is_boundary is not None and not is_boundary(text, m.start(), m.end()):
            continue
        piece = text[pos : m.end()]
        if piece.strip():
            out.append(piece)
        pos = m.end()
    if text[pos:].strip():
        out.append(text[pos:])
    return out


def _split_sentences(text: str) -> list[str]:
    return _split_at(text, _END_RE, _is_sentence_end)


def _split_clauses(text: str) -> list[str]:
    return _split_at(text, _CLAUSE_RE)


def _pack(pieces: list[str], limit_chars: float) -> list[str]:
    """Greedily join collapsed pieces with spaces while they fit in ``limit_chars``."""
    chunks: list[str] = []
    cur = ""
    for piece in pieces:
        piece = _collapse(piece)
        if not piece:
            continue
        cand = f"{cur} {piece}" if cur else piece
        if cur and len(cand) > limit_chars:
            chunks.append(cur)
            cur = piece
        else:
            cur = cand
    if cur:
        chunks.append(cur)
    return chunks


def _atoms(text: str, limit_chars: float) -> list[str]:
    """Pieces of ``text`` each within ``limit_chars`` (except single long words)."""
    atoms: list[str] = []
    for sentence in _split_sentences(text):
        if len(_collapse(sentence)) <= limit_chars:
            atoms.append(sentence)
            continue
        for clause in _split_clauses(sentence):
            if len(_collapse(clause)) <= limit_chars:
                atoms.append(clause)
            else:
                atoms.extend(_pack(clause.split(), limit_chars))
    return atoms


# ----------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------

_PARA_RE = re.compile(r"\n[^\S\n]*\n\s*")


def plan_chunks(
    text: str,
    language: str,
    *,
    chars_per_second: float | None = None,
    threshold_seconds: float = 15.0,
    max_chunk_seconds: float = 12.0,
    sentence_pause: float = 0.2,
    paragraph_pause: float = 0.6,
) -> list[TextChunk]:
    """Plan the generations for ``text`` (see module docstring for the rules).

    Returns ``[]`` when there is nothing to say.
    """
    cps = _cps(language, chars_per_second)
    if not max_chunk_seconds > 0:
        raise ValueError(f"max_chunk_seconds must be positive, got {max_chunk_seconds!r}")
    sentence_pause = max(0.0, float(sentence_pause or 0.0))
    paragraph_pause = max(0.0, float(paragraph_pause or 0.0))
    limit_chars = max_chunk_seconds * cps
    if not isinstance(text, str):
        text = str(text)

    items = parse_breaks(text)
    has_break = any(isinstance(i, float) for i in items)
    if not has_break and not _PARA_RE.search(text):
        whole = _collapse(text)
        if not whole:
            return []
        if len(whole) / cps < threshold_seconds:
            return [TextChunk(whole, 0.0)]

    # Sequence of ("text", str) / ("para", None) / ("break", secs).
    seq: list[tuple[str, object]] = []
    for item in items:
        if isinstance(item, float):
            seq.append(("break", item))
            continue
        parts = _PARA_RE.split(item)
        for k, part in enumerate(parts):
            if k:
                seq.append(("para", None))
            if part.strip():
                seq.append(("text", part))

    texts: list[str] = []
    pauses: list[float] = []
    pending_break = 0.0
    saw_break = saw_para = False
    for kind, value in seq:
        if kind == "break":
            pending_break += float(value)  # type: ignore[arg-type]
            saw_break = True
        elif kind == "para":
            saw_para = True
        else:
            if texts:
                pauses[-1] = (
                    pending_break if saw_break else paragraph_pause if saw_para else sentence_pause
                )
            elif saw_break:
                texts.append("")
                pauses.append(pending_break)
            for chunk in _pack(_atoms(str(value), limit_chars), limit_chars):
                texts.append(chunk)
                pauses.append(sentence_pause)
            pending_break, saw_break, saw_para = 0.0, False, False

    if not any(texts):
        return []
    pauses[-1] = 0.0
    return [TextChunk(t, p) for t, p in zip(texts, pauses)]
