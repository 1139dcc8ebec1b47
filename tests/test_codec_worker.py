"""CodecWorker: concurrent streams, batching, chunking, back-pressure, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
import torch
from _wait import wait_for

from kanitts.codec import CodecWorker, NanoCodec, write_tiny_nemo

SPF = 1764


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> NanoCodec:
    return NanoCodec.from_pretrained(write_tiny_nemo(tmp_path_factory.mktemp("w"), seed=6))


def frames_of(seed: int, n: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4032, (n, 4), generator=g).tolist()


async def produce(frames: list[list[int]], per_item: int = 1, delay: float = 0.0) -> AsyncIterator[list[list[int]]]:
    for i in range(0, len(frames), per_item):
        if delay:
            await asyncio.sleep(delay)
        yield frames[i : i + per_item]


def one_shot(codec: NanoCodec, frames: list[list[int]]) -> np.ndarray:
    codes = torch.tensor(frames, dtype=torch.long).T[None]
    return codec.decode(codes)[0].clamp(-1, 1).numpy()


async def collect(worker: CodecWorker, source: AsyncIterator[list[list[int]]]) -> list[np.ndarray]:
    return [chunk async for chunk in worker.decode(source)]


async def test_concurrent_streams_match_one_shot(codec: NanoCodec) -> None:
    worker = CodecWorker(codec, max_streams=4, first_chunk_frames=2, chunk_frames=4)
    inputs = [frames_of(s, n) for s, n in ((1, 9), (2, 5), (3, 1))]
    sources = [produce(inputs[0], 3), produce(inputs[1], 1, 0.002), produce(inputs[2])]
    results = await asyncio.gather(*(collect(worker, s) for s in sources))
    for frames, chunks in zip(inputs, results):
        assert all(c.dtype == np.float32 and c.size % SPF == 0 for c in chunks)
        assert chunks[0].size <= 2 * SPF  # small first chunk: audio starts fast
        assert all(c.size <= 4 * SPF for c in chunks)
        audio = np.concatenate(chunks)
        assert np.abs(audio - one_shot(codec, frames)).max() <= 1e-5
    stats = worker.stats
    assert stats.frames_decoded == 15 and stats.active_streams == 0
    assert stats.streams_started == stats.streams_finished == 3
    assert stats.batched_calls >= stats.steps >= 1
    await worker.aclose()


async def test_new_streams_wait_for_a_free_slot(codec: NanoCodec) -> None:
    worker = CodecWorker(codec, max_streams=1, first_chunk_frames=1, chunk_frames=2)
    gate = asyncio.Event()

    async def held() -> AsyncIterator[list[list[int]]]:
        yield frames_of(1, 1)
        await gate.wait()
        yield frames_of(2, 1)

    first = asyncio.create_task(collect(worker, held()))
    await wait_for(lambda: worker.stats.active_streams == 1, "the first stream to take the slot")
    second = asyncio.create_task(collect(worker, produce(frames_of(3, 2))))
    await wait_for(lambda: worker.stats.waiting_streams == 1, "the second stream to wait")
    assert not second.done()
    gate.set()
    a, b = await asyncio.gather(first, second)
    assert sum(c.size for c in a) == 2 * SPF and sum(c.size for c in b) == 2 * SPF
    # The second stream reused slot 0 after a reset: identical to decoding it alone.
    assert np.abs(np.concatenate(b) - one_shot(codec, frames_of(3, 2))).max() <= 1e-5
    await worker.aclose()


async def test_closing_consumer_frees_slot_and_closes_producer(codec: NanoCodec) -> None:
    worker = CodecWorker(codec, max_streams=1, first_chunk_frames=1, chunk_frames=1)
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[list[list[int]]]:
        try:
            i = 0
            while True:
                i += 1
                yield frames_of(i, 1)
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    gen = worker.decode(endless())
    first = await gen.__anext__()
    assert first.size == SPF
    await gen.aclose()
    await asyncio.wait_for(closed.wait(), 5)
    # The slot is free again: a new stream runs to completion.
    chunks = await asyncio.wait_for(collect(worker, produce(frames_of(9, 2))), 30)
    assert np.abs(np.concatenate(chunks) - one_shot(codec, frames_of(9, 2))).max() <= 1e-5
    assert worker.stats.active_streams == 0
    await worker.aclose()


async def test_cancelled_task_frees_slot(codec: NanoCodec) -> None:
    worker = CodecWorker(codec, max_streams=1)

    async def stalled() -> AsyncIterator[list[list[int]]]:
        yield frames_of(1, 1)
        await asyncio.Event().wait()

    task = asyncio.create_task(collect(worker, stalled()))
    await wait_for(lambda: worker.stats.active_streams == 1, "the stream to take the slot")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    chunks = await asyncio.wait_for(collect(worker, produce(frames_of(2, 1))), 30)
    assert sum(c.size for c in chunks) == SPF
    await worker.aclose()


async def test_errors_reach_the_consumer(codec: NanoCodec) -> None:
    worker = CodecWorker(codec, max_streams=2, first_chunk_frames=2)

    async def failing() -> AsyncIterator[list[list[int]]]:
        yield frames_of(1, 2)
        raise RuntimeError("engine died")

    got: list[np.ndarray] = []
    with pytest.raises(RuntimeError, match="engine died"):
        async for chunk in worker.decode(failing()):
            got.append(chunk)
    assert sum(c.size for c in got) == 2 * SPF  # audio before the failure was flushed
    with pytest.raises(ValueError, match="malformed frame"):
        await collect(worker, produce([[1, 2, 3, 4096]]))
    with pytest.raises(ValueError, match="malformed frame"):
        await collect(worker, produce([[1, 2, 3]]))
    assert worker.stats.active_streams == 0
    worker.close()
    with pytest.raises(RuntimeError):
        await collect(worker, produce(frames_of(1, 1)))


async def test_event_loop_stays_responsive(codec: NanoCodec) -> None:
    worker = CodecWorker(codec, max_streams=2, first_chunk_frames=4, chunk_frames=8)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    t = asyncio.create_task(ticker())
    await collect(worker, produce(frames_of(5, 12), 12))
    t.cancel()
    assert ticks >= 3  # decoding ran off the loop thread
    await worker.aclose()
