"""Which torch device and dtype a ``device`` / ``dtype`` setting means on this machine."""

from __future__ import annotations

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
