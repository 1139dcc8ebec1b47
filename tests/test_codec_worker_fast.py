"""CodecWorker on the fast path gives the plain path's audio (CPU: fused eager ops)."""

import numpy as np
import torch

from kanitts.codec import CodecWorker, NanoCodec


async def _decode(codec, fast, streams):
    w = CodecWorker(codec, max_streams=4, first_chunk_frames=1, chunk_frames=4, fast=fast)
    assert w.fast is fast
    w.warmup()

    async def src(frames):
        for i in range(0, len(frames), 3):
            yield frames[i : i + 3]

    import asyncio

    async def one(frames):
        return np.concatenate([c async for c in w.decode(src(frames))])

    out = await asyncio.gather(*[one(f) for f in streams])
    await w.aclose()
    return out


async def test_fast_worker_matches_plain(tiny_codec):
    codec = NanoCodec.from_pretrained(tiny_codec)
    g = torch.Generator().manual_seed(0)
    streams = [[[int(x) for x in torch.randint(0, 4032, (4,), generator=g)] for _ in range(n)] for n in (7, 12, 3)]
    plain = await _decode(codec, False, streams)
    fast = await _decode(codec, True, streams)
    for a, b, frames in zip(plain, fast, streams):
        assert a.size == b.size == len(frames) * 1764
        # float32; the channels-last walk sums conv terms in another order (seen: 1.1e-5)
        assert np.abs(a - b).max() <= 5e-5


async def test_the_worker_makes_a_cuda_stream_only_on_cuda(tiny_codec):
    """Off CUDA there is no side stream (the GPU suite checks the CUDA side)."""
    codec = NanoCodec.from_pretrained(tiny_codec)
    for fast in (True, False):
        w = CodecWorker(codec, max_streams=2, fast=fast)
        assert w.stream is None
        await w.aclose()
