"""Which torch device and dtype a ``device`` / ``dtype`` setting means on this machine, and
the process-wide cuBLAS workspace size."""

from __future__ import annotations

import os

import torch


def pick_device(device: str = "auto") -> torch.device:
    """``device`` as a :class:`torch.device`; ``auto`` = CUDA, else Apple MPS, else the CPU.
    Raises RuntimeError for a string torch does not parse (``"gpu"``)."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``dtype`` (``float32``, ``bfloat16``, ``float16``) as a torch dtype; ``auto`` = bfloat16
    on CUDA, else float32."""
    if dtype != "auto":
        return getattr(torch, dtype)
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def limit_blas_workspace(nbytes: int) -> bool:
    """Make the cuBLAS workspaces created from now on ``nbytes`` each (cuBLASLt's too, where
    torch keeps it apart) instead of torch's default: 32 MiB on Hopper for every cuBLAS
    handle (one per thread) and stream that runs a matmul, held in the caching allocator
    (inside a CUDA graph's pool for a stream captured) for the life of the process.
    Process-wide; call on CUDA before the first matmul. An explicit
    ``CUBLAS_WORKSPACE_CONFIG`` is the operator's choice and is left alone. Returns whether
    the size was set: False with that variable set, or where this torch has no
    ``torch.backends.cuda.cublas_workspace_size`` (or no CUDA). Raises ``ValueError`` for
    ``nbytes < 0``."""
    if nbytes < 0:
        raise ValueError("a workspace size must be >= 0 bytes")
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        return False
    setters = [getattr(torch.backends.cuda, name, None) for name in ("cublas_workspace_size", "cublaslt_workspace_size")]
    if setters[0] is None:
        return False
    try:
        for setter in setters:
            if setter is not None:
                setter(int(nbytes))
    except (AttributeError, RuntimeError):  # a torch built without CUDA
        return False
    return True
