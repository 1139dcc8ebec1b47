"""Reference audio made on the fly, and settings serving a tiny KaniTTS-2 checkpoint with
the native engine (shared by the voices API tests)."""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import numpy as np

from _liveserver import tiny_settings

SPEECH = {"input": "Hello world.", "response_format": "pcm", "max_tokens": 42, "seed": 7}


def tone_wav(seconds: float, freq: float = 220.0, amp: float = 0.3, rate: int = 16000, seed: int = 0) -> bytes:
    """A mono 16-bit WAV: a sine of ``freq`` Hz at ``amp`` plus a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    x = amp * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def k2_settings(k2_dir: Path, voices_dir: Path, model: str | None = None, **overrides: Any) -> Any:
    """Settings serving ``model`` (default ``k2_dir/model``, made by ``make_tiny_kanitts2``)
    on CPU with the native engine, the tiny speaker encoder and a voices directory;
    ``overrides`` are merged in (nested dicts merge)."""
    voices = {"speaker_encoder": str(k2_dir / "speaker"), "directory": str(voices_dir),
              "max_seconds": 8.0, "max_upload_bytes": 400_000, **overrides.pop("voices", {})}
    engine = {"backend": "native", "max_num_seqs": 16, "max_model_len": 512, **overrides.pop("engine", {})}
    return tiny_settings(model or str(k2_dir / "model"), str(k2_dir / "codec.nemo"),
                         engine=engine, voices=voices, **overrides)
