"""HTTP load: streaming POST /v1/audio/speech clients (raw PCM), one or many client processes.

Time to first audio (TTFA) is the first non-empty body chunk a client receives; a stream's
audio seconds are its bytes at the rate the server says it sends (``X-Sample-Rate``:
24 kHz for pcm by default, not the model's 22.05 kHz).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing as mp
import os
import time
from typing import Any

from kanitts.bench.stats import PCM_BYTES_PER_SECOND, LoadResult, StreamResult, run_load

#: Short: the seed baseline's max_model_len is 512 = prompt + 500 generated tokens.
BENCH_TEXT = "Hello, this is a ten second benchmark."

#: Streams per client process: one Python (httpx) event loop opening 256 streams at once
#: adds ~250 ms to its own measured TTFA (H100 run 5: client 608 ms vs the server's 354 ms
#: log), which is the client's cost, not the server's; real listeners are separate clients.
STREAMS_PER_CLIENT_PROCESS = 32


async def http_stream(client: Any, base_url: str, tokens: int, i: int = 0, voice: str = "andrew",
                      text: str = BENCH_TEXT) -> StreamResult:
    """One streaming POST /v1/audio/speech of exactly ``tokens`` tokens (raw PCM) with an
    ``httpx.AsyncClient``; errors are recorded in the result, not raised."""
    body = {"model": "tts-1", "input": f"{text} ({i})", "voice": voice, "response_format": "pcm",
            "stream_format": "audio", "max_tokens": tokens, "min_tokens": tokens}
    r = StreamResult()
    t0 = time.perf_counter()
    nbytes = 0
    bytes_per_s = PCM_BYTES_PER_SECOND
    try:
        async with client.stream("POST", base_url.rstrip("/") + "/v1/audio/speech", json=body) as resp:
            if resp.status_code != 200:
                r.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return r
            # the server's pcm rate (24 kHz by default, OpenAI's), not the model's 22.05 kHz
            bytes_per_s = 2 * int(resp.headers.get("x-sample-rate") or PCM_BYTES_PER_SECOND // 2)
            async for chunk in resp.aiter_bytes():
                if chunk:
                    if r.ttfa_s is None:
                        r.ttfa_s = time.perf_counter() - t0
                    nbytes += len(chunk)
    except Exception as e:  # noqa: BLE001
        r.error = repr(e)[:300]
    r.wall_s = time.perf_counter() - t0
    r.audio_s = nbytes / bytes_per_s
    return r


async def http_stream_once(base: str, tokens: int, i: int) -> StreamResult:
    """One stream on a client of its own."""
    import httpx

    async with httpx.AsyncClient(timeout=600.0) as c:
        return await http_stream(c, base, tokens, i)


def client_processes(concurrency: int, requested: int | None = None) -> int:
    """How many client processes drive ``concurrency`` streams (``requested`` wins)."""
    if requested is not None:
        return max(1, min(requested, concurrency))
    cap = max(1, min(16, (os.cpu_count() or 2) // 2))
    return max(1, min(cap, -(-concurrency // STREAMS_PER_CLIENT_PROCESS)))


def _http_load_part(base_url: str, first: int, n: int, tokens: int, start_at: float) -> tuple[list[StreamResult], float]:
    """One client process's share: ``n`` streams starting at wall-clock ``start_at``."""
    time.sleep(max(0.0, start_at - time.time()))
    lr = asyncio.run(http_load(base_url, n, tokens, processes=1, first=first))
    return lr.streams, time.time()


def _warm_client_process() -> bool:
    import httpx  # noqa: F401 - import cost paid before the timed start

    return True


async def http_load_processes(base_url: str, concurrency: int, tokens: int, processes: int) -> LoadResult:
    """``concurrency`` streams from ``processes`` client processes started together."""
    shares = [concurrency // processes + (1 if k < concurrency % processes else 0) for k in range(processes)]
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:
        await asyncio.gather(*[loop.run_in_executor(pool, _warm_client_process) for _ in range(processes)])
        start_at = time.time() + 0.3
        firsts = [sum(shares[:k]) for k in range(processes)]
        parts = await asyncio.gather(*[
            loop.run_in_executor(pool, _http_load_part, base_url, f, n, tokens, start_at)
            for f, n in zip(firsts, shares) if n
        ])
    out = LoadResult(concurrency, wall_s=max(end for _, end in parts) - start_at)
    for streams, _ in parts:
        out.streams.extend(streams)
    return out


async def http_load(base_url: str, concurrency: int, tokens: int, *, client: Any = None,
                    processes: int | None = None, first: int = 0) -> LoadResult:
    """``concurrency`` simultaneous streams (request texts numbered from ``first``); above 32
    they come from several client processes (:func:`client_processes`) unless a ``client``
    is given."""
    import httpx

    if client is None:
        procs = client_processes(concurrency, processes)
        if procs > 1:
            return await http_load_processes(base_url, concurrency, tokens, procs)
    own = client is None
    if own:
        limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
        client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=30.0), limits=limits)
    try:
        return await run_load(lambda i: http_stream(client, base_url, tokens, first + i), concurrency)
    finally:
        if own:
            await client.aclose()
