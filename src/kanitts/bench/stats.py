"""Per-stream results and their summary over one load level (percentiles, RTF, throughput)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Generated tokens per second of audio (12.5 frames/s x 4 codebooks).
TOKENS_PER_SECOND = 50.0
#: Raw PCM bytes per second of audio: 22.05 kHz s16le mono.
PCM_BYTES_PER_SECOND = 22050 * 2


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated ``q``-th percentile (0-100) of ``values``; None when empty."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def rounded(x: float | None, nd: int = 1) -> float | None:
    """``round(x, nd)``, None passing through."""
    return None if x is None else round(x, nd)


@dataclass
class StreamResult:
    """One stream's timings (seconds) and amounts."""

    ttfa_s: float | None = None  # first audio (PCM) byte / chunk
    ttft_s: float | None = None  # first token (engine-only)
    wall_s: float = 0.0
    audio_s: float = 0.0
    tokens: int = 0
    error: str | None = None
    invalid: str | None = None  # restricted stream that did not parse as frames

    @property
    def rtf(self) -> float | None:
        """Real-time factor: wall seconds per audio second (< 1 is faster than real time)."""
        return self.wall_s / self.audio_s if self.audio_s > 0 else None


@dataclass
class LoadResult:
    """Every stream of one load level started together, and the level's wall time."""

    concurrency: int
    streams: list[StreamResult] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The level's figures (milliseconds for latencies) as one JSON-ready dict."""
        ok = [s for s in self.streams if s.error is None]
        ttfa = [s.ttfa_s * 1000 for s in ok if s.ttfa_s is not None]
        ttft = [s.ttft_s * 1000 for s in ok if s.ttft_s is not None]
        rtfs = [s.rtf for s in ok if s.rtf is not None]
        audio = sum(s.audio_s for s in ok)
        toks = sum(s.tokens for s in ok)
        return {
            "concurrency": self.concurrency,
            "streams": len(self.streams),
            "errors": len(self.streams) - len(ok),
            "first_error": next((s.error for s in self.streams if s.error), None),
            "invalid_streams": sum(1 for s in self.streams if s.invalid),
            "ttfa_p50_ms": rounded(percentile(ttfa, 50)), "ttfa_p95_ms": rounded(percentile(ttfa, 95)),
            "ttft_p50_ms": rounded(percentile(ttft, 50)), "ttft_p95_ms": rounded(percentile(ttft, 95)),
            "worst_rtf": rounded(max(rtfs), 4) if rtfs else None,
            "median_rtf": rounded(statistics.median(rtfs), 4) if rtfs else None,
            "all_realtime": bool(rtfs) and len(ok) == len(self.streams) and max(rtfs) < 1.0,
            "aggregate_audio_s_per_s": rounded(audio / self.wall_s, 2) if self.wall_s else None,
            # the HTTP path sees audio, not tokens: None there rather than a misleading 0.0
            "aggregate_tok_s": rounded(toks / self.wall_s, 1) if self.wall_s and toks else None,
            "wall_s": rounded(self.wall_s, 3),
        }


async def run_load(one: Callable[[int], Awaitable[StreamResult]], concurrency: int) -> LoadResult:
    """Start ``concurrency`` streams at once; each ``one(i)`` returns its StreamResult
    (an exception becomes a StreamResult carrying the error)."""
    t0 = time.perf_counter()
    res = await asyncio.gather(*[one(i) for i in range(concurrency)], return_exceptions=True)
    out = LoadResult(concurrency, wall_s=time.perf_counter() - t0)
    for r in res:
        out.streams.append(r if isinstance(r, StreamResult) else StreamResult(error=repr(r)[:300]))
    return out
