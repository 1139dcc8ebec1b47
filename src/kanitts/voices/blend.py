"""Voice blends: ``"alice(0.7)+bob(0.3)"`` -> one mixed speaker embedding.

Syntax: voice names joined by ``+``, each optionally followed by a weight in
parentheses; spaces around names, weights and ``+`` are ignored. Either every voice has a
weight or none has (then they are equal). Weights are non-negative decimal numbers
(``0.7``, ``.5``, ``2``, ``1e-1``) with a positive sum; they are divided by that sum. A
voice may appear once. The mix is the weighted sum of the embeddings, re-normalised to
unit L2 length.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from kanitts.voices.errors import BlendSyntaxError, VoiceInvalidError, VoiceNotFoundError
from kanitts.voices.names import BLEND_SYNTAX_CHARS, name_key

_TERM = re.compile(r"\s*(?P<name>[^()+]*?)\s*(?:\(\s*(?P<weight>[^()]*?)\s*\)\s*)?(?P<end>\+|$)")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def is_blend(voice: str) -> bool:
    """Whether a voice string uses the blend syntax (contains ``(``, ``)`` or ``+``)."""
    return any(c in voice for c in BLEND_SYNTAX_CHARS)


def parse_blend(spec: str) -> list[tuple[str, float]]:
    """``"alice(0.7) + bob(0.3)"`` -> ``[("alice", 0.7), ("bob", 0.3)]``: names as
    written (stripped) with weights that sum to 1. ``"alice+bob"`` -> equal weights.

    Raises :class:`BlendSyntaxError` with a message naming the problem: empty names,
    unbalanced parentheses, a weight that is not a number, negative weights, weights on
    some voices only, a zero sum, a voice given twice."""
    parts: list[tuple[str, float | None]] = []
    pos = 0
    while True:
        m = _TERM.match(spec, pos)
        if m is None or m.end() == pos and pos < len(spec):
            raise BlendSyntaxError(f"bad voice blend {spec!r} near {spec[pos:pos + 20]!r}; "
                                   "expected e.g. 'alice(0.7)+bob(0.3)'")
        name, weight_text = m["name"], m["weight"]
        if not name:
            where = "after '+'" if parts else "at the start"
            raise BlendSyntaxError(f"bad voice blend {spec!r}: a voice name is missing {where}")
        weight: float | None = None
        if weight_text is not None:
            if not _NUMBER.fullmatch(weight_text):
                raise BlendSyntaxError(f"bad voice blend {spec!r}: weight {weight_text!r} of {name!r} is not a number")
            weight = float(weight_text)
            if weight < 0 or not math.isfinite(weight):
                raise BlendSyntaxError(f"bad voice blend {spec!r}: weight of {name!r} must not be negative")
        parts.append((name, weight))
        pos = m.end()
        if m["end"] == "":
            break
    if len({w is None for _, w in parts}) > 1:
        raise BlendSyntaxError(f"bad voice blend {spec!r}: give every voice a weight, or none")
    seen: set[str] = set()
    for name, _ in parts:
        if name_key(name) in seen:
            raise BlendSyntaxError(f"bad voice blend {spec!r}: {name!r} appears more than once")
        seen.add(name_key(name))
    weights = [1.0 if w is None else w for _, w in parts]
    total = sum(weights)
    if total <= 0:
        raise BlendSyntaxError(f"bad voice blend {spec!r}: the weights sum to zero")
    return [(name, w / total) for (name, _), w in zip(parts, weights)]


def mix_embeddings(parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Weighted sum of ``[D]`` embeddings, normalised to unit L2: float32 ``[D]``.
    Raises :class:`VoiceInvalidError` for no parts, mismatched sizes, or a mix that
    cancels out (norm ~0)."""
    if not parts:
        raise VoiceInvalidError("a voice blend needs at least one voice")
    dims = {np.shape(e) for e, _ in parts}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise VoiceInvalidError(f"cannot blend embeddings of shapes {sorted(dims)}")
    mix = np.zeros(next(iter(dims)), dtype=np.float64)
    for embedding, weight in parts:
        mix += float(weight) * np.asarray(embedding, dtype=np.float64)
    norm = float(np.linalg.norm(mix))
    if not norm > 1e-6:
        raise VoiceInvalidError("the voice blend cancels out (its embeddings sum to ~0)")
    return (mix / norm).astype(np.float32)


def blend_voices(spec: str, lookup: Callable[[str], np.ndarray]) -> np.ndarray:
    """Parse ``spec`` and mix the embeddings ``lookup(name)`` returns (``[D]`` float32).
    ``lookup`` raises :class:`VoiceNotFoundError` for unknown names; the error is re-raised
    naming the blend. Returns float32 ``[D]`` with unit L2 norm."""
    parts = []
    for name, weight in parse_blend(spec):
        try:
            parts.append((lookup(name), weight))
        except VoiceNotFoundError:
            raise VoiceNotFoundError(f"unknown voice {name!r} in blend {spec!r}") from None
    return mix_embeddings(parts)
