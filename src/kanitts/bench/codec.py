"""The codec side of the engine benchmark: a warmed :class:`~kanitts.codec.CodecWorker`
(bf16 on CUDA when it decodes, else fp32) and its throughput alone."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kanitts.bench.report import bench_line


def load_codec(codec_path: str | Path | None, max_streams: int, first_chunk_frames: int = 1,
               chunk_frames: int = 8) -> Any:
    """A CodecWorker on CUDA (bf16, falling back to fp32; CPU without CUDA) with its CUDA
    graphs captured, or None when there is no codec or torch/the codec cannot load."""
    if codec_path is None:
        return None
    try:
        import torch

        from kanitts.codec import CodecWorker, NanoCodec
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    codec = None
    for dtype in (torch.bfloat16, torch.float32):
        try:
            codec = NanoCodec.from_pretrained(codec_path, device=dev, dtype=dtype)
            codec.decode(torch.zeros(1, 4, 2, dtype=torch.long, device=dev))
            break
        except Exception:  # noqa: BLE001
            codec = None
    if codec is None:
        return None
    from kanitts.config_sections import CodecSettings

    worker = CodecWorker(codec, max_streams=max_streams, first_chunk_frames=first_chunk_frames,
                         chunk_frames=chunk_frames, max_batch_frames=CodecSettings().max_batch_frames)
    warm = getattr(worker, "warmup", None)
    if warm is not None:  # capture the batched codec's CUDA graphs before timing anything
        t0 = time.perf_counter()
        try:
            n = warm()
            bench_line("codec_warmup", graphs=n, s=round(time.perf_counter() - t0, 1))
        except Exception as e:  # noqa: BLE001
            bench_line("codec_warmup_failed", error=repr(e)[:300])
    return worker


async def codec_throughput(worker: Any, streams: int, frames: int = 125) -> float | None:
    """Codec alone: ``streams`` concurrent random-code streams of ``frames`` frames through
    the CodecWorker; audio seconds decoded per wall second (None without a worker)."""
    if worker is None:
        return None

    async def one(i: int) -> float:
        rnd = random.Random(i)

        async def fr() -> AsyncIterator[list[list[int]]]:
            for _ in range(0, frames, 4):
                yield [[rnd.randrange(4032) for _ in range(4)] for _ in range(4)]
                await asyncio.sleep(0)

        n = 0
        async for pcm in worker.decode(fr()):
            n += len(pcm)
        return n / 22050.0

    await asyncio.gather(*[one(i) for i in range(min(streams, 8))])  # warm
    t0 = time.perf_counter()
    audio = await asyncio.gather(*[one(i) for i in range(streams)])
    return sum(audio) / (time.perf_counter() - t0)
