"""Build the generation backend of one engine process (PyTorch or vLLM) from settings.

This is the engine layer's own factory: a replica process
(:mod:`kanitts.engine.replica_worker`) calls :func:`build_local_backend` to build the one
backend it serves, and the assembly layer (:func:`kanitts.models.build_backend`) decides
whether a model gets one such backend in-process or a :class:`~kanitts.engine.replicas.ReplicaPool`
of them. Nothing here imports the upper layers.
"""

from __future__ import annotations

import importlib.util

from kanitts.config import Settings
from kanitts.engine.base import GenerationBackend


def vllm_usable() -> bool:
    """Whether vLLM is installed and a CUDA device is visible."""
    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def backend_kind(settings: Settings) -> str:
    """``vllm``, ``native`` or ``torch``: what ``engine.backend`` resolves to on this machine."""
    kind = settings.engine.backend
    if kind == "auto":
        kind = "vllm" if vllm_usable() else "torch"
    return kind


def build_local_backend(settings: Settings, model_path: str, *, share: float = 1.0) -> GenerationBackend:
    """The configured backend for one model in this process, ignoring data parallelism
    (``share``: its fraction of GPU memory when several models share a card)."""
    kind = backend_kind(settings)
    if kind == "vllm":
        from kanitts.engine.modes import engine_args_for
        from kanitts.engine.vllm_backend import VllmBackend

        args = engine_args_for(settings.engine.mode, model_path, settings.engine.vllm_overrides())
        if share < 1.0:
            if "gpu_memory_utilization" in args:
                args["gpu_memory_utilization"] = round(args["gpu_memory_utilization"] * share, 4)
            if "kv_cache_memory_bytes" in args and settings.engine.kv_cache_memory_bytes is None:
                args["kv_cache_memory_bytes"] = int(args["kv_cache_memory_bytes"] * share)
        return VllmBackend(model_path, args, warmup=settings.engine.warmup)
    if kind == "native":
        from kanitts.engine.native.backend import NativeBackend

        e = settings.engine
        kw = {k: v for k, v in (("max_num_seqs", e.max_num_seqs), ("max_model_len", e.max_model_len),
                                ("stream_interval", e.stream_interval)) if v is not None}
        return NativeBackend(model_path, device=e.device, dtype=e.dtype, warmup=e.warmup, **kw)
    from kanitts.engine.torch_backend import TorchBackend

    return TorchBackend(model_path, device=settings.engine.device, dtype=settings.engine.dtype)
