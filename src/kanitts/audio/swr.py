"""libswresample called directly (ctypes), for mono float32 streams.

PyAV's ``AudioResampler`` runs libswresample inside a libavfilter graph (abuffer ->
aresample -> aformat -> abuffersink): building that graph costs ~0.6 ms per stream and
every chunk pays for frame objects and graph pushes/pulls with the GIL held. The same
``SwrContext`` with the same (default) options, called through ctypes, gives the same
samples bit for bit (``tests/test_audio_swr.py``) at a fraction of the CPU, and ctypes
drops the GIL for the duration of each call. The library is the one PyAV ships (its
wheel's bundled ``libswresample``) or the system's; :func:`load_swresample` returns None
when neither can be loaded, and :mod:`kanitts.audio.resample` then uses PyAV's graph.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_AV_SAMPLE_FMT_FLT = 3  # enum AVSampleFormat: packed float32
_AV_CHANNEL_ORDER_NATIVE = 1  # enum AVChannelOrder
_AV_CH_FRONT_CENTER = 0x4


class _ChannelLayout(ctypes.Structure):
    """FFmpeg's ``AVChannelLayout`` (order, nb_channels, u.mask, opaque)."""

    _fields_ = [("order", ctypes.c_int), ("nb_channels", ctypes.c_int), ("mask", ctypes.c_uint64),
                ("opaque", ctypes.c_void_p)]


_MONO = _ChannelLayout(_AV_CHANNEL_ORDER_NATIVE, 1, _AV_CH_FRONT_CENTER, None)
_P = ctypes.c_void_p


def _candidates() -> list[str]:
    """PyAV's bundled libswresample (Linux/Windows wheels: ``av.libs``; macOS: ``av/.dylibs``),
    then the system's."""
    found: list[str] = []
    try:
        import av

        pkg = Path(av.__file__).parent
        for folder in (pkg.parent / "av.libs", pkg / ".dylibs"):
            found += sorted(str(p) for p in folder.glob("*swresample*"))
    except ImportError:  # pragma: no cover - PyAV is a dependency
        pass
    system = ctypes.util.find_library("swresample")
    if system:
        found.append(system)
    return found


@functools.cache
def load_swresample() -> ctypes.CDLL | None:
    """The loaded libswresample with its signatures declared, or None (not found, or
    older than FFmpeg 5.1's ``swr_alloc_set_opts2``)."""
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            lib.swr_alloc_set_opts2.argtypes = [ctypes.POINTER(_P), ctypes.POINTER(_ChannelLayout), ctypes.c_int,
                                                ctypes.c_int, ctypes.POINTER(_ChannelLayout), ctypes.c_int,
                                                ctypes.c_int, ctypes.c_int, _P]
            lib.swr_init.argtypes = [_P]
            lib.swr_convert.argtypes = [_P, ctypes.POINTER(_P), ctypes.c_int, ctypes.POINTER(_P), ctypes.c_int]
            lib.swr_get_out_samples.argtypes = [_P, ctypes.c_int]
            lib.swr_free.argtypes = [ctypes.POINTER(_P)]
            lib.swr_free.restype = None
            return lib
        except (OSError, AttributeError) as exc:
            logger.debug("libswresample at %s not usable: %s", path, exc)
    return None


class SwrStream:
    """One ``SwrContext`` converting mono float32 from ``in_rate`` to ``out_rate`` Hz with
    libswresample's default options (what PyAV's ``AudioResampler`` uses).

    ``process(pcm)``: a C-contiguous float32 ``[N]`` chunk in, the float32 samples ready so
    far out; ``flush()``: the filter's delayed tail (the stream ends). Not thread-safe; the
    context is freed with the object. Raises ``ValueError`` when libswresample refuses the
    rates, ``RuntimeError`` on a conversion error.
    """

    def __init__(self, lib: ctypes.CDLL, in_rate: int, out_rate: int) -> None:
        self._lib = lib
        self._ctx = _P()
        rc = lib.swr_alloc_set_opts2(ctypes.byref(self._ctx), ctypes.byref(_MONO), _AV_SAMPLE_FMT_FLT, out_rate,
                                     ctypes.byref(_MONO), _AV_SAMPLE_FMT_FLT, in_rate, 0, None)
        if rc < 0 or not self._ctx or lib.swr_init(self._ctx) < 0:
            raise ValueError(f"libswresample cannot convert {in_rate} Hz to {out_rate} Hz")

    def process(self, pcm: np.ndarray) -> np.ndarray:
        return self._convert(pcm)

    def flush(self) -> np.ndarray:
        return self._convert(None)

    def _convert(self, pcm: np.ndarray | None) -> np.ndarray:
        n = 0 if pcm is None else int(pcm.size)
        cap = max(int(self._lib.swr_get_out_samples(self._ctx, n)), 0)
        out = np.empty(cap, dtype=np.float32)
        dst = (_P * 1)(out.ctypes.data)
        src = None if pcm is None else (_P * 1)(pcm.ctypes.data)
        got = self._lib.swr_convert(self._ctx, dst, cap, src, n)
        if got < 0:
            raise RuntimeError(f"libswresample failed (error {got})")
        return out[:got]

    def __del__(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.swr_free(ctypes.byref(self._ctx))
