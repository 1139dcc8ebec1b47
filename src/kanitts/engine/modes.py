"""Performance modes: named presets of engine arguments (vLLM's names), overridable one by one.

Both backends read the sizes (``max_num_seqs``, ``max_model_len``, ``max_num_batched_tokens``,
``stream_interval``); the KV cache bytes, memory fraction and quantization are vLLM's. What a
mode sets for the native engine alone is :data:`NATIVE_MODE_OPTIONS` and :data:`NATIVE_MODE_ENV`.

=================  =====================================================================
mode               intent
=================  =====================================================================
low_vram           default: one model (+ codec) in <= 2 GB on any GPU. The KV cache is a
                   fixed byte size (``kv_cache_memory_bytes``), never a fraction of the
                   card (0.15 of an 80 GB card is 12 GB); 4 concurrent sequences.
balanced           64 concurrent sequences, 2 GiB of KV cache.
high_performance   maximum concurrency: 512 sequences, 16 GiB of KV cache.
fp8                ``balanced`` with FP8 weights (Hopper / Ada, compute capability >= 8.9).
bnb_4bit           ``low_vram`` with bitsandbytes 4-bit weights (needs ``bitsandbytes``).
=================  =====================================================================

KV cache per token of the 350M LFM2 backbone: 6 attention layers x K,V x 8 heads x 64 dims x
2 bytes = 12 KiB, so 2,048 tokens x 4 sequences = 96 MiB.

With ``kv_cache_memory_bytes`` set, vLLM 0.26 uses ``gpu_memory_utilization`` only for a
start-up check (free memory >= utilization x card, ``vllm/v1/worker/utils.py``
``request_memory``); its default 0.92 fails whenever the codec (same GPU, loaded first by the
server) already holds memory -- seen on the H100: high_performance refused to start with
52 of 79 GiB free. Each preset therefore sets a small utilization that is only that check.
"""

from __future__ import annotations

from typing import Any

MiB = 1 << 20
GiB = 1 << 30

#: prompt (<= ~300 tokens of text) + 1,200 generated tokens (the default max_tokens) + margin
DEFAULT_MAX_MODEL_LEN = 2048

_COMMON: dict[str, Any] = {
    "dtype": "bfloat16",
    "max_model_len": DEFAULT_MAX_MODEL_LEN,
    # prompts are short and unique; LFM2 is a hybrid (conv + attention) model
    "enable_prefix_caching": False,
    # One streamed output per codec frame (4 tokens) instead of one per token: the server's
    # event loop wakes each stream 4x less often (the first token still comes at once).
    "stream_interval": 4,
}

MODES: dict[str, dict[str, Any]] = {
    "low_vram": {
        **_COMMON,
        "max_num_seqs": 4,
        "max_num_batched_tokens": 1024,
        "kv_cache_memory_bytes": 128 * MiB,
        "gpu_memory_utilization": 0.05,  # start-up check only (see above)
    },
    "balanced": {
        **_COMMON,
        "max_num_seqs": 64,
        "max_num_batched_tokens": 4096,
        "kv_cache_memory_bytes": 2 * GiB,
        "gpu_memory_utilization": 0.1,
    },
    "high_performance": {
        **_COMMON,
        "max_num_seqs": 512,
        "max_num_batched_tokens": 8192,
        # 512 x 2,048 tokens x 12 KiB = 12 GiB (+ conv state): a fixed size, not 0.85 of the
        # card, so the batched codec (same GPU) keeps its memory. Measured on the H100: at
        # util 0.85 vLLM held 68 GB and the codec ran out of memory at 256 streams.
        "kv_cache_memory_bytes": 16 * GiB,
        # start-up check only; 0.5 measured on the H100 with the server's codec loaded first
        "gpu_memory_utilization": 0.3,
    },
    "fp8": {
        **_COMMON,
        "max_num_seqs": 64,
        "max_num_batched_tokens": 4096,
        "kv_cache_memory_bytes": 2 * GiB,
        "gpu_memory_utilization": 0.1,
        "quantization": "fp8",
    },
    "bnb_4bit": {
        **_COMMON,
        "max_num_seqs": 4,
        "max_num_batched_tokens": 1024,
        "kv_cache_memory_bytes": 128 * MiB,
        "gpu_memory_utilization": 0.05,
        "quantization": "bitsandbytes",
    },
}

#: Native-engine options a mode sets (vLLM never sees these): ``low_vram``'s decode graphs
#: attend over all 2,048 positions (``single_span``; steps without graphs keep their spans):
#: 3 graphs instead of 12, 12 MiB less on the H200 (whole-GPU peak 1,811 -> 1,799 MiB; its 4
#: streams of 200 tokens took 0.35 s instead of 0.32: each step reads the 4 slots' whole KV
#: cache, 96 MiB, beside 705 MiB of weights).
NATIVE_MODE_OPTIONS: dict[str, dict[str, Any]] = {
    "low_vram": {"single_span": True},
}

#: Process environment a mode sets for the native engine's process, before CUDA starts, each
#: variable only where the operator has not set it (vLLM never sees these):
#: ``low_vram``: the caching allocator's expandable segments (less memory stranded in
#: half-used segments) and cuBLAS workspaces of 128 KiB (``:16:8``) instead of torch's 32 MiB
#: per thread x stream that runs a matmul on Hopper (its decode steps are <= 4 rows).
#: Measured on the H200 with ``scripts/lowvram_probe.py`` (BENCHMARKS.md, run 5): whole-GPU
#: peak 2,067 -> 1,909 MiB together with an allocator cache flush after start-up, streaming
#: as fast (run 5's first probe; the same server with smaller prefill graphs: 1,811).
NATIVE_MODE_ENV: dict[str, dict[str, str]] = {
    "low_vram": {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "CUBLAS_WORKSPACE_CONFIG": ":16:8"},
}

#: The preset names, in the order the docs and ``--help`` list them.
MODE_NAMES: tuple[str, ...] = tuple(MODES)
DEFAULT_MODE = "low_vram"


def engine_args_for(mode: str, model: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """vLLM engine arguments for ``mode``; ``overrides`` win key by key (None values ignored).

    ``gpu_memory_utilization`` given as an override while the mode sets
    ``kv_cache_memory_bytes`` drops the latter (vLLM ignores the fraction otherwise): the
    fraction then sizes the KV cache, as in vLLM.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    args: dict[str, Any] = {"model": model, **MODES[mode]}
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "gpu_memory_utilization" in ov and "kv_cache_memory_bytes" not in ov:
        args.pop("kv_cache_memory_bytes", None)
    args.update(ov)
    return args


def seed_baseline_args(model: str) -> dict[str, Any]:
    """The seed's engine configuration (one sequence at a time, 15% of the card)."""
    return {
        "model": model,
        "dtype": "bfloat16",
        "max_num_seqs": 1,
        "gpu_memory_utilization": 0.15,
        "max_model_len": 512,
        "max_num_batched_tokens": 512,
    }
