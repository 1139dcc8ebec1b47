"""Voice names: what a valid name is and when two names are the same."""

from __future__ import annotations

import unicodedata

from kanitts.voices.errors import VoiceInvalidError

#: Characters of the blend syntax (``alice(0.7)+bob(0.3)``); names cannot hold them.
BLEND_SYNTAX_CHARS = "()+"


def name_key(name: str) -> str:
    """Case-insensitive identity of a name (NFKC, Unicode case folding, outer spaces
    stripped): ``"Alice "`` and ``"ALICE"`` are the same voice name."""
    return unicodedata.normalize("NFKC", name.strip()).casefold()


def validate_name(name: str, max_chars: int) -> str:
    """The name stripped of surrounding spaces; raises :class:`VoiceInvalidError` when
    empty, longer than ``max_chars``, or holding control characters, slashes or the
    blend syntax characters ``( ) +``."""
    clean = name.strip()
    if not clean:
        raise VoiceInvalidError("a voice name must not be empty")
    if len(clean) > max_chars:
        raise VoiceInvalidError(f"a voice name has at most {max_chars} characters")
    bad = sorted({c for c in clean if c in BLEND_SYNTAX_CHARS + "/\\" or unicodedata.category(c)[0] == "C"})
    if bad:
        raise VoiceInvalidError(f"a voice name cannot contain {''.join(bad)!r}")
    return clean
