"""Text front end: normalization, long-form chunk planning, language detection.

* :func:`normalize` ``(text, language, *, lexicon=None, markdown=True,
  code_blocks="summarize") -> str`` rewrites written forms into words for English
  ("en"), Spanish ("es") and German ("de"): chat markdown, the SSML subset
  (``sub``, ``say-as``...), pronunciation lexicons, then numbers (each language's
  separators), years vs quantities, money, dates, times, fractions, ordinals, units,
  phone numbers, addresses, URLs, e-mail, abbreviations, Roman numerals, symbols and
  ranges (``kanitts.text.normalize`` package, one module per language).  Other
  languages get the language-free steps only.  It never raises; control characters
  and emoji are removed, whitespace collapsed, paragraph breaks ("\\n\\n") and
  ``<break .../>`` tags kept for the chunker.
* :func:`plan_chunks` ``(text, language, ...) -> list[TextChunk]`` splits long text
  into generations with the silence to insert after each; :func:`estimate_seconds`.
* :class:`LanguageDetector` picks one of the configured languages (lingua), falling
  back to the default on short or ambiguous input.
"""

from kanitts.text.chunking import (
    DEFAULT_BREAK_SECONDS,
    DEFAULT_CHARS_PER_SECOND,
    MAX_BREAK_SECONDS,
    TextChunk,
    estimate_seconds,
    parse_breaks,
    plan_chunks,
)
from kanitts.text.language import LanguageDetector, resolve_language
from kanitts.text.normalize import normalize

__all__ = [
    "DEFAULT_BREAK_SECONDS",
    "DEFAULT_CHARS_PER_SECOND",
    "MAX_BREAK_SECONDS",
    "LanguageDetector",
    "TextChunk",
    "estimate_seconds",
    "normalize",
    "parse_breaks",
    "plan_chunks",
    "resolve_language",
]
