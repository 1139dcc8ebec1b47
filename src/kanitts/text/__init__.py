"""Text front end: normalization, long-form chunk planning, language detection.

* :func:`normalize` ``(text, language) -> str`` rewrites written forms into words for
  English ("en") and Spanish ("es"): numbers (thousands separators per language:
  "1,234" en / "1.234" es; decimals "3.14" en / "3,14" es), ordinals, negatives,
  money ("$5.50" -> "five dollars and fifty cents", "5,50 €" -> "cinco euros con
  cincuenta céntimos"), percentages, dates, times, units, abbreviations, URLs and
  e-mail addresses, symbols and ranges.  Other languages get generic cleanup only.
  It never raises; control characters and emoji are removed, whitespace collapsed,
  paragraph breaks ("\\n\\n") and ``<break .../>`` tags kept for the chunker.
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
