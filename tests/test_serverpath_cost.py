"""The server path's per-chunk shortcuts give exactly what the plain forms gave."""

from __future__ import annotations

import numpy as np

from kanitts.audio.encoders import to_int16
from kanitts.synthesis import _trailing_silence


def _to_int16_plain(pcm: np.ndarray) -> np.ndarray:
    a = np.asarray(pcm, dtype=np.float32).reshape(-1)
    out = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(out, -1.0, 1.0, out=out)
    out *= 32767.0
    np.rint(out, out=out)
    return out.astype("<i2")


def _trailing_silence_plain(pcm: np.ndarray, before: int, threshold: float = 1e-3) -> int:
    if pcm.size == 0:
        return before
    loud = np.flatnonzero(np.abs(pcm) > threshold)
    return before + pcm.size if loud.size == 0 else pcm.size - 1 - int(loud[-1])


def test_to_int16_matches_the_plain_form_bit_for_bit():
    rng = np.random.default_rng(0)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.5 / 32767, 1.5 / 32767, 1.0, -1.0], np.float32)
    for trial in range(200):
        x = (rng.standard_normal(int(rng.integers(0, 3000))) * rng.choice([0.1, 1.0, 3.0])).astype(np.float32)
        if x.size and trial % 2:
            x[rng.integers(0, x.size, 4)] = rng.choice(specials, 4)
        for pcm in (x, x.astype(np.float64)):
            assert to_int16(pcm).tobytes() == _to_int16_plain(pcm).tobytes()


def test_trailing_silence_matches_the_plain_form():
    rng = np.random.default_rng(1)
    for trial in range(300):
        n = int(rng.integers(0, 2000))
        x = (rng.standard_normal(n) * 0.1).astype(np.float32)
        quiet_from = int(rng.integers(0, n + 1))
        x[quiet_from:] *= 1e-4  # a silent tail of any length, inside or beyond the last 256
        if trial % 5 == 0 and n:
            x[int(rng.integers(0, n))] = np.nan
        before = int(rng.integers(0, 100))
        assert _trailing_silence(x, before) == _trailing_silence_plain(x, before)
