"""Sample-rate conversion of mono float32 PCM, streaming-safe (FFmpeg's libswresample).

The model speaks at 22,050 Hz; OpenAI's ``pcm`` and SSE audio are 24,000 Hz, and clients
may ask for any rate in [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`].
:class:`Resampler` keeps one libswresample context per stream (:mod:`kanitts.audio.swr`,
called directly; PyAV's ``av.AudioResampler`` when that library cannot be loaded), so the
filter's history carries across chunks: resampling a stream chunk by chunk gives the same
samples as resampling it in one piece (within one 16-bit LSB), with no clicks at chunk
edges. ``flush()`` returns the filter's delayed tail at the end of the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from fractions import Fraction

import numpy as np

from kanitts.audio.chunked import filter_stream
from kanitts.audio.swr import SwrStream, load_swresample

#: Output rates a request may ask for, in Hz.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 48_000

_EMPTY = np.zeros(0, dtype=np.float32)
#: Chunks longer than this (samples) after a stream's first are resampled off the event loop
#: (a codec chunk of 8 frames is 14,112; the first chunk, 1 frame, stays inline).
OFFLOAD_SAMPLES = 4096


class Resampler:
    """Streaming conversion of mono float32 PCM from ``in_rate`` to ``out_rate`` Hz.

    ``process(pcm)`` takes a float32 ``[N]`` chunk and returns the float32 output ready so
    far (about ``N * out_rate / in_rate`` samples; swr holds back a few samples of filter
    delay); ``flush()`` returns the rest and ends the stream. Equal rates are an exact
    pass-through. Not thread-safe; one instance per stream. Raises ``ValueError`` for a
    rate outside [``MIN_SAMPLE_RATE``, ``MAX_SAMPLE_RATE``] (``in_rate`` is only required
    to be positive).
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0:
            raise ValueError(f"in_rate must be positive, got {in_rate}")
        check_sample_rate(out_rate)
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._pts = 0
        self._swr = None
        self._direct: SwrStream | None = None
        if self.in_rate != self.out_rate:
            lib = load_swresample()
            if lib is not None:
                self._direct = SwrStream(lib, self.in_rate, self.out_rate)
            else:
                import av

                self._swr = av.AudioResampler(format="flt", layout="mono", rate=self.out_rate)

    @property
    def passthrough(self) -> bool:
        return self._swr is None and self._direct is None

    def process(self, pcm: np.ndarray) -> np.ndarray:
        if self.passthrough:
            return pcm
        x = np.ascontiguousarray(pcm, dtype=np.float32).reshape(1, -1)
        if x.shape[1] == 0:
            return _EMPTY
        if self._direct is not None:
            return self._direct.process(x)
        import av

        frame = av.AudioFrame.from_ndarray(x, format="flt", layout="mono")
        frame.sample_rate = self.in_rate
        frame.time_base = Fraction(1, self.in_rate)
        frame.pts = self._pts
        self._pts += x.shape[1]
        return _join(self._swr.resample(frame))

    def flush(self) -> np.ndarray:
        if self._direct is not None:
            return self._direct.flush()
        if self._swr is None:
            return _EMPTY
        return _join(self._swr.resample(None))


def check_sample_rate(rate: int) -> int:
    """``rate`` when it is an integer in [``MIN_SAMPLE_RATE``, ``MAX_SAMPLE_RATE``] Hz,
    else ``ValueError``."""
    if not isinstance(rate, int) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample rate must be an integer from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz, got {rate!r}")
    return rate


def _join(frames: list) -> np.ndarray:
    parts = [f.to_ndarray().reshape(-1) for f in frames]
    if not parts:
        return _EMPTY
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return out.astype(np.float32, copy=False)


def resample_all(pcm: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One clip, float32 ``[N]`` at ``in_rate`` -> float32 at ``out_rate`` Hz (whole tail)."""
    r = Resampler(in_rate, out_rate)
    if r.passthrough:
        return pcm
    head = r.process(pcm)
    tail = r.flush()
    return np.concatenate([head, tail]) if tail.size else head


def resample_stream(
    pcm: AsyncIterator[np.ndarray], in_rate: int, out_rate: int
) -> AsyncIterator[np.ndarray]:
    """A stream of float32 chunks at ``in_rate`` as a stream at ``out_rate`` Hz: one
    :class:`Resampler` for the whole stream, its tail yielded at the end, empty chunks
    skipped. A pass-through for equal rates. Closing this generator closes ``pcm``.
    Chunks after the first with more than :data:`OFFLOAD_SAMPLES` samples are resampled on a
    worker thread (libswresample runs without the GIL), so the event loop is not held."""
    return filter_stream(pcm, Resampler, in_rate, out_rate, offload_above=OFFLOAD_SAMPLES)
