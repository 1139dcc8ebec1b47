"""kanitts.audio.tempo: speed without pitch change, streaming-safe."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kanitts.audio import TempoChanger, atempo_factors

SR = 22050
CHUNKS = [1, 3, 8, 2, 5, 1, 4, 10]  # in 1764-sample frames: 34 frames = 2.72 s


def sine(n: int, freq: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def run_chunked(tc: TempoChanger, x: np.ndarray) -> tuple[np.ndarray, list[int]]:
    outs, pos = [], 0
    for k in CHUNKS:
        outs.append(tc.process(x[pos : pos + 1764 * k]))
        pos += 1764 * k
    assert pos == x.size
    outs.append(tc.flush())
    assert all(o.dtype == np.float32 and o.ndim == 1 for o in outs)
    return np.concatenate(outs), [o.size for o in outs]


def peak_hz(y: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.argmax(spectrum) * SR / y.size)


N = 1764 * sum(CHUNKS)


@pytest.mark.parametrize("speed", [0.25, 0.5, 0.8, 1.25, 2.0, 3.0, 4.0])
def test_length_and_pitch(speed):
    y, sizes = run_chunked(TempoChanger(speed, SR), sine(N))
    assert y.size == pytest.approx(N / speed, rel=0.03), (speed, y.size, N / speed)
    assert peak_hz(y) == pytest.approx(440.0, abs=3.0)  # pitch unchanged
    assert np.abs(y).max() < 0.6  # no blow-up from overlap-add
    # Streaming: output comes out with every chunk, not all at flush.
    assert sizes[-1] < 0.1 * y.size
    # What is held back at the end is the filter window (~60 ms of input per atempo
    # stage): at most ~120 ms of output audio (more when slowing down).
    held = N / speed - sum(sizes[:-1])
    assert held <= 0.12 * SR * max(1.0, 1.0 / speed), (speed, held)


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_pitch_of_other_tone(speed):
    y, _ = run_chunked(TempoChanger(speed, SR), sine(N, 1000.0))
    assert peak_hz(y) == pytest.approx(1000.0, abs=3.0)


def test_speed_one_is_passthrough():
    x = sine(N)
    tc = TempoChanger(1.0, SR)
    assert tc.passthrough
    y, sizes = run_chunked(tc, x)
    np.testing.assert_array_equal(y, x)
    assert sizes[-1] == 0


@pytest.mark.parametrize("bad", [0.0, 0.2, 0.249, 4.01, 10.0, -1.0, float("nan"), float("inf"), "fast"])
def test_out_of_range_raises(bad):
    with pytest.raises(ValueError):
        TempoChanger(bad, SR)  # type: ignore[arg-type]


def test_atempo_factor_chain():
    assert atempo_factors(0.25) == [0.5, 0.5]
    assert atempo_factors(4.0) == [2.0, 2.0]
    assert atempo_factors(3.0) == [2.0, 1.5]
    assert atempo_factors(1.5) == [1.5]
    for s in (0.25, 0.3, 0.5, 0.7, 1.0, 1.9, 2.5, 4.0):
        f = atempo_factors(s)
        assert all(0.5 <= v <= 2.0 for v in f)
        assert math.prod(f) == pytest.approx(s)


def test_empty_chunks_and_flush_once():
    tc = TempoChanger(1.5, SR)
    assert tc.process(np.zeros(0, np.float32)).size == 0
    tc.process(sine(5000))
    tc.flush()
    assert tc.flush().size == 0
    with pytest.raises(RuntimeError):
        tc.process(sine(10))
