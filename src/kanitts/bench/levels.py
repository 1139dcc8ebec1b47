"""Load levels for ``kanitts bench``: which stream counts to measure, per backend and device.

vLLM and the native engine batch hundreds of streams on a GPU, so their levels reach the
real-time limit; on a CPU the levels stay small. The one table is :data:`LEVELS`; flags
override it.
"""

from __future__ import annotations

#: (backend, on CUDA) -> (concurrency levels, extra real-time levels) measured by default.
LEVELS: dict[tuple[str, bool], tuple[tuple[int, ...], tuple[int, ...]]] = {
    ("vllm", True): ((1, 16, 256), (128, 256, 384, 512)),
    ("native", True): ((1, 16, 256), (128, 256, 384, 512)),
    ("native", False): ((1, 4), ()),
}


#: Backends that batch a load level into shared steps.
BATCHING = frozenset({"vllm", "native"})


def default_levels(backend: str, cuda: bool) -> tuple[list[int], list[int]]:
    """``(concurrency, realtime)`` levels for ``backend`` (``vllm`` / ``native``; anything
    else, such as a server that does not report its backend, is measured like ``native``)
    with or without CUDA."""
    key = (backend, cuda) if (backend, cuda) in LEVELS else ("native", cuda)
    conc, rt = LEVELS[key]
    return list(conc), list(rt)


def eta_seconds(backend: str, level: int, stream_s: float) -> float:
    """A rough time for one load level from the measured wall time of one stream
    (``stream_s``): vLLM and the native engine batch the level (about one stream's time);
    for a backend not known to batch (a server that does not report it) the worst case,
    ``level`` streams one after another."""
    return stream_s if backend in BATCHING else stream_s * level
