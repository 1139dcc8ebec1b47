"""Streams run end to end through an engine and the serving codec worker, without the HTTP
server (the device measuring scripts' common load: ``scripts/native_bench.py lowvram`` and
``scripts/lowvram_probe.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from kanitts import tokens as tk
from kanitts.engine.base import GenerationBackend, SamplingParams

#: A short prompt of ~20 text tokens, as the measuring scripts use.
PROMPT = [tk.START_OF_HUMAN, 1, *range(300, 318), tk.END_OF_TEXT, tk.END_OF_HUMAN]


async def stream_audio_seconds(backend: GenerationBackend, worker: Any, count: int, tokens: int,
                               prompt: list[int] | None = None) -> list[float]:
    """Run ``count`` seeded requests of exactly ``tokens`` tokens at once, their frames decoded by
    ``worker`` (a :class:`kanitts.codec.CodecWorker`); returns each stream's audio in seconds
    (samples / ``worker.sample_rate``)."""
    prompt = PROMPT if prompt is None else prompt

    async def one(i: int) -> float:
        parser = tk.FrameParser()
        params = SamplingParams(seed=i, max_tokens=tokens, min_tokens=tokens)

        async def frames() -> AsyncIterator[list[list[int]]]:
            async for ids in backend.stream(prompt, params):
                f = parser.feed(ids)
                if f:
                    yield f

        samples = 0
        async for pcm in worker.decode(frames()):
            samples += len(pcm)
        return samples / worker.sample_rate

    return list(await asyncio.gather(*(one(i) for i in range(count))))
