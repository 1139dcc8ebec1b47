"""Language detection restricted to the languages the server has models for.

``LanguageDetector(languages, default).detect(text)`` returns one of ``languages``.
It is built once (lingua models preloaded for the configured languages only, plus
one warm-up call), is deterministic, and falls back to ``default`` when the text
gives too little evidence:

* fewer than ``min_letters`` letters (default 3), digits/symbols only;
* the best language's confidence is under ``min_confidence`` or leads the runner-up
  by less than ``margin`` (mixed-language or ambiguous input).

With a single configured language lingua is never loaded.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["LanguageDetector", "resolve_language"]

# Aliases for codes lingua knows under another ISO 639-1 code.
_ALIASES = {"no": "nb", "iw": "he", "in": "id", "ji": "yi", "tl": "tl"}


def _base(code: str) -> str:
    return code.strip().lower().replace("_", "-").split("-")[0]


def resolve_language(code: str) -> Any:
    """The ``lingua.Language`` for an ISO 639-1 code ("en", "es-MX", ...); ValueError if unknown."""
    from lingua import IsoCode639_1, Language

    if not isinstance(code, str) or not code.strip():
        raise ValueError(f"unknown language code {code!r}")
    base = _ALIASES.get(_base(code), _base(code))
    try:
        iso = getattr(IsoCode639_1, base.upper())
        return Language.from_iso_code_639_1(iso)
    except Exception:  # noqa: BLE001 - lingua raises various types
        raise ValueError(
            f"unknown language code {code!r}: not an ISO 639-1 code supported by lingua"
        ) from None


class LanguageDetector:
    """Pick one of the configured languages for a text (see module docstring)."""

    def __init__(
        self,
        languages: list[str],
        default: str,
        *,
        min_letters: int = 3,
        min_confidence: float = 0.5,
        margin: float = 0.2,
    ) -> None:
        codes = [c for c in dict.fromkeys(languages or [])]
        if not codes:
            raise ValueError("LanguageDetector needs at least one language")
        if default not in codes:
            raise ValueError(f"default language {default!r} is not one of {codes}")
        self.languages = codes
        self.default = default
        self.min_letters = min_letters
        self.min_confidence = min_confidence
        self.margin = margin
        self._detector = None
        self._by_language: dict[Any, str] = {}
        resolved = {}
        for code in codes:
            lang = resolve_language(code)  # ValueError names the bad code
            if lang in resolved:
                raise ValueError(f"language codes {resolved[lang]!r} and {code!r} are the same language")
            resolved[lang] = code
        if len(codes) == 1:
            return  # nothing to detect: never build lingua models
        from lingua import LanguageDetectorBuilder

        self._by_language = resolved
        self._detector = (
            LanguageDetectorBuilder.from_languages(*resolved)
            .with_preloaded_language_models()
            .build()
        )
        self._lock = threading.Lock()
        self._detector.compute_language_confidence_values("warm up the models")

    def scores(self, text: str) -> list[tuple[str, float]]:
        """(code, confidence) for each configured language, best first."""
        if self._detector is None:
            return [(self.default, 1.0)]
        values = self._detector.compute_language_confidence_values(text)
        return [(self._by_language[v.language], float(v.value)) for v in values]

    def detect(self, text: str) -> str:
        """The configured language of ``text`` or ``default`` when unsure."""
        if self._detector is None:
            return self.default
        if not isinstance(text, str):
            return self.default
        sample = text[:2000]
        if sum(1 for ch in sample if ch.isalpha()) < self.min_letters:
            return self.default
        try:
            scores = self.scores(sample)
        except Exception:  # noqa: BLE001 - detection must never fail a request
            return self.default
        if not scores:
            return self.default
        best, p1 = scores[0]
        p2 = scores[1][1] if len(scores) > 1 else 0.0
        if p1 < self.min_confidence or p1 - p2 < self.margin:
            return self.default
        return best
