"""What a mode sets for the native engine alone: its process environment before CUDA starts
(``kanitts.engine.modes.NATIVE_MODE_ENV``: which settings get it, that an operator's own
value wins, that the server applies it when it starts; CPU: CUDA's presence is stood in
for) and its options (``NATIVE_MODE_OPTIONS``: low_vram's single attention span). The
memory they save is measured by scripts/lowvram_probe.py on the device."""

from __future__ import annotations

import os

import pytest
import torch

from kanitts.config import Settings
from kanitts.engine.base import SamplingParams
from kanitts.engine.factory import apply_process_env, process_env
from kanitts.engine.modes import MODES, NATIVE_MODE_ENV

KEYS = ("PYTORCH_CUDA_ALLOC_CONF", "CUBLAS_WORKSPACE_CONFIG")


@pytest.fixture
def cuda_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    saved = {k: os.environ.pop(k) for k in KEYS if k in os.environ}
    yield
    for k in KEYS:
        os.environ.pop(k, None)
    os.environ.update(saved)


def test_only_low_vram_on_the_native_engine_on_cuda_gets_an_environment(cuda_present):
    assert set(NATIVE_MODE_ENV) <= set(MODES)
    env = {m: process_env(Settings(engine={"mode": m, "backend": "native"})) for m in MODES if m not in ("fp8", "bnb_4bit")}
    assert env["low_vram"] == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "CUBLAS_WORKSPACE_CONFIG": ":16:8"}
    assert env["balanced"] == {} and env["high_performance"] == {}
    assert process_env(Settings(engine={"mode": "low_vram", "backend": "vllm"})) == {}
    assert process_env(Settings(engine={"mode": "low_vram", "backend": "native", "device": "cpu"})) == {}


def test_an_operators_own_value_wins(cuda_present):
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    applied = apply_process_env(Settings(engine={"mode": "low_vram", "backend": "native"}))
    assert applied == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


async def test_the_server_applies_it_when_it_starts(cuda_present, tiny_model, tiny_codec, monkeypatch):
    from _liveserver import tiny_settings

    from kanitts.service import TTSService

    svc = TTSService(tiny_settings(tiny_model, tiny_codec, engine={"device": "auto"},
                                   codec={"device": "cpu", "dtype": "float32"}))
    seen: dict[str, str | None] = {}

    async def load_codec_stub() -> None:  # stop after the point that must come before CUDA
        seen.update({k: os.environ.get(k) for k in KEYS})
        raise RuntimeError("stop here")

    monkeypatch.setattr(svc, "_load_codec", load_codec_stub)
    with pytest.raises(RuntimeError, match="stop here"):
        await svc.start()
    assert seen == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "CUBLAS_WORKSPACE_CONFIG": ":16:8"}


@pytest.mark.parametrize("mode, graphed, spans", [("low_vram", True, [512]), ("low_vram", False, [256, 512]),
                                                  ("balanced", True, [256, 512])])
async def test_low_vram_graphs_decode_over_one_attention_span(tiny_model, monkeypatch, mode, graphed, spans):
    """One span where the decode step is graphed (CUDA: stood in for by reporting the graphs
    as on, while the step itself runs eagerly on the CPU); spans kept where it is not."""
    from kanitts.engine.factory import build_local_backend
    from kanitts.engine.modes import NATIVE_MODE_OPTIONS
    from kanitts.engine.native import backend as native_backend

    assert set(NATIVE_MODE_OPTIONS) <= set(MODES)
    settings = Settings(engine={"mode": mode, "backend": "native", "device": "cpu", "warmup": False,
                                "max_num_seqs": 2, "max_model_len": 512})
    backend = build_local_backend(settings, tiny_model)
    if graphed:  # what _build sees on CUDA with graphs on; capture itself stays a no-op on the CPU
        monkeypatch.setattr(backend, "device", torch.device("cuda"), raising=True)
        real_load = native_backend.load_native_model
        monkeypatch.setattr(native_backend, "load_native_model",
                            lambda model_id, device, dtype: real_load(model_id, torch.device("cpu"), dtype))
    await backend.start()
    try:
        assert backend.scheduler.step.spans == spans  # type: ignore[attr-defined]
        if not graphed:
            got = [t async for ids in backend.stream([1, 2, 3], SamplingParams(seed=0, max_tokens=8, min_tokens=8))
                   for t in ids]
            assert len(got) == 8
    finally:
        await backend.close()
