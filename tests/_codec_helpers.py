"""Shared helpers of the streaming-codec tests: random codes and chunked streaming."""

from __future__ import annotations

import torch

from kanitts.codec.nanocodec import NanoCodec


def random_codes(codec: NanoCodec, b: int, t: int, seed: int) -> torch.Tensor:
    """``[b, num_codebooks, t]`` valid codes, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, codec.codebook_size, (b, codec.num_codebooks, t), generator=g)


def stream_chunks(pool, slots: list[int], codes: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Reset ``slots``, then decode ``codes[k, G, T]`` in steps of ``chunks`` frames (each
    step's frames handed over as ``[k, n, G]``, the layout ``step_slots`` takes); the audio joined."""
    pool.reset(slots)
    outs, t = [], 0
    for n in chunks:
        outs.append(pool.step_slots(slots, codes[..., t : t + n].transpose(1, 2)))
        t += n
    assert t == codes.shape[-1], "chunks must cover every frame"
    return torch.cat(outs, -1)
