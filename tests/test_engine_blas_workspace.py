"""The low_vram preset's cuBLAS workspace size: what sets it, what leaves it alone (CPU: the
torch setters are stood in for; the memory it saves is measured by scripts/lowvram_probe.py)."""

from __future__ import annotations

import pytest
import torch

from kanitts.config import Settings
from kanitts.engine import device
from kanitts.engine.factory import build_local_backend
from kanitts.engine.modes import MODES, NATIVE_MODE_SETTINGS


@pytest.fixture
def setters(monkeypatch):
    calls: list[tuple[str, int]] = []
    for name in ("cublas_workspace_size", "cublaslt_workspace_size"):
        monkeypatch.setattr(torch.backends.cuda, name, lambda n=None, _name=name: calls.append((_name, n)))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    return calls


def test_the_size_is_set_for_cublas_and_cublaslt(setters):
    assert device.limit_blas_workspace(4 << 20) is True
    assert setters == [("cublas_workspace_size", 4 << 20), ("cublaslt_workspace_size", 4 << 20)]
    with pytest.raises(ValueError):
        device.limit_blas_workspace(-1)


def test_an_explicit_cublas_workspace_config_wins(setters, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert device.limit_blas_workspace(4 << 20) is False
    assert setters == []


def test_a_torch_without_the_api_leaves_the_default(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.delattr(torch.backends.cuda, "cublas_workspace_size", raising=False)
    assert device.limit_blas_workspace(4 << 20) is False


def test_only_low_vram_sets_a_size_and_vllm_never_sees_it(tiny_model):
    assert set(NATIVE_MODE_SETTINGS) <= set(MODES)
    for mode in MODES:
        assert "blas_workspace_bytes" not in MODES[mode]  # the vLLM arguments
    sizes = {}
    for mode in ("low_vram", "balanced", "high_performance"):
        settings = Settings(engine={"mode": mode, "backend": "native", "device": "cpu"})
        sizes[mode] = build_local_backend(settings, tiny_model).blas_workspace_bytes  # type: ignore[attr-defined]
    assert sizes == {"low_vram": 4 << 20, "balanced": None, "high_performance": None}


async def test_a_cpu_engine_leaves_cublas_alone(tiny_model, setters):
    settings = Settings(engine={"mode": "low_vram", "backend": "native", "device": "cpu", "warmup": False})
    backend = build_local_backend(settings, tiny_model)
    await backend.start()
    await backend.close()
    assert setters == []
