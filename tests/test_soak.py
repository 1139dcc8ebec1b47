"""Short soak (CI): streams opened and abandoned at random; nothing leaks (issue 8).

The long run is ``python scripts/soak.py --minutes 3`` (figures in TESTING.md);
``KANITTS_SOAK_SECONDS`` lengthens this one.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


def _soak_module():
    spec = importlib.util.spec_from_file_location("kanitts_soak", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_valid_audio_checks():
    soak = _soak_module()
    import struct

    wav = b"RIFF" + struct.pack("<I", 40) + b"WAVEfmt " + b"\0" * 20 + b"data" + struct.pack("<I", 4) + b"\0" * 4
    assert soak.valid_audio("wav", wav) is None
    assert soak.valid_audio("wav", wav[:-1]) is not None
    assert soak.valid_audio("pcm", b"\0\0\0") is not None
    assert soak.valid_audio("flac", b"fLaC....") is None and soak.valid_audio("opus", b"RIFF") is not None


def test_short_soak(tiny_model, tiny_codec):
    soak = _soak_module()
    summary = soak.run_soak(
        seconds=float(os.environ.get("KANITTS_SOAK_SECONDS", "20")), concurrency=6, model=tiny_model,
        codec=tiny_codec, warmup_requests=12, max_tokens=(16, 64),
    )
    print(summary)
    assert summary["invalid_or_failed"] == 0, summary["problems"]
    assert summary["completed"] > 5 and summary["abandoned"] > 5
    assert summary["active_streams_after"] == 0 and summary["queued_after"] == 0
    assert summary["leaked_tasks"] == [] and summary["asyncio_tasks_after"] <= summary["asyncio_tasks_before"]
    assert summary["threads_after"] <= summary["threads_before"]
    assert summary["rss_growth_mib"] is None or summary["rss_growth_mib"] < 150
    assert summary["ok"]
