"""Shared by the speaker-encoder tests and ``scripts/make_speaker_fixture.py``."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import torch

#: Reference package pinned for parity (installed with --no-deps; see README).
REFERENCE_PACKAGE = "kani-tts-2==0.0.5"


def reference_embedder_module() -> ModuleType | None:
    """``kani_tts/speaker_embedder.py`` of the installed reference, or None when absent.

    Loaded from its file: the package's ``__init__`` imports NeMo, which the reference
    encoder itself does not need (it uses only torch and transformers)."""
    spec = importlib.util.find_spec("kani_tts")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = f"{list(spec.submodule_search_locations)[0]}/speaker_embedder.py"
    module_spec = importlib.util.spec_from_file_location("kani_tts_reference_speaker", path)
    if module_spec is None or module_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def parity_inputs(seed: int = 1234) -> torch.Tensor:
    """``[3, 51200]`` float32 16 kHz waveforms (3.2 s): noise, a chirp with noise, and a
    quiet harmonic tone, regenerated identically from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    n = 51200
    t = torch.arange(n, dtype=torch.float32) / 16000
    noise = torch.randn(n, generator=gen)
    chirp = 0.5 * torch.sin(2 * torch.pi * (100 + 400 * t) * t) + 0.05 * torch.randn(n, generator=gen)
    tone = 0.01 * (torch.sin(2 * torch.pi * 220 * t) + 0.5 * torch.sin(2 * torch.pi * 660 * t))
    return torch.stack([noise, chirp, tone])
