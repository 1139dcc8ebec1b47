"""``--backend native`` end to end through HTTP on the tiny checkpoint (CPU), ``auto``, and the
retired ``torch`` name."""

from __future__ import annotations

import logging

import httpx
import numpy as np

from kanitts.tokens import SAMPLES_PER_FRAME

def lsb_diff(a: bytes, b: bytes) -> int:
    """Largest sample difference of two int16 PCM bodies of equal length."""
    assert len(a) == len(b)
    return int(np.abs(np.frombuffer(a, "<i2").astype(np.int32) - np.frombuffer(b, "<i2")).max())


BODY = {"input": "Hello there.", "max_tokens": 202, "min_tokens": 202, "seed": 1, "response_format": "pcm",
        "sample_rate": 22050}  # the model's rate: 1,764 samples per frame


def test_auto_resolves_to_native_except_for_vllm_only_features(tiny_model, tiny_codec):
    from _liveserver import tiny_settings

    from kanitts.engine.factory import backend_kind
    from kanitts.models import build_backend

    s = tiny_settings(tiny_model, tiny_codec, engine={"backend": "auto"})
    assert backend_kind(s) == "native"
    b = build_backend(s, tiny_model)
    assert b.name == "native" and b.max_num_seqs == 4 and b.max_model_len == 2048  # the low_vram preset
    assert backend_kind(tiny_settings(tiny_model, tiny_codec, engine={"backend": "auto", "mode": "fp8"})) == "vllm"
    eager = build_backend(tiny_settings(tiny_model, tiny_codec, engine={"backend": "native", "enforce_eager": True,
                                                                         "max_num_seqs": 9}), tiny_model)
    assert eager.cuda_graphs is False and eager.max_num_seqs == 9


def test_the_retired_torch_backend_name_means_native_with_one_warning(tiny_model, tiny_codec, caplog):
    from _liveserver import tiny_settings

    from kanitts.cli import build_parser
    from kanitts.engine import BACKEND_NAMES, DEPRECATED_BACKENDS
    from kanitts.engine.factory import HONOURED_ENGINE_OPTIONS, backend_kind

    assert DEPRECATED_BACKENDS == {"torch": "native"} and "torch" not in BACKEND_NAMES
    assert set(HONOURED_ENGINE_OPTIONS) == {"native", "vllm"}
    with caplog.at_level(logging.WARNING, logger="kanitts"):
        s = tiny_settings(tiny_model, tiny_codec, engine={"backend": "torch"})
    assert s.engine.backend == "native" and backend_kind(s) == "native"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "deprecated" in warning and "'native'" in warning
    assert build_parser().parse_args(["serve", "--backend", "torch"]).backend == "torch"  # old scripts still parse


def test_serve_backend_native_speaks_over_http(tiny_model, tiny_codec):
    from _liveserver import serve_cli

    proc, url = serve_cli("--model", tiny_model, "--codec", tiny_codec, "--backend", "native", "--device", "cpu")
    try:
        health = httpx.get(url + "/health", timeout=10).json()
        assert health["models"]["en"]["backend"] == "native"
        one = httpx.post(url + "/v1/audio/speech", json=BODY, timeout=120)
        assert one.status_code == 200, one.text
        assert len(one.content) == 50 * SAMPLES_PER_FRAME * 2  # 202 tokens = 50 whole frames of int16
        again = httpx.post(url + "/v1/audio/speech", json=BODY, timeout=120)
        assert lsb_diff(again.content, one.content) <= 1  # same seed, same tokens (the codec may differ by 1 LSB)
        with httpx.stream("POST", url + "/v1/audio/speech", json={**BODY, "stream_format": "audio"},
                          timeout=120) as r:
            streamed = b"".join(r.iter_bytes())
        assert lsb_diff(streamed, one.content) <= 1
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "Traceback" not in out
