"""Run a stateful PCM filter (resampler, tempo changer) over a stream of chunks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import numpy as np

from kanitts.offload import shared_threads


class ChunkFilter(Protocol):
    """A stateful filter of mono float32 PCM: ``process`` each chunk, then ``flush`` its tail."""

    def process(self, pcm: np.ndarray) -> np.ndarray: ...
    def flush(self) -> np.ndarray: ...


async def filter_stream(pcm: AsyncIterator[np.ndarray], make: "type[ChunkFilter] | None" = None,
                        *args: object, offload_above: int | None = None) -> AsyncIterator[np.ndarray]:
    """``pcm`` through one filter built by ``make(*args)`` when the first chunk is requested
    (a pass-through when ``make`` is None): every chunk processed in order, the filter's tail
    yielded at the end, empty output chunks skipped. Closing this generator closes ``pcm``
    (when it has ``aclose()``); errors from ``make`` are raised from the first chunk.

    ``offload_above``: chunks after the first with more samples than this are processed on
    a worker thread (:data:`kanitts.offload.shared_threads`; one at a time, in order), for a
    filter whose work releases the GIL: the event loop serves other streams meanwhile. The
    first chunk stays inline (time to first audio: no thread hop)."""
    try:
        if make is None:
            async for chunk in pcm:
                yield chunk
            return
        f = make(*args)
        first = True
        async for chunk in pcm:
            if offload_above is not None and not first and chunk.size > offload_above:
                out = await shared_threads.run(f.process, chunk)
            else:
                out = f.process(chunk)
            first = False
            if out.size:
                yield out
        tail = f.flush()
        if tail.size:
            yield tail
    finally:
        with contextlib.suppress(Exception):
            await pcm.aclose()  # type: ignore[attr-defined]
