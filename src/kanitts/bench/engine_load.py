"""Engine load: one fixed-length stream through a generation backend (and the codec, or
the seed's windowed decoding, when given), and the median of a few single streams."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

from kanitts.bench.stats import TOKENS_PER_SECOND, StreamResult


def bench_prompt(i: int = 0) -> list[int]:
    """Prompt ids of stream ``i`` (the training layout, random text ids)."""
    from kanitts.engine.vllm_backend import warmup_prompt

    return warmup_prompt(1000 + i)


def frames_lenient(parser: Any, ids: list[int]) -> list[list[int]]:
    """Frames for the codec from a :class:`~kanitts.tokens.FrameParser`. Unconstrained
    sampling (the seed) can emit invalid tokens on random weights; like the seed, such
    streams are decoded code by code modulo 4032 (the remainder is kept on ``parser``)."""
    from kanitts.tokens import AUDIO_TOKEN_END, AUDIO_TOKEN_START, CODEBOOK_SIZE, MalformedStreamError

    try:
        return parser.feed(ids)
    except MalformedStreamError:
        buf = getattr(parser, "_lenient", [])
        buf += [(t - AUDIO_TOKEN_START) % CODEBOOK_SIZE for t in ids if AUDIO_TOKEN_START <= t < AUDIO_TOKEN_END]
        out = [buf[i:i + 4] for i in range(0, len(buf) - len(buf) % 4, 4)]
        parser._lenient = buf[len(out) * 4:]
        return out


async def engine_stream(backend: Any, tokens: int, i: int, codec: Any = None, *, restrict: str | None = None,
                        seed_windows: Any = None) -> StreamResult:
    """One stream of exactly ``tokens`` tokens (seed ``i``) through ``backend``; with
    ``codec`` (a CodecWorker) TTFA is its first PCM chunk, with ``seed_windows`` (a
    :class:`~kanitts.bench.seed.SeedWindows` or a factory of one) the seed's schedule
    decodes. ``restrict`` picks the sampling path per request
    (:class:`~kanitts.bench.sampling_paths.SamplingPathBackend`). Errors are recorded."""
    from kanitts.engine.base import SamplingParams
    from kanitts.tokens import FrameParser

    params = SamplingParams(max_tokens=tokens, min_tokens=tokens, seed=i)
    r = StreamResult()
    t0 = time.perf_counter()
    parser = FrameParser()
    try:
        kw: dict[str, Any] = {"restrict": restrict} if restrict else {}
        toks = backend.stream(bench_prompt(i), params, **kw)
        if codec is None and seed_windows is None:
            check = FrameParser() if (restrict or getattr(backend, "restrict", "off")) != "off" else None
            async for ids in toks:
                if r.ttft_s is None:
                    r.ttft_s = time.perf_counter() - t0
                r.tokens += len(ids)
                if check is not None:
                    try:
                        check.feed(ids)
                    except Exception as e:  # noqa: BLE001 - a restricted stream must parse
                        r.invalid = repr(e)[:200]
                        check = None
            r.audio_s = r.tokens / TOKENS_PER_SECOND
        elif seed_windows is not None:
            if callable(seed_windows):
                seed_windows = seed_windows()
            async for ids in toks:
                if r.ttft_s is None:
                    r.ttft_s = time.perf_counter() - t0
                r.tokens += len(ids)
                for _ in seed_windows.feed(frames_lenient(parser, ids)):
                    if r.ttfa_s is None:
                        r.ttfa_s = time.perf_counter() - t0
            for _ in seed_windows.flush():
                if r.ttfa_s is None:
                    r.ttfa_s = time.perf_counter() - t0
            r.audio_s = seed_windows.audio_s
        else:
            async def frames() -> AsyncIterator[list[list[int]]]:
                async for ids in toks:
                    if r.ttft_s is None:
                        r.ttft_s = time.perf_counter() - t0
                    r.tokens += len(ids)
                    f = frames_lenient(parser, ids)
                    if f:
                        yield f

            samples = 0
            async for pcm in codec.decode(frames()):
                if len(pcm):
                    if r.ttfa_s is None:
                        r.ttfa_s = time.perf_counter() - t0
                    samples += len(pcm)
            r.audio_s = samples / 22050.0
    except Exception as e:  # noqa: BLE001
        r.error = repr(e)[:300]
    r.wall_s = time.perf_counter() - t0
    return r


async def single_stream_rtf(backend: Any, tokens: int, reps: int, **kw: Any) -> dict[str, Any]:
    """``reps`` single streams one after another (``kw`` as :func:`engine_stream`): median
    RTF, tokens/s, ms per token, TTFT (and TTFA / RTF with the codec); ``{"error"}`` on the
    first failed stream."""
    runs = []
    for i in range(reps):
        r = await engine_stream(backend, tokens, i, **kw)
        if r.error:
            return {"error": r.error}
        runs.append(r)
    rtfs = [r.wall_s / (r.tokens / TOKENS_PER_SECOND) for r in runs]
    out = {"rtf": round(statistics.median(rtfs), 4), "rtf_runs": [round(x, 4) for x in rtfs],
           "tok_s": round(tokens / statistics.median([r.wall_s for r in runs]), 1),
           "ms_per_token": round(1000 * statistics.median([r.wall_s for r in runs]) / tokens, 3)}
    if any(r.invalid for r in runs):
        out["invalid"] = next(r.invalid for r in runs if r.invalid)
    if any(r.ttfa_s for r in runs):
        out["ttfa_ms"] = round(statistics.median([r.ttfa_s * 1000 for r in runs if r.ttfa_s]), 1)
        out["rtf_with_codec"] = round(statistics.median([r.rtf for r in runs if r.rtf]), 4)
    out["ttft_ms"] = round(statistics.median([r.ttft_s * 1000 for r in runs if r.ttft_s]), 1)
    return out
