"""Build the generation backend of one engine process (native or vLLM) from settings.

This is the engine layer's own factory: a replica process
(:mod:`kanitts.engine.replica_worker`) calls :func:`build_local_backend` to build the one
backend it serves, and the assembly layer (:func:`kanitts.models.build_backend`) decides
whether a model gets one such backend in-process or a :class:`~kanitts.engine.replicas.ReplicaPool`
of them. Nothing here imports the upper layers.
"""

from __future__ import annotations

from typing import Any

from kanitts.config import Settings
from kanitts.engine.base import GenerationBackend

#: engine.* options each backend honours (the others it ignores; start-up warns about any set
#: away from its default, :func:`kanitts.preflight.ignored_engine_options`). vLLM takes its
#: dtype from the mode preset; the native engine takes the mode's sizes but allocates its own
#: memory and has no quantization or tensor parallelism.
HONOURED_ENGINE_OPTIONS: dict[str, frozenset[str]] = {
    "vllm": frozenset({
        "mode", "device", "gpu_memory_utilization", "kv_cache_memory_bytes", "max_model_len",
        "max_num_seqs", "max_num_batched_tokens", "enforce_eager", "stream_interval", "quantization",
        "tensor_parallel_size", "data_parallel_size", "gpus", "warmup",
    }),
    "native": frozenset({
        "mode", "device", "dtype", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
        "enforce_eager", "stream_interval", "data_parallel_size", "gpus", "warmup", "compile",
    }),
}


def backend_kind(settings: Settings) -> str:
    """``native`` or ``vllm``: what ``engine.backend`` resolves to. ``auto`` is the native
    engine, except for what only vLLM offers (quantized modes, tensor parallel). Retired
    names (:data:`kanitts.engine.DEPRECATED_BACKENDS`) never get here: loading the settings
    maps them."""
    kind = settings.engine.backend
    if kind == "auto":
        from kanitts.engine.modes import engine_args_for

        args = engine_args_for(settings.engine.mode, "", settings.engine.vllm_overrides())
        kind = "vllm" if args.get("quantization") or int(args.get("tensor_parallel_size", 1)) > 1 else "native"
    return kind


def mode_values(settings: Settings) -> dict[str, Any]:
    """``engine.*`` keys left unset (None) that the mode's preset
    (:data:`kanitts.engine.modes.MODES`) fills, for the backend ``settings`` resolve to: key
    -> the preset's value, only keys that backend honours (:data:`HONOURED_ENGINE_OPTIONS`).
    What ``kanitts config show`` prints for them."""
    from kanitts.engine.modes import MODES

    honoured = HONOURED_ENGINE_OPTIONS[backend_kind(settings)]
    preset = MODES[settings.engine.mode]
    return {k: preset[k] for k in sorted(honoured) if k in preset and getattr(settings.engine, k, 0) is None}


def process_env(settings: Settings) -> dict[str, str]:
    """The environment a process serving with ``settings`` should have before CUDA starts
    (:data:`kanitts.engine.modes.NATIVE_MODE_ENV` for the native engine on CUDA; nothing for
    vLLM or another device)."""
    from kanitts.engine.device import pick_device

    if backend_kind(settings) != "native" or pick_device(settings.engine.device).type != "cuda":
        return {}
    from kanitts.engine.modes import NATIVE_MODE_ENV

    return dict(NATIVE_MODE_ENV.get(settings.engine.mode, {}))


def apply_process_env(settings: Settings) -> dict[str, str]:
    """Set :func:`process_env`'s variables in ``os.environ`` where they are unset (an
    operator's own value wins); returns the ones set. Call before the process first uses
    CUDA: the allocator and cuBLAS read them once."""
    import os

    applied = {k: v for k, v in process_env(settings).items() if k not in os.environ}
    os.environ.update(applied)
    return applied


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
    # native: the only other kind
    from kanitts.engine.modes import NATIVE_MODE_OPTIONS, engine_args_for
    from kanitts.engine.native.backend import NativeBackend
    from kanitts.tokens import NUM_CODEBOOKS

    args = engine_args_for(settings.engine.mode, model_path, settings.engine.vllm_overrides())
    return NativeBackend(
        model_path, device=settings.engine.device, dtype=settings.engine.dtype,
        max_num_seqs=int(args["max_num_seqs"]), max_model_len=int(args["max_model_len"]),
        max_prefill_tokens=int(args.get("max_num_batched_tokens", args["max_model_len"])),
        stream_interval=int(args.get("stream_interval", 4)),
        # groups grow up to one codec chunk: more tokens at once would buy no latency
        max_stream_interval=NUM_CODEBOOKS * settings.codec.chunk_frames,
        cuda_graphs=not args.get("enforce_eager", False), warmup=settings.engine.warmup,
        compile=settings.engine.compile,
        single_span=bool(NATIVE_MODE_OPTIONS.get(settings.engine.mode, {}).get("single_span", False)),
    )
