"""The streaming resampler (kanitts.audio.resample): chunked equals one-shot, rates and pitch kept."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kanitts.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, Resampler, resample_all, resample_stream

SR = 22050
LSB = 1 / 32768


def _signal(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum)) * rate / x.size


@pytest.mark.parametrize("out_rate", [8000, 16000, 24000, 44100, 48000])
def test_chunked_equals_one_shot_within_one_lsb(out_rate):
    x = _signal()
    whole = resample_all(x, SR, out_rate)
    rng = np.random.default_rng(out_rate)
    r = Resampler(SR, out_rate)
    parts, i = [], 0
    while i < x.size:  # chunk sizes from 1 sample to ~2 codec frames, as the codec emits them
        n = int(rng.integers(1, 3600))
        parts.append(r.process(x[i:i + n]))
        i += n
    parts.append(r.flush())
    chunked = np.concatenate(parts)
    assert chunked.size == whole.size == round(x.size * out_rate / SR)
    assert np.abs(chunked - whole).max() <= LSB


def test_pitch_and_duration_kept():
    x = _signal(seed=1)
    y = resample_all(x, SR, 24000)
    assert y.dtype == np.float32
    assert abs(_peak_hz(y, 24000) - 440) < 2
    assert abs(y.size / 24000 - x.size / SR) < 1e-3


def test_same_rate_is_exact_passthrough():
    x = _signal(0.1)
    r = Resampler(SR, SR)
    assert r.passthrough and r.process(x) is x and r.flush().size == 0


def test_stream_matches_one_shot():
    x = _signal(1.0, seed=2)

    async def chunks():
        for i in range(0, x.size, 1764):
            yield x[i:i + 1764]

    async def run() -> np.ndarray:
        return np.concatenate([c async for c in resample_stream(chunks(), SR, 24000)])

    np.testing.assert_allclose(asyncio.run(run()), resample_all(x, SR, 24000), atol=LSB)


@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE - 1, MAX_SAMPLE_RATE + 1, 0])
def test_rates_outside_the_range_are_refused(rate):
    with pytest.raises(ValueError, match="sample rate"):
        Resampler(SR, rate)
