"""Speed change without pitch change (OpenAI's ``speed`` parameter), streaming-safe.

Uses FFmpeg's ``atempo`` filter (WSOLA-style overlap-add) through a PyAV filter graph:
``abuffer -> atempo [-> atempo ...] -> abuffersink``. One ``atempo`` instance handles
0.5..100 in current FFmpeg, but above 2.0 it skips input instead of blending it, so
factors outside 0.5..2.0 are split into a chain of instances (e.g. 0.25 = 0.5 * 0.5,
4.0 = 2.0 * 2.0). The filter keeps state across calls: feed chunks as they come with
:meth:`TempoChanger.process` and call :meth:`TempoChanger.flush` at the end of the
stream for the buffered tail. Output length ~= input length / speed.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from fractions import Fraction

import numpy as np

from kanitts.audio.chunked import filter_stream

MIN_SPEED = 0.25
MAX_SPEED = 4.0

_EMPTY = np.zeros(0, dtype=np.float32)
_BLOCK = 512  # samples per frame pushed into the filter graph (23 ms at 22050 Hz)


def atempo_factors(speed: float) -> list[float]:
    """Split ``speed`` into factors in [0.5, 2.0] whose product is ``speed``."""
    if not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive finite number, got {speed!r}")
    factors: list[float] = []
    rest = float(speed)
    while rest > 2.0:
        factors.append(2.0)
        rest /= 2.0
    while rest < 0.5:
        factors.append(0.5)
        rest /= 0.5
    if not math.isclose(rest, 1.0, rel_tol=0.0, abs_tol=1e-9) or not factors:
        factors.append(rest)
    return factors


class TempoChanger:
    """Streaming tempo change of mono float32 PCM; ``speed`` in [0.25, 4.0].

    ``speed == 1.0`` is an exact pass-through (no filter, no latency).
    ``process(pcm)`` returns the output ready so far (may be empty: the filter holds
    back its analysis window plus one 512-sample block, ~70 ms of input); ``flush()`` returns the rest and ends
    the stream. Not thread-safe; one instance per stream.
    """

    def __init__(self, speed: float, sample_rate: int = 22050) -> None:
        try:
            speed = float(speed)
        except (TypeError, ValueError):
            raise ValueError(f"speed must be a number, got {speed!r}") from None
        if not (math.isfinite(speed) and MIN_SPEED <= speed <= MAX_SPEED):
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.speed = speed
        self.sample_rate = int(sample_rate)
        self.passthrough = speed == 1.0
        self.samples_in = 0
        self.samples_out = 0
        self._closed = False
        self._graph = None
        if not self.passthrough:
            self._build_graph()

    def _build_graph(self) -> None:
        import av.filter

        graph = av.filter.Graph()
        src = graph.add(
            "abuffer",
            sample_rate=str(self.sample_rate),
            sample_fmt="flt",
            channel_layout="mono",
            time_base=f"1/{self.sample_rate}",
        )
        node = src
        for factor in atempo_factors(self.speed):
            stage = graph.add("atempo", tempo=f"{factor:.9g}")
            node.link_to(stage)
            node = stage
        sink = graph.add("abuffersink")
        node.link_to(sink)
        graph.configure()
        self._graph = graph
        self._time_base = Fraction(1, self.sample_rate)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Feed a chunk; returns the tempo-changed samples available now (float32)."""
        if self._closed:
            raise RuntimeError("TempoChanger is closed (flush() was called)")
        x = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if self.passthrough:
            self.samples_in += x.size
            self.samples_out += x.size
            return x
        if x.size == 0:
            return _EMPTY
        import av

        # atempo sizes each output frame as (input frame / tempo) and emits it only
        # once full, which its analysis window delays until the *next* input frame:
        # a big input frame would come out one whole chunk late. Small frames keep
        # that lag to ~one block plus the window.
        x = np.ascontiguousarray(x)
        parts = []
        for start in range(0, x.size, _BLOCK):
            block = x[start : start + _BLOCK]
            frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.time_base = self._time_base
            frame.pts = self.samples_in
            self.samples_in += block.size
            self._graph.push(frame)
            out = self._pull()
            if out.size:
                parts.append(out)
        if not parts:
            return _EMPTY
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def flush(self) -> np.ndarray:
        """End of stream: returns the samples still buffered in the filter."""
        if self._closed:
            return _EMPTY
        self._closed = True
        if self.passthrough:
            return _EMPTY
        self._graph.push(None)
        out = self._pull()
        self._graph = None
        return out

    def _pull(self) -> np.ndarray:
        import av

        parts = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            parts.append(frame.to_ndarray().reshape(-1))
        if not parts:
            return _EMPTY
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        out = out.astype(np.float32, copy=False)
        self.samples_out += out.size
        return out


def apply_speed(
    pcm: AsyncIterator[np.ndarray], speed: float, sample_rate: int = 22050
) -> AsyncIterator[np.ndarray]:
    """Tempo change of a stream of mono float32 PCM chunks (FFmpeg atempo, pitch unchanged).

    A pass-through at ``speed == 1.0``; otherwise one :class:`TempoChanger` for the whole
    stream, its buffered tail yielded at the end. Empty output chunks are skipped. Closing
    this generator closes ``pcm`` (when it has ``aclose()``). Raises ``ValueError`` for a
    speed outside [0.25, 4.0] when the first chunk is requested.
    """
    return filter_stream(pcm, None if speed == 1.0 else TempoChanger, speed, sample_rate)
