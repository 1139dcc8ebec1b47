"""libswresample called directly (kanitts.audio.swr) gives PyAV's AudioResampler's samples bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from kanitts.audio import resample
from kanitts.audio.swr import SwrStream, load_swresample

SR = 22050


def _run(r: resample.Resampler, x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    parts, i = [], 0
    for n in sizes:
        parts.append(r.process(x[i:i + n]))
        i += int(n)
    parts.append(r.flush())
    return np.concatenate(parts)


def test_the_library_loads():
    # PyAV's wheels bundle libswresample: the direct path is what the server uses.
    assert load_swresample() is not None
    assert isinstance(resample.Resampler(SR, 24000)._direct, SwrStream)


@pytest.mark.parametrize("out_rate", [8000, 16000, 24000, 44100, 48000, 47999])
def test_direct_equals_pyav_graph_bit_for_bit(out_rate, monkeypatch):
    rng = np.random.default_rng(out_rate)
    x = (rng.standard_normal(3 * SR) * 0.3).astype(np.float32)
    sizes = rng.integers(1, 15000, 40)
    sizes = sizes[np.cumsum(sizes) <= x.size]
    direct = _run(resample.Resampler(SR, out_rate), x, sizes)
    monkeypatch.setattr(resample, "load_swresample", lambda: None)
    graph_r = resample.Resampler(SR, out_rate)
    assert graph_r._direct is None and not graph_r.passthrough
    graph = _run(graph_r, x, sizes)
    assert direct.dtype == graph.dtype == np.float32
    assert direct.tobytes() == graph.tobytes()


def test_empty_chunks_and_flush_without_input():
    r = resample.Resampler(SR, 24000)
    assert r.process(np.zeros(0, np.float32)).size == 0
    assert r.flush().size == 0
