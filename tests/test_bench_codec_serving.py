"""kanitts.bench.codec_serving runs end to end on the CPU with the tiny codec (so the GPU
measuring step the lead runs cannot rot): one RESULT line per level, figures that add up."""

from __future__ import annotations

import json
import sys

import pytest

from kanitts.bench import codec_serving


def test_tiny_levels(capsys: pytest.CaptureFixture[str]) -> None:
    interval = sys.getswitchinterval()
    try:
        rows = _main(capsys)
    finally:
        sys.setswitchinterval(interval)  # a process-wide setting: leave it as found
    for r in rows:
        assert "error" not in r, r
        assert r["audio_s_per_s"] > 0 and r["pool_audio_s_per_s"] > 0
        assert r["warmup_s"] >= 0 and r["graphs"] == 0  # no CUDA graphs on the CPU
        assert r["max_batch_frames"] == 4 and r["device"] == "cpu"
        # 5 frames a stream, first chunk 1 frame then up to 8: at least 2 steps.
        assert r["steps"] >= 2 and r["batched_calls"] >= r["steps"]
        assert r["model_call_working_set_gib"] > 0 and r["switch_interval_s"] == 0.001


def _main(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    rows = codec_serving.main(["--tiny", "--levels", "2,3", "--frames", "5", "--max-batch-frames", "4",
                               "--pool-seconds", "0", "--switch-interval", "0.001"])
    lines = [json.loads(x[len("RESULT "):]) for x in capsys.readouterr().out.splitlines() if x.startswith("RESULT ")]
    assert lines == rows and [r["level"] for r in rows] == [2, 3]
    return rows
